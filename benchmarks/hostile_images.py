"""Benchmark: peak memory and time to load hostile images the way `predict` does (decode with
core.data.images.check_image, then the model's eval transform), today against a restatement
of before issue 14: only the 50 MP pixel limit, full-size decoding, torchvision's
Resize(short side) + CenterCrop.

    python benchmarks/hostile_images.py [--image-size 224] [--json]

Each (image, limits) pair runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its own;
the baseline is the same subprocess loading a normal 150x150 JPEG. Images are generated in a
temporary folder: a 150000x8 PNG (a few KB), a 20000x400 PNG (a side limit case), a 6000x4000
JPEG (decoded reduced now), a 16-bit 3000x3000 PNG, and (issue 22) a `z.jpg` link to /dev/zero
and a FIFO named f.jpg: "before" reads them as `Path.read_bytes` did, under a smaller
address-space cap (--device-cap-mb beyond what the imports mapped) and a time limit, since reading /dev/zero never ends and
opening a FIFO waits for a writer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
# A cap on address space: a blow-up ends in MemoryError here, not in the machine's OOM killer.
# Devices: the cap is set after the imports, at what they mapped plus cap_mb (torch alone maps
# more than a small cap).
if not {late}:
    resource.setrlimit(resource.RLIMIT_AS, ({cap_mb} * 2**20, {cap_mb} * 2**20))
sys.path.insert(0, {repo!r})
from core.data import images
if {old}:
    from pathlib import Path
    images.read_regular = lambda p: Path(p).read_bytes()  # any file, read to its end
    images.MAX_SIDE = 10**9
    images.MAX_ASPECT = float("inf")
    images.LOAD_MAX_SIDE = 10**9
import torch
from core.vision.backbones import create_backbone
from core.vision.inference import eval_transform
bb = create_backbone("efficientnet_lite0")
# before: torchvision Resize(short side) + CenterCrop, what predict used; now: the crop-box one
transform = bb.preprocess(False, {size}) if {old} else eval_transform(bb, {size})
if {late}:
    vm_kb = int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmSize")).split()[1])
    cap = vm_kb * 1024 + {cap_mb} * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
check = images.check_image({path!r})
x = transform(check.image) if check.ok else None
out = {{"seconds": time.perf_counter() - t0, "reason": check.reason,
        "tensor": list(x.shape) if x is not None else None,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "before_mb": base / 1024}}
print(json.dumps(out))
"""


def make_images(folder: Path) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    out = {
        "normal 150x150 jpeg": folder / "normal.jpg",
        "strip 150000x8 png": folder / "strip.png",
        "panorama 20000x400 png": folder / "wide.png",
        "photo 6000x4000 jpeg": folder / "big.jpg",
        "16-bit 3000x3000 png": folder / "deep.png",
    }
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)).save(
        out["normal 150x150 jpeg"]
    )
    Image.new("L", (150_000, 8), 128).save(out["strip 150000x8 png"], optimize=True)
    Image.new("RGB", (20_000, 400), (20, 90, 200)).save(
        out["panorama 20000x400 png"], optimize=True
    )
    Image.fromarray(rng.integers(0, 255, (400, 600, 3), dtype=np.uint8)).resize((6000, 4000)).save(
        out["photo 6000x4000 jpeg"], quality=90
    )
    Image.fromarray((rng.random((3000, 3000)) * 65535).astype(np.uint16)).save(
        out["16-bit 3000x3000 png"]
    )
    out["/dev/zero link z.jpg"] = folder / "z.jpg"
    out["/dev/zero link z.jpg"].symlink_to("/dev/zero")
    out["FIFO f.jpg"] = folder / "f.jpg"
    os.mkfifo(out["FIFO f.jpg"])
    return out


DEVICES = ("/dev/zero link z.jpg", "FIFO f.jpg")


def run(path: Path, old: bool, size: int, cap_mb: int, timeout: float = 600) -> dict:
    late = path.name in ("z.jpg", "f.jpg")  # the devices: capped after the imports
    code = CHILD.format(
        repo=str(REPO), old=old, size=size, path=str(path), cap_mb=cap_mb, late=late
    )
    try:
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"still reading (or waiting) after {timeout:g} s: killed"}
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1][:200]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--cap-mb", type=int, default=6000, help="address-space cap per child")
    ap.add_argument(
        "--device-cap-mb", type=int, default=1500, help="cap for /dev/zero and FIFO children"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_images(Path(tmp)).items():
            for old in (True, False):
                device = name in DEVICES
                cap = args.device_cap_mb if device else args.cap_mb
                r = run(path, old, args.image_size, cap, 60 if device else 600)
                rows.append(
                    {
                        "image": name,
                        "file_kb": round(path.lstat().st_size / 1024, 1),
                        "limits": "before" if old else "now",
                        **r,
                    }
                )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'image':26s} {'KB':>8s} {'limits':7s} {'peak MB':>8s} {'+MB':>7s} {'s':>6s}  outcome")
    for r in rows:
        if "error" in r:
            print(f"{r['image']:26s} {r['file_kb']:8.1f} {r['limits']:7s} error: {r['error']}")
            continue
        extra = r["peak_mb"] - r["before_mb"]
        outcome = f"skipped: {r['reason']}" if r["reason"] else f"tensor {r['tensor']}"
        print(
            f"{r['image']:26s} {r['file_kb']:8.1f} {r['limits']:7s} {r['peak_mb']:8.0f} "
            f"{extra:7.0f} {r['seconds']:6.2f}  {outcome}"
        )


if __name__ == "__main__":
    main()
