"""Benchmark: feature extraction of this pipeline against the study's way, same backbone.

    python benchmarks/features.py [DATA] [--n 300] [--image-size 224] [--backbone NAME] [--json]
                                  [--backend auto] [--precision auto] [--sweep] [--routes]

DATA holds seg_train/<class>/ images (Intel layout); default $SCENESEEK_SHARED_DATA/intel,
else ../shared/data/intel beside the repo. Everything runs in this one process on the same
images, paired (each measurement repeated in alternation, best kept):
  study:      one image at a time: PIL open + torchvision transforms + model(x[None]) in
              PyTorch eager float32 (no_grad), the study's loop
  ours:       core.vision.features.cached_features with its defaults (no cache): decoding in
              threads sized from the cores (core.vision.features.plan_loader), the fast eval
              transform, the backend core.vision.inference picks (ONNX Runtime fp32 on CPUs,
              PyTorch on CUDA); share_of_model_only = ours / model only (goal >= 0.85)
  model only: that backend on already-decoded batches of the chosen size (in the same
              alternation as study and ours)
  stages:     file read, JPEG decode, resize + crop, normalise, per image on one thread
  FLOP bound: the model's FLOPs per image (torch's FlopCounterMode: 2 per multiply-add) and
              the machine's peak GEMM rate measured now with torch.matmul (fp32, and bf16 where
              the backend computes in bf16) on the same threads; bound = peak / FLOPs.
--sweep times the model at several batch sizes; --routes times every backend/precision.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import cpu_name, default_data, pick_images  # noqa: E402
from core.vision.backbones import create_backbone  # noqa: E402
from core.vision.device import inference_threads, pick_device  # noqa: E402
from core.vision.features import CPU_BATCH, cached_features, plan_loader  # noqa: E402
from core.vision.inference import load_inference  # noqa: E402

GOAL = 5.0
GOAL_BOUND = 0.4
GOAL_SHARE = 0.85  # end to end against the model alone


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


def best_rate(fn: Callable[[], object], items: int, repeats: int = 3) -> float:
    """Items per second of the fastest of `repeats` calls (a busy machine only slows calls)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def paired(fns: dict[str, Callable[[], object]], items: int, rounds: int = 3) -> dict[str, float]:
    """Best rate of each function, measured in alternation so load changes hit all alike."""
    out = {k: 0.0 for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            out[k] = max(out[k], best_rate(fn, items, 1))
    return out


def stage_rates(paths: list[Path], transform) -> dict[str, float]:
    """Per-image stages on this thread, images/s: read, decode, resize+crop, normalise, and
    torchvision's transform for comparison."""
    blobs = [p.read_bytes() for p in paths]
    ims = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
    px = [transform.pixels(im) for im in ims]
    tv = create_backbone("efficientnet_lite0", None).preprocess(False, transform.size)
    n = len(paths)

    def normalize() -> None:
        scale = np.float32(1 / (255 * transform.std[0]))
        for u in px:
            out = np.empty((3, *u.shape[:2]), np.float32)
            np.multiply(u.transpose(2, 0, 1), scale, out=out, casting="unsafe")

    return {
        "read": best_rate(lambda: [p.read_bytes() for p in paths], n),
        "decode": best_rate(lambda: [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs], n),
        "resize_crop": best_rate(lambda: [transform.pixels(im) for im in ims], n),
        "normalise": best_rate(normalize, n),  # the JSON key stays as published
        "fast_transform_total": best_rate(lambda: [transform(im) for im in ims], n),
        "torchvision_transform_total": best_rate(lambda: [tv(im) for im in ims], n),
    }


def model_flops(backbone, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        backbone.model.eval()(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def peak_gemm(dtype: torch.dtype, n: int = 2048) -> float:
    """Peak FLOP/s of an n x n matrix product on torch's threads, best of 5."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    return max(best_rate(lambda: a @ b, 2 * n**3, 1) for _ in range(5))


def _loader_text(loading, inference, paths, batch, workers, device) -> str:
    """What the pipeline's loader does, read off the loader it builds
    (core.vision.features.inference_loader), not re-decided here."""
    from core.vision.features import inference_loader

    loader = inference_loader(inference, paths, batch, workers, device)
    if getattr(loader, "infer", None) is not None:
        return (
            f"{loader.threads} threads each decoding and running a batch "
            f"(one-thread ONNX Runtime session) on {loading.cores} cores"
        )
    return loading.describe()


def model_only(inference, x: np.ndarray, batch: int) -> Callable[[], object]:
    def run() -> None:
        for i in range(0, len(x), batch):
            inference.run(x[i : i + batch])

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=default_data())
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the pipeline's own")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decode worker processes (0: inline); default: the pipeline's own threads",
    )
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet, a file, or none (random weights: speed only)",
    )
    ap.add_argument("--sweep", action="store_true", help="model-only rate per batch size")
    ap.add_argument("--routes", action="store_true", help="model-only rate of every backend")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for every backend (default: torch's); 1 with --workers 0 "
        "compares one core against one core, robust on a busy machine",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # the inference backends follow torch's setting

    device = pick_device()
    size = args.image_size
    backbone = create_backbone(args.backbone, None if args.weights == "none" else args.weights)
    inf = load_inference(backbone, size, device, args.backend, args.precision)
    batch = args.batch_size or (CPU_BATCH if inf.backend != "torch" else 64)
    paths = pick_images(args.data, args.n)

    loading = plan_loader(args.workers, device=device)  # what make_loader will do

    def ours() -> np.ndarray:
        return cached_features(
            backbone,
            paths,
            size,
            None,
            device,
            batch,
            args.workers,
            backend=args.backend,
            precision=args.precision,
        )[0]

    # Warm-up: one-off costs (allocations, kernel selection, worker start) are not throughput.
    study_way(backbone, paths[:8], size, device)
    ours()
    feats: dict[str, np.ndarray] = {}
    x = np.stack([inf.transform(Image.open(p).convert("RGB")).numpy() for p in paths])
    # All three in one alternation: share_of_model_only and the ratio compare like with like.
    rates = paired(
        {
            "study": lambda: feats.__setitem__("study", study_way(backbone, paths, size, device)),
            "ours": lambda: feats.__setitem__("ours", ours()),
            "model": model_only(inf, x, batch),
        },
        len(paths),
        rounds=2,
    )
    model_rate = rates["model"]

    flops = model_flops(backbone, size)
    peaks = {"fp32": peak_gemm(torch.float32)}
    if inf.precision == "bf16" or (inf.backend == "torch" and inf.precision == "amp"):
        peaks["bf16"] = peak_gemm(torch.bfloat16)
    compute = "bf16" if "bf16" in peaks else "fp32"
    bound = peaks[compute] / flops
    slow, fast = feats["study"], feats["ours"]
    cos = np.sum(slow * fast, 1) / (np.linalg.norm(slow, axis=1) * np.linalg.norm(fast, axis=1))
    report = {
        "ours_img_s": rates["ours"],
        "study_img_s": rates["study"],
        "ratio": rates["ours"] / rates["study"],
        "model_only_img_s": model_rate,
        "share_of_model_only": rates["ours"] / model_rate,
        "flops_bound_img_s": bound,
        "backend": f"{inf.backend} {inf.precision}",
        "backend_reason": inf.reason,
        "model_share_of_bound": model_rate / bound,
        "model_gflops_per_image": flops / 1e9,
        "peak_gemm_gflop_s": {k: v / 1e9 for k, v in peaks.items()},
        "bound_precision": compute,
        "fp32_flops_bound_img_s": peaks["fp32"] / flops,
        "model_share_of_fp32_bound": model_rate * flops / peaks["fp32"],
        "backbone": args.backbone,
        "device": str(device),
        "cpu": cpu_name(),
        "images": len(paths),
        "image_size": size,
        "batch_size": batch,
        "threads": inference_threads(),
        "workers": loading.workers,
        "loader": _loader_text(loading, inf, paths, batch, args.workers, device),
        "load_average_1min": os.getloadavg()[0],
        "feature_cosine_min": float(cos.min()),
        "feature_cosine_mean": float(cos.mean()),
        "goal_ratio": GOAL,
        "goal_share_of_bound": GOAL_BOUND,
        "goal_share_of_model_only": GOAL_SHARE,
        "stages_img_s_one_thread": stage_rates(paths[:100], inf.transform)
        if hasattr(inf.transform, "pixels")
        else None,
    }
    if args.sweep:
        report["model_only_by_batch"] = {
            b: paired({"m": model_only(inf, x[:64], b)}, 64)["m"] for b in (1, 4, 8, 16, 32, 64)
        }
    if args.routes:
        report["routes_model_only_img_s"] = _routes(backbone, size, device, x, batch)
    report["pass"] = (
        report["ratio"] >= GOAL
        and report["share_of_model_only"] >= GOAL_SHARE
        and report["model_share_of_bound"] >= GOAL_BOUND
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    _print(report)


def _routes(backbone, size: int, device, x: np.ndarray, batch: int) -> dict[str, float]:
    """Model-only rate of each backend/precision available here, paired."""
    fns = {}
    for backend, prec in (
        ("torch", "fp32"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("openvino", "int8"),
    ):
        calib = None
        if prec == "int8":
            calib = [str(p) for p in pick_images(default_data(), 200)]
        inf = load_inference(backbone, size, device, backend, prec, amp=False, calibration=calib)
        if inf.backend == backend and (inf.precision == prec or backend == "torch"):
            fns[f"{backend}-{prec}"] = model_only(inf, x, batch)
    return paired(fns, len(x))


def _print(r: dict) -> None:
    print(
        f"{r['backbone']} on {r['device']} ({r['cpu']}), {r['images']} images at "
        f"{r['image_size']} px, {r['threads']} threads, {r['loader']}, batch "
        f"{r['batch_size']}, load average {r['load_average_1min']:.1f}"
    )
    print(f"  backend: {r['backend']} ({r['backend_reason']})")
    print(f"  study (one at a time, PyTorch fp32): {r['study_img_s']:7.1f} images/s")
    print(f"  ours (end to end):                   {r['ours_img_s']:7.1f} images/s")
    print(f"  speed-up {r['ratio']:.1f}x (goal >= {GOAL:.0f}x)")
    print(
        f"  end to end = {100 * r['share_of_model_only']:.0f}% of the model alone "
        f"(goal >= {100 * GOAL_SHARE:.0f}%)"
    )
    print(
        f"  model only: {r['model_only_img_s']:.1f} images/s = {100 * r['model_share_of_bound']:.0f}% "
        f"of the {r['bound_precision']} FLOP bound {r['flops_bound_img_s']:.0f} images/s "
        f"({r['model_gflops_per_image']:.3f} GFLOP/image, peak GEMM "
        f"{r['peak_gemm_gflop_s'][r['bound_precision']]:.0f} GFLOP/s); "
        f"{100 * r['model_share_of_fp32_bound']:.0f}% of the fp32 bound"
    )
    print(
        f"  feature agreement with the study: cosine mean {r['feature_cosine_mean']:.4f}, "
        f"min {r['feature_cosine_min']:.4f}"
    )
    if r["stages_img_s_one_thread"]:
        print(
            "  stages, one thread (images/s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in r["stages_img_s_one_thread"].items())
        )
    for key in ("model_only_by_batch", "routes_model_only_img_s"):
        if key in r:
            print(f"  {key}: " + ", ".join(f"{k}: {v:.0f}" for k, v in r[key].items()))


if __name__ == "__main__":
    main()
