"""Run checkpoints: model, optimizer, scheduler, gradient scaler and epoch, as tensors and
plain values only (configs and history as JSON text), read with weights_only=True so that
opening a shared run never runs code from it. Checkpoints of earlier versions still load."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from core.io import atomic_path, dumps_json
from core.vision.backbones import TorchFileError, load_tensors_file
from core.vision.train.config import TrainConfig
from core.vision.train.model import SceneClassifier

CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint that is unreadable, truncated, foreign, or holds more than tensors."""


def trained_state(model: SceneClassifier, mode: str) -> dict[str, torch.Tensor]:
    # A linear probe changes only the head; the frozen backbone is rebuilt from its weights.
    module = model.head if mode == "linear-probe" else model
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def load_trained_state(model: SceneClassifier, ckpt: dict[str, Any]) -> None:
    target = model.head if ckpt["trained"] == "head" else model
    target.load_state_dict(ckpt["model"], strict=True)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def checkpoint_state(
    model: SceneClassifier,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    epoch: int,
    class_names: list[str],
    history: list[dict[str, Any]],
    train_seconds: float,
    data_key: str,
) -> dict[str, Any]:
    """Tensors and plain values only; config and history as JSON text (weights_only-safe)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": trained_state(model, cfg.mode),
        "trained": "head" if cfg.mode == "linear-probe" else "all",
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "config_json": dumps_json(asdict(cfg), indent=None),
        "class_names": list(class_names),
        "history_json": dumps_json(history, indent=None),
        "train_seconds": float(train_seconds),
        "data_key": data_key,
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A run checkpoint, read with torch.load(weights_only=True): tensors and plain values
    only, never code. Returns it with "config" (dict) and "history" (list) decoded. Raises
    CheckpointError (one line) for a truncated, foreign or pickled-object file."""
    path = Path(path)
    redo = (
        "retrain the run (python -m core train ... --out NEW_FOLDER) with this version of SceneSeek"
    )
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = load_tensors_file(path)
    except TorchFileError as exc:
        if exc.objects is None:
            cause = "" if exc.cause == "UnpicklingError" else f": {exc.cause}"
            raise CheckpointError(
                f"{path}: not a readable checkpoint (truncated or not a PyTorch file{cause}); "
                f"{redo}"
            ) from None
        first = f"it needs {exc.objects}" if exc.objects else "it needs arbitrary Python objects"
        raise CheckpointError(
            f"{path}: refused to load: the checkpoint holds Python objects, not only tensors "
            f"({first}); loading it could run code from the file. If it is an old "
            f"SceneSeek run, {redo}"
        ) from None
    return _normalize_checkpoint(path, ckpt, redo)


def _normalize_checkpoint(path: Path, ckpt: Any, redo: str) -> dict[str, Any]:
    needed = ("model", "epoch", "class_names", "trained")
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in needed):
        raise CheckpointError(
            f"{path}: not a SceneSeek run checkpoint (a state dict or another "
            f"program's file); {redo}"
        )
    out = dict(ckpt)
    try:
        if "config_json" in out:
            out["config"] = json.loads(out.pop("config_json"))
        if "history_json" in out:
            out["history"] = json.loads(out.pop("history_json"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint ({exc}); {redo}") from None
    if not isinstance(out.get("config"), dict) or not isinstance(out["model"], dict):
        raise CheckpointError(f"{path}: not a SceneSeek run checkpoint; {redo}")
    out.setdefault("history", [])
    out.setdefault("format", 1)  # written before checkpoints carried JSON configs
    return out
