"""Benchmark: how fast each registered backbone runs here, alone, on real photos.

    python benchmarks/backbones.py [DATA] [--n 32] [--batch 16] [--repeats 3] [--write]

For every backbone of the registry (core.vision.backbones.BACKBONE_SPECS) whose ImageNet
weights are here, the network alone (trunk + ImageNet head, PyTorch eager float32,
inference_mode, channels-last, torch's default threads) runs on `n` Intel photos decoded and
transformed once with the backbone's own eval transform at its own input resolution; the best
of `repeats` passes gives images per second. Backbones whose weights are absent (ResNet-50
offline) are listed as not measured. --write stores the figures, with the date, the CPU, the
thread count and the load average, in core/resources/backbone_speed.json, which the CLI's
--backbone help and the Train page read (never typed by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import cpu_name, default_data, pick_images  # noqa: E402
from core.io import atomic_write_json  # noqa: E402
from core.resources import resource_path  # noqa: E402
from core.vision.backbones import BACKBONE_SPECS, SPEED_RESOURCE, create_backbone  # noqa: E402


def measure(name: str, photos: list[Image.Image], batch: int, repeats: int) -> dict:
    net = create_backbone(name)
    model = net.model.to(memory_format=torch.channels_last)
    tf = net.preprocess(False)
    x = torch.stack([tf(im) for im in photos]).contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        model.imagenet_logits(x[:batch])  # warm-up: first-call allocations
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(x), batch):
                model.imagenet_logits(x[i : i + batch])
            best = min(best, time.perf_counter() - t0)
    return {
        "images_per_second": round(len(x) / best, 2),
        "input_px": net.default_size,
        "parameters": BACKBONE_SPECS[name].parameters,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=default_data())
    ap.add_argument("--n", type=int, default=32, help="photos per pass")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true", help=f"store core/resources/{SPEED_RESOURCE}")
    args = ap.parse_args()
    photos = [Image.open(p).convert("RGB") for p in pick_images(args.data, args.n)]
    rows: dict[str, dict] = {}
    for name, spec in BACKBONE_SPECS.items():
        if not spec.available():
            print(f"{name:20s} not measured: its ImageNet weights are not here")
            continue
        rows[name] = measure(name, photos, args.batch, args.repeats)
        r = rows[name]
        print(f"{name:20s} {r['images_per_second']:7.2f} img/s at {r['input_px']} px")
    record = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "cpu": cpu_name(platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "method": f"PyTorch eager fp32, batch {args.batch}, best of {args.repeats} passes over "
        f"{len(photos)} Intel photos at each backbone's own resolution",
        "backbones": rows,
    }
    if args.write:
        atomic_write_json(resource_path(SPEED_RESOURCE), record)
        print(f"wrote {resource_path(SPEED_RESOURCE)}")
    else:
        print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
