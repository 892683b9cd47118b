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
    python benchmarks/partial_search.py --subset 150 --only lite0+lite2-blocks.6.0-1e-3-4

--subset N runs the trials on N training photos per class (validation held out of them) and
SUBSET_TEST test photos per class instead, recorded apart under "subset_trials": a measured
comparison for a loaded machine, which never sets the default (only full-data trials choose).
A cross-backbone trial (backbone "a,b") is one run whose result also holds each backbone's
own run (core.vision.train.cross), so it reports every single-backbone route beside the
ensemble, each on the same split.

DIR holds seg_train/ and seg_test/ (default $SCENESEEK_SHARED_DATA/intel). Activations are
cached once (in $SCENESEEK_CACHE) and shared by every trial with the same split point; a later
split point is derived from an earlier one's cache.
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
sys.path.insert(0, str(REPO))

from core.config import shared_data_dir  # noqa: E402
from core.io import atomic_write_json, read_json  # noqa: E402

PAIR = {"backbone": "efficientnet_lite0,efficientnet_lite2"}
# (name, settings): the unfrozen part, the learning rate and the epochs (cosine schedule,
# label smoothing 0.1, AdamW weight decay 0.01, batch 32, 224 px, flips). Sized for a 2-core
# CPU: a tail that starts at blocks.5.0 costs about 5x the head per epoch.
GRID: list[tuple[str, dict]] = [
    ("head-1e-3-4", {"unfreeze": "head", "lr": 1e-3, "epochs": 4}),
    ("blocks.6.0-1e-3-4", {"unfreeze": "blocks.6.0", "lr": 1e-3, "epochs": 4}),
    ("blocks.5.0-1e-3-4", {"unfreeze": "blocks.5.0", "lr": 1e-3, "epochs": 4}),
    # Five tails side by side on one frozen trunk, their probabilities averaged.
    ("blocks.6.0-1e-3-4-x5", {"unfreeze": "blocks.6.0", "lr": 1e-3, "epochs": 4, "members": 5}),
    # Tails on Lite0 and on Lite2 (each on its own activation cache at its own size: 224 and
    # 260 px), every tail's probabilities averaged; the run reports each backbone's own too.
    (
        "lite0+lite2-blocks.6.0-1e-3-4",
        {**PAIR, "unfreeze": "blocks.6.0", "lr": 1e-3, "epochs": 4, "members": 1},
    ),
    (
        "lite0+lite2-blocks.6.0-1e-3-4-x5",
        {**PAIR, "unfreeze": "blocks.6.0", "lr": 1e-3, "epochs": 4, "members": 5},
    ),
]
COMMON = {"image_size": 224, "schedule": "cosine", "label_smoothing": 0.1}
# Relative cost per epoch of each split point (measured: ms/img to train the tail, loaded
# 2-core CPU): the tie-breaker.
COST = {"head": 20, "blocks.6.0": 36, "blocks.5.3": 54, "blocks.5.0": 96}
# Relative cost of a backbone: Lite0's speed over its own (img/s, core/resources/backbone_speed).
BACKBONE_COST = {
    "efficientnet_lite0": 1.0,
    "efficientnet_lite1": 56 / 47,
    "efficientnet_lite2": 56 / 35,
}
SUBSET_TEST = 100  # test photos per class of a --subset comparison (reported only)
RECORD = REPO / "core" / "resources" / "partial_search.json"


def cost(settings: dict) -> float:
    """Training cost per epoch, relative: the tail's cost times the number of tails, summed
    over the backbones (each weighted by its speed)."""
    names = settings.get("backbone", "efficientnet_lite0").split(",")
    per = COST.get(settings["unfreeze"], 99) * settings.get("members", 1)
    return sum(per * BACKBONE_COST.get(b, 2.0) for b in names)


def options(settings: dict) -> dict:
    """The trial's train options: COMMON then its own (a cross-backbone run's image size is
    its members' own, so COMMON's is left out)."""
    common = {
        k: v
        for k, v in COMMON.items()
        if "," not in settings.get("backbone", "") or k != "image_size"
    }
    return {**common, **settings}


def trial_command(name: str, settings: dict, data_dir: Path, runs: Path) -> list[str]:
    """The trial is the train command itself, with the trial's settings spelled out."""
    opts = options(settings)
    backbone = opts.pop("backbone", "efficientnet_lite0")
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
        backbone,
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
    # The largest child's peak resident memory (Linux: kB).
    trial["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    trial["command"] = " ".join(cmd[1:])
    print(json.dumps(trial), flush=True)
    return trial


def summarise(name: str, settings: dict, res: dict) -> dict:
    out = {
        "trial": name,
        "settings": options(settings),
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
    if "groups" in res:  # each backbone's own run, on the same split: its route's figures
        out["groups"] = [
            {k: g[k] for k in ("backbone", "image_size", "members", "unfreeze", "tta", "epoch")}
            | {
                "val_accuracy": g["val_accuracy"],
                "test_accuracy_reported_only": g["test_accuracy_reported_only"],
                "train_seconds": g["train_seconds"],
            }
            for g in res["groups"]
        ]
    return out


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
    previous = _record()
    earlier = previous.get("trials", [])
    trials += [t for t in earlier if t["trial"] not in done and t["trial"] in dict(GRID)]
    best = max(trials, key=lambda t: (t["val_accuracy"], -cost(t["settings"])))
    chosen = dict(best["settings"])
    record = {
        "chosen": chosen,
        "chosen_trial": best["trial"],
        "selected_by": "validation",
        "rule": "highest validation accuracy of the validation-chosen epoch; ties: cheaper tail",
        "trials": trials,
        "backbone": chosen.get("backbone", "efficientnet_lite0"),
        "data": "Intel seg_train (10% stratified validation, seed 0); test = seg_test",
        "command": "python benchmarks/partial_search.py --data DIR",
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if "subset_trials" in previous:  # measured comparisons on subsets: kept, never chosen from
        record["subset_trials"] = previous["subset_trials"]
    atomic_write_json(RECORD, record)
    print(json.dumps({"chosen": chosen, "trial": best["trial"]}), flush=True)
    return record


def _record() -> dict:
    try:
        return dict(read_json(RECORD))
    except (OSError, ValueError, TypeError):
        return {}


def make_subset(src: Path, dest: Path, n_train: int, n_test: int) -> Path:
    """dest/seg_train and dest/seg_test of symbolic links to n photos per class, spread evenly
    over each class folder (sorted, deterministic)."""
    for split, n in (("seg_train", n_train), ("seg_test", n_test)):
        for class_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(class_dir.glob("*.jpg"))
            out = dest / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for f in files[:: max(1, len(files) // n)][:n]:
                if not (out / f.name).exists():
                    (out / f.name).symlink_to(f)
    return dest


def record_subset(n: int, trials: list[dict]) -> None:
    """Add the subset trials to the record under "subset_trials" (by trial name); the choice
    and the full-data trials are left as they are."""
    record = _record()
    block = record.get("subset_trials") or {}
    done = {t["trial"]: t for t in block.get("trials", [])}
    done.update({t["trial"]: t for t in trials})
    record["subset_trials"] = {
        "data": f"Intel seg_train, {n} photos per class (10% stratified validation, seed 0); "
        f"test = {SUBSET_TEST} seg_test photos per class, reported only",
        "note": "a comparison on a subset; it chooses nothing (the default is chosen on "
        "full-data validation)",
        "command": f"python benchmarks/partial_search.py --subset {n} --only TRIAL",
        "load_average": os.getloadavg(),
        "trials": list(done.values()),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_json(RECORD, record)


def main() -> None:
    shared = shared_data_dir()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=shared / "intel")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "partial_search")
    ap.add_argument("--only", help="run this trial only: " + ", ".join(n for n, _ in GRID))
    ap.add_argument("--choose", action="store_true", help="choose from finished trials")
    ap.add_argument("--subset", type=int, help="photos per class: a recorded comparison only")
    ap.add_argument("--subset-dir", type=Path, help="where the subset's links go")
    args = ap.parse_args()
    grid = dict(GRID)
    if args.only and args.only not in grid:
        ap.error(f"--only must be one of {', '.join(grid)}")
    if args.subset:
        where = args.subset_dir or Path(tempfile.gettempdir()) / f"intel-subset{args.subset}"
        data = make_subset(args.data, where, args.subset, SUBSET_TEST)
        runs = args.runs.with_name(f"{args.runs.name}_subset{args.subset}")
        names = [args.only] if args.only else list(grid)
        record_subset(args.subset, [run_trial(n, grid[n], data, runs) for n in names])
        return
    if not args.choose:
        for name, settings in GRID:
            if args.only in (None, name):
                run_trial(name, settings, args.data, args.runs)
    if args.choose or args.only is None:
        choose(args.runs)


if __name__ == "__main__":
    main()
