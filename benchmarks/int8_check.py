"""Benchmark: does ONNX Runtime int8 (built-in calibration) keep accuracy on this CPU?

    python benchmarks/int8_check.py [DATA] [--per-class 500] [--image-size 224] [--write]

The check behind precision "auto" choosing int8 (core.vision.quantize.int8_verdict). A seeded
stratified subset of seg_train (`--per-class` photos per class) is split 80/20 (stratified,
seed 0); the 20% is the validation set, and nothing here reads seg_test. Features of every
photo in fp32 and in int8 (ONNX Runtime, the built-in calibration), then:
  feature cosine:  int8 against fp32 per validation photo: mean (the criterion, >= 0.99),
                   1st percentile and min (reported)
  linear probe:    logistic regression, C chosen on a stratified 20% split of the 80%, fitted
                   on the 80%, accuracy on validation, per precision; the criterion is
                   int8 at most 0.2 points under fp32 (core.vision.quantize.judge)
--write records the result for this backbone and image size in core/resources/int8_check.json
(what "auto" reads). Features go to the encoding store ($SCENESEEK_CACHE).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import cpu_name, default_data  # noqa: E402
from benchmarks.precision_probe import probe, subset  # noqa: E402
from core.config import resolve_cache_dir  # noqa: E402
from core.io import atomic_write_json  # noqa: E402
from core.resources import resource_path  # noqa: E402
from core.vision.backbones import create_backbone  # noqa: E402
from core.vision.features import cached_features  # noqa: E402
from core.vision.quantize import (  # noqa: E402
    CHECK_FILE,
    check_key,
    cpu_has_vnni,
    int8_ident,
    judge,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=default_data())
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--write", action="store_true", help="record in core/resources")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from sklearn.model_selection import train_test_split

    cache, dev = resolve_cache_dir(), torch.device("cpu")
    bb = create_backbone(args.backbone)
    paths, labels = subset(args.data / "seg_train", args.per_class)
    y = np.asarray(labels)
    fit, val = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    feats = {
        prec: cached_features(
            bb, paths, args.image_size, cache, dev, backend="onnxruntime", precision=prec
        )[0]
        for prec in ("fp32", "int8")
    }
    a, b = feats["fp32"][val], feats["int8"][val]
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    acc = {
        prec: probe(f[fit], y[fit], f[val], y[val])["test_accuracy"]  # "test" = validation here
        for prec, f in feats.items()
    }
    row = {
        "ident": {k: v for k, v in int8_ident(None).items() if k != "reduce_range"},
        "validation_images": len(val),
        "cosine_mean": float(cos.mean()),
        "cosine_p01": float(np.quantile(cos, 0.01)),
        "cosine_min": float(cos.min()),
        "probe_val_accuracy_fp32": acc["fp32"],
        "probe_val_accuracy_int8": acc["int8"],
        "points": 100 * (acc["int8"] - acc["fp32"]),
        "cpu": cpu_name(),
        "vnni": cpu_has_vnni(),
        "load_average_1min": os.getloadavg()[0],
    }
    row["passes"] = judge(row)
    key = check_key(args.backbone, args.image_size)
    print(json.dumps({key: row}, indent=2))
    if args.write:
        path = resource_path(CHECK_FILE)
        table = json.loads(path.read_text("utf-8")) if path.is_file() else {}
        table[key] = row
        atomic_write_json(path, table)


if __name__ == "__main__":
    main()
