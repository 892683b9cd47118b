"""Benchmark: indexing throughput of the local engine and of the Ray engine, same images, same
run, and what it would take to index 10 million images in an hour.

    python benchmarks/index_engines.py [DATA] [--n 600] [--image-size 224] [--batch-size 32]
        [--ray-workers N] [--ray-cpus N] [--node-cores 16] [--json]

DATA holds seg_train/<class>/ images (Intel layout); default $SCENESEEK_SHARED_DATA/intel,
else ../shared/data/intel beside the repo. n images spread over the classes are copied to a
temporary folder and indexed twice from scratch with the same loaded encoder:
  local: core.search.store.build_index, engine="local" (DataLoader workers + this process)
  ray:   the same call with engine="ray" on a Ray instance started here with --ray-cpus CPUs
         (started before the clock: a cluster is already running when a job is submitted)
Both runs include hashing, decoding, encoding and the LanceDB commits. It prints images/s of
each, the Ray overhead ratio (local / ray), checks both indexes hold the same vectors, then
estimates a cluster for 10 million images in an hour from the measured per-core rates and the
model's measured cost (forward FLOPs per image); --node-cores is the assumed node size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import copy_images, default_data, pick_images  # noqa: E402
from core.search.store import build_index, load_rows  # noqa: E402

TARGET_IMAGES, TARGET_SECONDS = 10_000_000, 3600


def model_gflops(encoder) -> float:
    """Forward FLOPs of one image through the backbone (and ImageNet head), in GFLOPs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, encoder.image_size, encoder.image_size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        feats = encoder.backbone.model(x)
        encoder.backbone.model.imagenet_head(feats)
    return counter.get_total_flops() / 1e9


def decode_rate(encoder, paths: list[str]) -> float:
    """Images/s of decoding + preprocessing on one core (the CPU floor even with GPUs)."""
    import torch

    from core.search.embed import decode

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tf = encoder.transform()
    t0 = time.perf_counter()
    for p in paths:
        decode(p, tf, encoder.image_size)
    torch.set_num_threads(threads)
    return len(paths) / (time.perf_counter() - t0)


def vectors(index: Path) -> np.ndarray:
    t = load_rows(index, ["path", "vector"]).to_pydict()
    order = np.argsort(t["path"])
    return np.array(t["vector"])[order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=default_data())
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--local-workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--ray-workers", type=int, default=None, help="encoder actors (default: one per Ray CPU)"
    )
    ap.add_argument("--node-cores", type=int, default=16, help="assumed cores per cluster node")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not (args.data / "seg_train").is_dir():
        sys.exit(f"{args.data}: no seg_train/ folder (set SCENESEEK_SHARED_DATA)")

    import logging

    logging.basicConfig(level=logging.WARNING)
    from core.search.encoders import create_image_encoder
    from core.search.ray_engine import RayOptions

    encoder = create_image_encoder(image_size=args.image_size, device="cpu")
    with tempfile.TemporaryDirectory(prefix="sceneseek-bench-") as tmp:
        tmp = Path(tmp)
        n = copy_images(pick_images(args.data, args.n), tmp / "imgs")
        # derive=False: the encoding engines alone (the derived columns are the same driver work)
        common = {"encoder": encoder, "batch_size": args.batch_size, "chunk": 256, "derive": False}

        local = build_index(tmp / "imgs", tmp / "local", workers=args.local_workers, **common)

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        workers = args.ray_workers or args.ray_cpus
        try:
            remote = build_index(
                tmp / "imgs",
                tmp / "ray",
                engine="ray",
                ray_options=RayOptions(workers=workers),
                **common,
            )
        finally:
            ray.shutdown()
        diff = float(np.abs(vectors(tmp / "local") - vectors(tmp / "ray")).max())
        paths = [str(p) for p in sorted((tmp / "imgs").rglob("*.jpg"))[:200]]
        dec = decode_rate(encoder, paths)
    gflops = model_gflops(encoder)

    cores = os.cpu_count() or 1
    need = TARGET_IMAGES / TARGET_SECONDS  # images/s
    ray_per_core = remote.images_per_second / args.ray_cpus
    local_per_core = local.images_per_second / cores
    ray_cores = math.ceil(need / ray_per_core)
    out = {
        "images": n,
        "image_size": args.image_size,
        "backbone": encoder.backbone.name,
        "cpu_cores": cores,
        "local_images_per_s": local.images_per_second,
        "local_seconds": local.seconds,
        "ray_images_per_s": remote.images_per_second,
        "ray_seconds": remote.seconds,
        "ray_cpus": args.ray_cpus,
        "ray_workers": workers,
        "ray_init_seconds": round(ray_start, 2),
        "ray_overhead_ratio": round(local.images_per_second / remote.images_per_second, 3),
        "max_vector_difference": diff,
        "model_gflops_per_image": round(gflops, 3),
        "achieved_gflops_per_core": round(ray_per_core * gflops, 2),
        "decode_images_per_s_per_core": round(dec, 1),
        "target_images_per_s": round(need, 1),
        "target_tflops": round(need * gflops / 1e3, 2),
        "cpu_cores_needed": ray_cores,
        "cpu_nodes_needed": math.ceil(ray_cores / args.node_cores),
        "node_cores": args.node_cores,
        "decode_cores_needed": math.ceil(need / dec),
        "local_per_core": round(local_per_core, 2),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    o = out
    print(f"{n} Intel images at {o['image_size']} px, {o['backbone']}, {cores} CPU cores")
    print(f"local engine: {o['local_images_per_s']:.1f} img/s ({o['local_seconds']:.1f} s)")
    print(
        f"ray engine:   {o['ray_images_per_s']:.1f} img/s ({o['ray_seconds']:.1f} s; "
        f"{o['ray_workers']} encoder actor(s) on {o['ray_cpus']} CPUs; ray.init "
        f"{o['ray_init_seconds']:.1f} s not counted)"
    )
    print(
        f"Ray overhead ratio (local / ray): {o['ray_overhead_ratio']:.2f}x; "
        f"max vector difference {diff:.1e}"
    )
    print()
    print(
        f"10 million images in an hour = {need:,.0f} img/s. The model costs "
        f"{gflops:.2f} GFLOPs per image, i.e. {o['target_tflops']:.1f} TFLOP/s sustained."
    )
    print(
        f"- CPU-only: the Ray engine ran {ray_per_core:.1f} img/s per core here "
        f"({o['achieved_gflops_per_core']:.1f} GFLOP/s per core), so about {ray_cores:,} "
        f"cores: {o['cpu_nodes_needed']:,} nodes of {args.node_cores} cores."
    )
    print(
        f"- With GPUs: any accelerator sustaining {o['target_tflops']:.1f} TFLOP/s of "
        f"inference covers the model, but decoding still needs CPUs: {dec:.0f} img/s per "
        f"core measured here, so {o['decode_cores_needed']:,} cores for decoding "
        f"({math.ceil(o['decode_cores_needed'] / args.node_cores):,} node(s) of "
        f"{args.node_cores} cores), before any storage limits."
    )


if __name__ == "__main__":
    main()
