"""Benchmark: feature extraction of this pipeline against the study's way, same backbone.

    python benchmarks/features.py [DATA] [--n 300] [--image-size 224] [--backbone NAME]

DATA holds seg_train/<class>/ images (Intel layout); default $SCENESEEK_SHARED_DATA/intel,
else ../shared/data/intel beside the repo. Both ways run in this one process on the same
images and the same preprocessing:
  study:    one image at a time: PIL open + transforms + model(x[None]) in float32 (no_grad)
  pipeline: DataLoader with workers, batches, channels-last, inference_mode, and bf16
            autocast on CPUs with bf16 kernels (fp16 on CUDA)
It reports images/s of each, the speed-up (goal >= 5x), and how closely the features agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.vision.backbones import create_backbone  # noqa: E402
from core.vision.features import cached_features, default_workers, pick_device  # noqa: E402

GOAL = 5.0


def default_data() -> Path:
    env = os.environ.get("SCENESEEK_SHARED_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "intel"


def pick_images(root: Path, n: int) -> list[Path]:
    """n images spread evenly over the classes of seg_train (sorted, deterministic)."""
    classes = sorted(p for p in (root / "seg_train").iterdir() if p.is_dir())
    per = -(-n // len(classes))
    out: list[Path] = []
    for c in classes:
        files = sorted(c.glob("*.jpg"))
        out += files[:: max(1, len(files) // per)][:per]
    return out[:n]


def study_way(backbone, paths: list[Path], size: int, device: torch.device) -> np.ndarray:
    """The study's loop: one image at a time, float32, no batching."""
    tf = backbone.preprocess(False, size)
    model = backbone.model.eval().to(device, memory_format=torch.contiguous_format)
    feats = []
    with torch.no_grad():
        for p in paths:
            x = tf(Image.open(p).convert("RGB")).unsqueeze(0).to(device)
            feats.append(model(x).cpu().numpy()[0])
    return np.stack(feats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=default_data())
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--weights", default="imagenet",
                    help="imagenet, a file, or none (random weights: speed only)")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    device = pick_device()
    backbone = create_backbone(args.backbone, None if args.weights == "none" else args.weights)
    paths = pick_images(args.data, args.n)
    warm = paths[:8]  # first calls pay one-off costs (allocations, kernel selection)
    study_way(backbone, warm, args.image_size, device)
    cached_features(backbone, warm, args.image_size, None, device, 8, 0)

    t0 = time.perf_counter()
    slow = study_way(backbone, paths, args.image_size, device)
    t_study = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast, _ = cached_features(backbone, paths, args.image_size, None, device, args.batch_size,
                              args.workers)  # fmt: skip
    t_pipe = time.perf_counter() - t0

    cos = np.sum(slow * fast, 1) / (np.linalg.norm(slow, axis=1) * np.linalg.norm(fast, axis=1))
    report = {
        "backbone": args.backbone,
        "weights": backbone.source,
        "device": str(device),
        "images": len(paths),
        "image_size": args.image_size,
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        "study_images_per_s": len(paths) / t_study,
        "pipeline_images_per_s": len(paths) / t_pipe,
        "speedup": t_study / t_pipe,
        "goal_speedup": GOAL,
        "feature_cosine_min": float(cos.min()),
        "feature_cosine_mean": float(cos.mean()),
    }
    report["pass"] = report["speedup"] >= GOAL
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.backbone} on {device}, {len(paths)} images at {args.image_size} px, "
          f"{report['threads']} threads, {args.workers} workers")  # fmt: skip
    print(f"  study (one at a time, fp32): {report['study_images_per_s']:7.1f} images/s")
    print(f"  pipeline (batched, bf16):    {report['pipeline_images_per_s']:7.1f} images/s")
    print(f"  speed-up {report['speedup']:.1f}x (goal >= {GOAL:.0f}x): "
          f"{'PASS' if report['pass'] else 'FAIL'}")  # fmt: skip
    print(f"  feature agreement: cosine mean {report['feature_cosine_mean']:.4f}, "
          f"min {report['feature_cosine_min']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
