"""A run folder (`RunFiles`): config.json, metrics.jsonl (one line per finished epoch),
checkpoint_last.pt, checkpoint_best.pt, eval.npz (the test logits, penultimate features and
labels of the validation-chosen checkpoint, scored once after training) and result.json.
Every file is written atomically."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.data.split import Partition, SplitData
from core.io import atomic_save_npz, atomic_write_json, atomic_write_text, dumps_json, read_jsonl
from core.metrics import classification_result
from core.vision.backbones import Backbone
from core.vision.train.checkpoint import load_checkpoint
from core.vision.train.config import FIXED_ON_RESUME, TrainConfig
from core.vision.train.engine import best_of

log = logging.getLogger(__name__)


class RunExistsError(RuntimeError):
    pass


class _RunFile:
    """A file of a run folder, read as an attribute of RunFiles (`files.best` is a Path)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, files: RunFiles, owner: type | None = None) -> Path:
        return files.root / self.name


@dataclass(frozen=True)
class RunFiles:
    """The files of a run folder."""

    root: Path
    config = _RunFile("config.json")
    metrics = _RunFile("metrics.jsonl")
    last = _RunFile("checkpoint_last.pt")
    best = _RunFile("checkpoint_best.pt")
    eval = _RunFile("eval.npz")
    result = _RunFile("result.json")
    tsne = _RunFile("tsne.npz")


def sync_metrics(files: RunFiles, history: list[dict[str, Any]]) -> None:
    """Make metrics.jsonl hold exactly the checkpoint's history (a crash between saving the
    checkpoint and appending its line, or an epoch logged after the checkpoint, is repaired;
    lines already right are left untouched)."""
    lines = read_jsonl(files.metrics)
    if [r.get("epoch") for r in lines] == [r["epoch"] for r in history]:
        return
    atomic_write_text(files.metrics, "".join(dumps_json(r, indent=None) + "\n" for r in history))


def _check_out_dir(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise RunExistsError(f"--out {root} is a file, not a folder; name a run folder")
    for parent in root.parents:
        if parent.exists() and not parent.is_dir():
            raise RunExistsError(f"--out {root}: {parent} is a file, not a folder")


def prepare_run(
    cfg: TrainConfig, files: RunFiles, resume: bool, class_names: list[str], data_key: str
) -> dict[str, Any] | None:
    """Checkpoint to resume from (None: fresh start). Refuses to overwrite a run and to resume
    with other settings or other data. Writes nothing."""
    _check_out_dir(files.root)
    if files.last.exists():
        if not resume:
            raise RunExistsError(
                f"{files.root} already holds a run; pass --resume to continue it or choose "
                "another output folder"
            )
        ckpt = load_checkpoint(files.last)
        old = ckpt["config"]
        changed = [k for k in FIXED_ON_RESUME if k in old and old.get(k) != getattr(cfg, k)]
        if changed:
            raise ValueError(
                f"cannot resume {files.root} with different "
                + ", ".join(f"{k} ({old.get(k)!r} -> {getattr(cfg, k)!r})" for k in changed)
            )
        if list(ckpt["class_names"]) != list(class_names):
            raise ValueError(
                f"cannot resume {files.root} with different classes "
                f"({ckpt['class_names']} -> {class_names})"
            )
        if ckpt.get("data_key") not in (None, data_key):
            raise ValueError(
                f"cannot resume {files.root} with different data: its training/validation "
                "images are not the ones it was trained on (same --train folder, files, "
                "--val-fraction and --seed needed)"
            )
        if "data_key" not in ckpt:
            raise ValueError(
                f"cannot resume {files.root}: it was written before runs kept a "
                "validation split; retrain it in a new folder"
            )
        return ckpt
    if resume:
        log.warning("%s: nothing to resume, starting a new run", files.root)
    return None


def write_config(
    files: RunFiles, cfg: TrainConfig, data: SplitData, part: Partition, **extra: Any
) -> None:
    """config.json: the run's settings, classes and validation split (and `extra`)."""
    atomic_write_json(
        files.config,
        {
            **asdict(cfg),
            "class_names": data.class_names,
            "validation": part.source,
            "n_val": len(part.val_idx),
            "selected_by": "validation",
            **extra,
        },
    )


def save_eval(
    path: Path,
    logits: np.ndarray,
    feats: np.ndarray,
    data: SplitData,
    epoch: int,
    val_logits: np.ndarray | None = None,
    val_labels: Any = None,
) -> None:
    """The test scoring; with `val_logits` also the chosen checkpoint's validation logits
    (partial mode: what a cross-backbone ensemble combines)."""
    val = {}
    if val_logits is not None:
        val = {
            "val_logits": np.asarray(val_logits, np.float32),
            "val_labels": np.asarray(val_labels, dtype=np.int64),
        }
    atomic_save_npz(
        path,
        logits=logits.astype(np.float32),
        features=feats.astype(np.float32),
        labels=np.asarray(data.test_labels, dtype=np.int64),
        paths=np.asarray(data.test_paths, dtype=str),
        epoch=np.asarray(epoch),
        **val,
    )


def write_result(
    files: RunFiles,
    cfg: TrainConfig,
    class_names: list[str],
    history: list[dict[str, Any]],
    train_seconds: float,
    stop_reason: str,
    backbone: Backbone,
    timings: dict[str, float] | None = None,
    part: Partition | None = None,
) -> dict[str, Any]:
    """Score the validation-chosen checkpoint's test predictions (eval.npz, written once after
    training) and write result.json. The test figures report; they chose nothing."""
    ev = np.load(files.eval)
    y = ev["labels"]
    res = classification_result(
        y, ev["logits"].argmax(1), class_names, timings={**(timings or {}), "train": train_seconds}
    )
    best = best_of(history) or history[-1]
    out = {
        **res.to_dict(),
        "val_accuracy": best.get("val_accuracy"),
        "val_macro_f1": best.get("val_macro_f1"),
        "selected_by": "validation",
        "validation": part.source if part is not None else None,
        "backbone": cfg.backbone,
        "backbone_source": backbone.source,
        "mode": cfg.mode,
        "image_size": cfg.image_size,
        "unfreeze": cfg.unfreeze if cfg.mode == "partial" else None,
        "tta": best.get("tta", "none"),  # how the reported checkpoint predicts
        "members": cfg.members,
        "epochs": history,
        "epochs_done": len(history),
        "epochs_planned": cfg.epochs,
        "evaluated_checkpoint": "best",
        "evaluated_epoch": int(ev["epoch"]),
        "best_epoch": best["epoch"],
        "best_accuracy": res.accuracy,  # test accuracy of the validation-chosen epoch
        "train_seconds": train_seconds,
        "stopped_early": bool(stop_reason),
        "stop_reason": stop_reason or None,
        "n_train": len(part.train_idx) if part is not None else None,
        "n_val": len(part.val_idx) if part is not None else None,
        "n_test": len(y),
        "run": str(files.root),
        "config": asdict(cfg),
    }
    atomic_write_json(files.result, out)
    return out
