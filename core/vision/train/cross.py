"""Train a cross-backbone ensemble (partial mode, `--backbone efficientnet_lite0,efficientnet_lite2`):
one ordinary partial run per backbone (its `--members` tails on its own activation cache, at
its own resolution and normalisation, its epoch and mirror averaging chosen on validation) in
OUT/members/<backbone>/, then one run folder in OUT whose checkpoint holds every member
(core.vision.train.cross_model) and whose prediction is the mean of the members' class
probabilities. Every group sees the same training/validation split (same files, seed and
fraction), so their validation predictions combine photo by photo; the test set is scored
once per group, after training, and only reported."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.split import Partition, SplitData
from core.io import atomic_write_json, atomic_write_text, dumps_json
from core.vision.backbones import spec_of
from core.vision.train.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_trained_state,
    save_checkpoint,
)
from core.vision.train.config import (
    RESNET_UNFREEZE,
    TrainConfig,
    backbone_names,
    member_image_size,
    partial_defaults,
)
from core.vision.train.cross_model import build_cross
from core.vision.train.engine import Hooks, epoch_metrics
from core.vision.train.files import (
    RunExistsError,
    RunFiles,
    save_eval,
    write_config,
    write_result,
)

log = logging.getLogger(__name__)

MEMBERS_DIR = "members"


def group_config(cfg: TrainConfig, backbone: str) -> TrainConfig:
    """One backbone's partial run: the ensemble's settings at that backbone's own input size;
    a split point of another family (blocks.* on ResNet, layer* on Lite) becomes the
    backbone's own default."""
    unfreeze = cfg.unfreeze or ""
    family = spec_of(backbone).family
    if family == "resnet" and not unfreeze.startswith(("layer", "head")):
        unfreeze = RESNET_UNFREEZE
    elif family != "resnet" and unfreeze.startswith("layer"):
        unfreeze = partial_defaults(backbone)["unfreeze"]
    return replace(
        cfg, backbone=backbone, image_size=member_image_size(backbone), unfreeze=unfreeze
    )


def combine(logits: list[np.ndarray], members: list[int]) -> np.ndarray:
    """Log of the mean class probability over every tail: each group's (log) probabilities
    weighted by its number of tails."""
    parts = [
        torch.from_numpy(np.asarray(z, np.float32)).log_softmax(1) + math.log(m)
        for z, m in zip(logits, members, strict=True)
    ]
    return (torch.logsumexp(torch.stack(parts), 0) - math.log(sum(members))).numpy()


# core.vision.train.loop's run_training and partition_of, handed in by it (no import circle).
Train = Callable[..., dict[str, Any]]
PartitionOf = Callable[[SplitData, TrainConfig], Partition]


def _train_group(
    train: Train,
    cfg: TrainConfig,
    data: SplitData,
    out: Path,
    resume: bool,
    cache_dir: str | Path | None,
    hooks: Hooks,
) -> dict[str, Any]:
    res = train(cfg, data, out, resume=resume, cache_dir=cache_dir, hooks=hooks)
    files = RunFiles(out)
    return {
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
        "members": cfg.members,
        "unfreeze": cfg.unfreeze,
        "tta": res.get("tta", "none"),
        "epoch": res["best_epoch"],
        "val_accuracy": res["val_accuracy"],
        "test_accuracy_reported_only": res["accuracy"],
        "train_seconds": res["train_seconds"],
        "timings": res.get("timings", {}),
        "checkpoint": str(files.best if files.best.exists() else files.last),
        "run": str(out),
    }


def run_cross(
    train: Train,
    partition_of: PartitionOf,
    cfg: TrainConfig,
    data: SplitData,
    out_dir: str | Path,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """Train (or resume) every backbone's run with `train` (run_training), then write the
    ensemble's run folder; returns its result (also in result.json), with each group's own
    figures under "groups"."""
    names = backbone_names(cfg.backbone)
    # The run's image size is the canvas of its members' inputs, whatever was asked: each
    # member reads the photo at its own backbone's size.
    cfg = replace(cfg, image_size=max(member_image_size(b) for b in names))
    hooks = hooks or Hooks()
    files = RunFiles(Path(out_dir))
    if files.last.exists() and not resume:
        raise RunExistsError(
            f"{files.root} already holds a run; pass --resume to continue it or choose "
            "another output folder"
        )
    t0 = time.perf_counter()
    groups = []
    for name in names:
        sub = files.root / MEMBERS_DIR / name
        group = group_config(cfg, name)
        groups.append(_train_group(train, group, data, sub, resume, cache_dir, hooks))
    evals = [np.load(Path(g["run"]) / "eval.npz") for g in groups]
    part = partition_of(data, cfg)
    members = [g["members"] for g in groups]
    val = combine([e["val_logits"] for e in evals], members)
    test = combine([e["logits"] for e in evals], members)
    feats = np.concatenate([e["features"] for e in evals], 1)
    epoch = max(g["epoch"] for g in groups)
    record = {
        "epoch": epoch,
        **epoch_metrics(val, part.val_labels, data.class_names),
        "tta": "none",  # each group applies its own choice inside the ensemble's model
        "member_epochs": [g["epoch"] for g in groups],
        "seconds": time.perf_counter() - t0,
    }
    history = [record]
    model, backbone = _assemble(groups, len(data.class_names))
    train_seconds = sum(g["train_seconds"] for g in groups)
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "trained": "all",
        "epoch": epoch,
        "config_json": dumps_json(asdict(cfg), indent=None),
        "class_names": list(data.class_names),
        "history_json": dumps_json(history, indent=None),
        "train_seconds": float(train_seconds),
        "data_key": part.key(),
        "cross_json": dumps_json(_public(groups), indent=None),
    }
    files.root.mkdir(parents=True, exist_ok=True)
    save_checkpoint(files.last, state)
    save_checkpoint(files.best, state)
    atomic_write_text(files.metrics, dumps_json(record, indent=None) + "\n")
    write_config(files, cfg, data, part, groups=_public(groups))
    save_eval(files.eval, test, feats, data, epoch, val, part.val_labels)
    timings = {f"{g['backbone']}_{k}": v for g in groups for k, v in g["timings"].items()}
    result = write_result(
        files, cfg, data.class_names, history, train_seconds, "", backbone, timings, part
    )
    result["groups"] = _public(groups)
    atomic_write_json(files.result, result)
    return result


def _public(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k not in ("timings", "checkpoint")} for g in groups]


def _assemble(groups: list[dict[str, Any]], n_classes: int) -> Any:
    """The ensemble's model and Backbone, every group's tails loaded from its chosen
    checkpoint."""
    model, backbone = build_cross(groups, n_classes)
    for group, g in zip(model.groups, groups, strict=True):
        load_trained_state(group, load_checkpoint(g["checkpoint"]))
    return model, backbone
