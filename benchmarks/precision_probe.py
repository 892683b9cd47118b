"""Benchmark: what reduced precision (OpenVINO bf16, ONNX Runtime int8) costs a linear probe.

    python benchmarks/precision_probe.py [DATA] [--per-class 500] [--json]

Features of the same Intel images (a seeded stratified subset of seg_train, all of seg_test)
from each backend/precision of `core.vision.inference`, then a logistic-regression probe per
numerics: C chosen on a stratified 20% validation split of the training subset, refitted on
the whole subset, accuracy reported on seg_test (which chooses nothing). Prints the test
accuracy of each against fp32 (goal: at most 0.5 points lower) and how close the features are.
Features go to the feature cache ($SCENESEEK_CACHE), so a second run only fits the probes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import default_data  # noqa: E402
from core.vision.backbones import create_backbone  # noqa: E402
from core.vision.features import cached_features  # noqa: E402

VARIANTS = (("onnxruntime", "fp32"), ("openvino", "bf16"), ("onnxruntime", "int8"))
GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
GOAL_POINTS = 0.5


def subset(root: Path, per_class: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for k, c in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        files = sorted(str(f) for f in c.glob("*.jpg"))
        pick = rng.permutation(len(files))[:per_class] if per_class else range(len(files))
        paths += [files[i] for i in sorted(pick)]
        labels += [k] * len(pick)
    return paths, labels


def probe(xtr, ytr, xte, yte, seed: int = 0) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(c, x, y):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y)

    a, v, ya, yv = train_test_split(xtr, ytr, test_size=0.2, stratify=ytr, random_state=seed)
    val = {c: float(fit(c, a, ya).score(v, yv)) for c in GRID}
    best = max(GRID, key=lambda c: (val[c], -c))  # ties: the stronger regularisation
    return {
        "C": best,
        "val_accuracy": val[best],
        "val_by_C": val,
        "test_accuracy": float(fit(best, xtr, ytr).score(xte, yte)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=default_data())
    ap.add_argument("--per-class", type=int, default=500, help="training photos per class (0: all)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from core.config import resolve_cache_dir

    cache = resolve_cache_dir()
    bb = create_backbone("efficientnet_lite0")
    tr, ytr = subset(args.data / "seg_train", args.per_class)
    te, yte = subset(args.data / "seg_test", 0)
    dev = torch.device("cpu")
    from core.vision.inference import load_inference

    calib = [tr[i] for i in sorted(np.random.default_rng(0).permutation(len(tr))[:200])]
    feats, numerics = {}, {}
    for backend, prec in VARIANTS:
        name = f"{backend}-{prec}"
        got = load_inference(
            bb, args.image_size, dev, backend, prec, cache_dir=cache, calibration=calib
        )
        numerics[name] = got.numerics()
        if got.backend != backend:
            print(f"{name}: not available ({got.reason})", file=sys.stderr)
            continue
        feats[name] = [
            cached_features(
                bb,
                p,
                args.image_size,
                cache,
                dev,
                backend=backend,
                precision=prec,
                calibration=calib,
            )[0]
            for p in (tr, te)
        ]
    ref = feats.get("onnxruntime-fp32")
    report: dict = {
        "train_images": len(tr),
        "test_images": len(te),
        "goal_points": GOAL_POINTS,
        "variants": {},
    }
    for name, (ftr, fte) in feats.items():
        row = probe(ftr, ytr, fte, yte)
        row["numerics"] = numerics[name]
        if ref is not None:
            cos = np.sum(ref[1] * fte, 1) / (
                np.linalg.norm(ref[1], axis=1) * np.linalg.norm(fte, axis=1)
            )
            row["feature_cosine_mean"], row["feature_cosine_min"] = (
                float(cos.mean()),
                float(cos.min()),
            )
        report["variants"][name] = row
    base = report["variants"].get("onnxruntime-fp32", {}).get("test_accuracy")
    for row in report["variants"].values():
        if base is not None:
            row["points_vs_fp32"] = 100 * (row["test_accuracy"] - base)
            row["meets_goal"] = row["points_vs_fp32"] >= -GOAL_POINTS
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"linear probe, {len(tr)} train / {len(te)} test images, C chosen on validation")
    for name, row in report["variants"].items():
        print(
            f"  {name:18s} test {100 * row['test_accuracy']:.2f}%  (C={row['C']}, val "
            f"{100 * row['val_accuracy']:.2f}%)  vs fp32 {row.get('points_vs_fp32', 0):+.2f} pts  "
            f"feature cosine mean {row.get('feature_cosine_mean', 1):.4f}"
        )


if __name__ == "__main__":
    main()
