"""Choose the defaults of `train --mode partial` on validation, and record the search.

Each trial is a real `partial` run (cached activations, validation held out of the training
images) in RUNS/<trial>; the choice is the trial with the best validation accuracy (ties: the
cheaper one). The test accuracy of every trial is printed and recorded for reporting only: it
chooses nothing. The record, with every trial's validation figures, goes to
core/resources/partial_search.json, whose "chosen" settings are what `--mode partial` uses
when an option is not given.

    python benchmarks/partial_search.py --data DIR            # every trial, then choose
    python benchmarks/partial_search.py --data DIR --only head-1e-3-4  # one trial (parallel)
    python benchmarks/partial_search.py --data DIR --choose   # choose from finished trials

DIR holds seg_train/ and seg_test/ (default $SCENESEEK_SHARED_DATA/intel). Activations are
cached once (in $SCENESEEK_CACHE) and shared by every trial with the same split point; a later
split point is derived from an earlier one's cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.config import shared_data_dir  # noqa: E402
from core.io import atomic_write_json, read_json  # noqa: E402

# (name, settings): the unfrozen part, the learning rate and the epochs (cosine schedule,
# label smoothing 0.1, AdamW weight decay 0.01, batch 32, 224 px, flips). Sized for a 2-core
# CPU: a tail that starts at blocks.5.0 costs about 5x the head per epoch.
GRID: list[tuple[str, dict]] = [
    ("head-1e-3-4", {"unfreeze": "head", "lr": 1e-3, "epochs": 4}),
    ("blocks.6.0-1e-3-4", {"unfreeze": "blocks.6.0", "lr": 1e-3, "epochs": 4}),
    ("blocks.5.0-1e-3-4", {"unfreeze": "blocks.5.0", "lr": 1e-3, "epochs": 4}),
    # Five tails side by side on one frozen trunk, their probabilities averaged.
    ("blocks.6.0-1e-3-4-x5", {"unfreeze": "blocks.6.0", "lr": 1e-3, "epochs": 4, "members": 5}),
]
COMMON = {"image_size": 224, "schedule": "cosine", "label_smoothing": 0.1}
# Relative cost per epoch of each split point (measured: ms/img to train the tail, loaded
# 2-core CPU): the tie-breaker.
COST = {"head": 20, "blocks.6.0": 36, "blocks.5.3": 54, "blocks.5.0": 96}
RECORD = REPO / "core" / "resources" / "partial_search.json"


def cost(settings: dict) -> float:
    """Training cost per epoch, relative: the tail's cost times the number of tails."""
    return COST.get(settings["unfreeze"], 99) * settings.get("members", 1)


def trial_command(name: str, settings: dict, data_dir: Path, runs: Path) -> list[str]:
    """The trial is the train command itself, with the trial's settings spelled out."""
    opts = {**COMMON, **settings}
    cmd = [
        sys.executable,
        "-m",
        "core",
        "train",
        "--train",
        str(data_dir / "seg_train"),
        "--test",
        str(data_dir / "seg_test"),
        "--backbone",
        "efficientnet_lite0",
        "--mode",
        "partial",
        "--out",
        str(runs / name),
        "--json",
        "--resume",
    ]
    for key, value in opts.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def run_trial(name: str, settings: dict, data_dir: Path, runs: Path) -> dict:
    cmd = trial_command(name, settings, data_dir, runs)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"trial {name} failed: {done.stderr.strip().splitlines()[-1:]}")
    trial = summarise(name, settings, json.loads(done.stdout))
    trial["wall_seconds"] = time.perf_counter() - t0
    trial["command"] = " ".join(cmd[1:])
    print(json.dumps(trial), flush=True)
    return trial


def summarise(name: str, settings: dict, res: dict) -> dict:
    return {
        "trial": name,
        "settings": {**COMMON, **settings},
        "val_accuracy": res["val_accuracy"],
        "best_epoch": res["best_epoch"],
        "val_accuracy_per_epoch": [e["val_accuracy"] for e in res["epochs"]],
        # Mirror averaging is chosen per epoch on validation (train --tta auto): both figures.
        "tta": res.get("tta", "none"),
        "val_accuracy_plain_per_epoch": [e.get("val_accuracy_plain") for e in res["epochs"]],
        "val_accuracy_mirror_per_epoch": [e.get("val_accuracy_mirror") for e in res["epochs"]],
        "test_accuracy_reported_only": res["accuracy"],
        "train_seconds": res["train_seconds"],
        "n_train": res["n_train"],
        "n_val": res["n_val"],
        "validation": res["validation"],
    }


def choose(runs: Path) -> dict:
    trials = []
    for name, settings in GRID:
        result = runs / name / "result.json"
        if result.exists():
            trial = summarise(name, settings, read_json(result))
            trial["command"] = " ".join(trial_command(name, settings, Path("DIR"), runs)[1:])
            trials.append(trial)
    if not trials:
        raise SystemExit(f"no finished trials under {runs}")
    # Trials of an earlier search that were not run again here keep their recorded figures.
    done = {t["trial"] for t in trials}
    try:
        earlier = read_json(RECORD).get("trials", [])
    except (OSError, ValueError):
        earlier = []
    trials += [t for t in earlier if t["trial"] not in done and t["trial"] in dict(GRID)]
    best = max(trials, key=lambda t: (t["val_accuracy"], -cost(t["settings"])))
    chosen = dict(best["settings"])
    record = {
        "chosen": chosen,
        "chosen_trial": best["trial"],
        "selected_by": "validation",
        "rule": "highest validation accuracy of the validation-chosen epoch; ties: cheaper tail",
        "trials": trials,
        "backbone": "efficientnet_lite0",
        "data": "Intel seg_train (10% stratified validation, seed 0); test = seg_test",
        "command": "python benchmarks/partial_search.py --data DIR",
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_json(RECORD, record)
    print(json.dumps({"chosen": chosen, "trial": best["trial"]}), flush=True)
    return record


def main() -> None:
    shared = shared_data_dir()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=shared / "intel")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "partial_search")
    ap.add_argument("--only", help="run this trial only: " + ", ".join(n for n, _ in GRID))
    ap.add_argument("--choose", action="store_true", help="choose from finished trials")
    args = ap.parse_args()
    grid = dict(GRID)
    if args.only and args.only not in grid:
        ap.error(f"--only must be one of {', '.join(grid)}")
    if not args.choose:
        for name, settings in GRID:
            if args.only in (None, name):
                run_trial(name, settings, args.data, args.runs)
    if args.choose or args.only is None:
        choose(args.runs)


if __name__ == "__main__":
    main()
