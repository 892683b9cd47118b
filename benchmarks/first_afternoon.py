"""Benchmark: a first afternoon on one folder with an empty cache (issue 19, item 1).

    python benchmarks/first_afternoon.py [DATA] [--train-n N] [--test-n N]
                                         [--backbone efficientnet_lite0] [--json]

Copies DATA's seg_train and seg_test (all of them by default: the afternoon issue 19
describes is a newcomer's whole collection; `--train-n/--test-n` take an even pick instead) (the Intel layout; default the shared
Intel data, $SCENESEEK_SHARED_DATA/intel) into a temporary folder, then runs, each as its own
`python -m core` process with the cache and the index in that temporary folder (empty at
the start):

  train   a linear probe (--mode linear-probe, default epochs) on seg_train, scored on seg_test
  index   the whole folder with that run (--run)
  audit   the whole folder (its default backbone: the one the run was trained with)

and prints the wall time of each and, from the encoding store's own records
(core.vision.encodings), how many times each photo was encoded: `encode_passes` is the
most times any photo's content was encoded over every encoder identity (1: once), with
`encode_passes_mean` and the number of distinct photos beside it. Goal: index and audit
each under half of train's time, every photo encoded once. Each step's CPU seconds (user +
system, `train_cpu_s`...) are printed beside its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import copy_images, default_data, pick_from  # noqa: E402
from core.config import CACHE_ENV, INDEX_ENV  # noqa: E402

GOAL_RATIO = 0.5  # index and audit each take under half of train's wall time


CPU_S: dict[str, float] = {}  # CPU seconds (user + system) of each step's process


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def command(args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    """Wall seconds and the JSON object of `python -m core ARGS --json`; its CPU seconds go
    to CPU_S (on a shared machine the wall times vary with the load, the CPU ones less)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    done = subprocess.run(
        [sys.executable, "-m", "core", *args, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    CPU_S[args[0]] = round(_children_cpu() - c0, 2)
    if done.returncode != 0:
        raise SystemExit(f"`python -m core {' '.join(args)}` failed: {done.stderr.strip()}")
    return seconds, json.loads(done.stdout)


def _pick(folder: Path, n: int | None) -> list[Path]:
    """Every photo of `folder`'s class folders, or an even pick of n."""
    if n is None:
        return sorted(folder.glob("*/*.jpg"))
    return pick_from(folder, n)


def run(data: Path, train_n: int | None, test_n: int | None, backbone: str, work: Path) -> dict:
    from core.vision.encodings import EncodingStore

    photos = work / "photos"
    train_files, test_files = _pick(data / "seg_train", train_n), _pick(data / "seg_test", test_n)
    copy_images(train_files, photos / "seg_train")
    copy_images(test_files, photos / "seg_test")
    cache, index, runs = work / "cache", work / "index", work / "run"
    env = {
        **os.environ,
        CACHE_ENV: str(cache),
        INDEX_ENV: str(index),
        "PYTHONPATH": str(REPO),
    }
    store = EncodingStore.at(cache)
    out: dict = {"photos": len(train_files) + len(test_files), "backbone": backbone}
    train_s, trained = command(
        [
            "train",
            "--train",
            str(photos / "seg_train"),
            "--test",
            str(photos / "seg_test"),
            "--out",
            str(runs),
            "--mode",
            "linear-probe",
            "--backbone",
            backbone,
        ],
        env,
    )
    out["encoded_by_train"] = store.encoded()
    index_s, indexed = command(
        ["index", "--images", str(photos), "--index", str(index), "--run", str(runs)], env
    )
    out["encoded_by_index"] = store.encoded() - out["encoded_by_train"]
    audit_s, _ = command(["audit", "--images", str(photos)], env)
    out["encoded_by_audit"] = store.encoded() - out["encoded_by_train"] - out["encoded_by_index"]
    passes = store.passes()
    out.update(
        train_s=round(train_s, 2),
        index_s=round(index_s, 2),
        audit_s=round(audit_s, 2),
        encode_passes=passes["max"],
        encode_passes_mean=passes["mean"],
        distinct_photos=passes["photos"],
        test_accuracy=trained.get("accuracy"),
        train_encode_s=round(
            sum(
                v
                for k, v in (trained.get("timings") or {}).items()
                if k.startswith("features_") and not k.endswith("_cached")
            ),
            2,
        ),
        index_rows=indexed.get("rows"),
    )
    out.update({f"{k}_cpu_s": v for k, v in CPU_S.items()})
    out["index_over_train"] = round(index_s / train_s, 3)
    out["audit_over_train"] = round(audit_s / train_s, 3)
    out["goal_met"] = bool(
        index_s < GOAL_RATIO * train_s and audit_s < GOAL_RATIO * train_s and passes["max"] == 1
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=None, help="Intel-layout folder")
    ap.add_argument("--train-n", type=int, default=None, help="photos picked (default: all)")
    ap.add_argument("--test-n", type=int, default=None, help="photos picked (default: all)")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--work", type=Path, default=None, help="empty folder to keep (default: temp)")
    args = ap.parse_args()
    data = args.data or default_data()
    if args.work is not None:
        out = run(data, args.train_n, args.test_n, args.backbone, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="first-afternoon-") as tmp:
            out = run(data, args.train_n, args.test_n, args.backbone, Path(tmp))
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k:20s} {v}")


if __name__ == "__main__":
    main()
