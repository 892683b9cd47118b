"""The loop's pieces in the style of torchvision's references/classification/train.py:
`train_one_epoch` over a loader, `evaluate` (logits and features of a loader, used on the
validation images every epoch and on the test images once, after training), the epoch's
validation figures and the rule that picks the best epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from core.metrics import classification_result
from core.vision.device import TrainingStopped, precision
from core.vision.features import batches
from core.vision.train.model import make_scaler


@dataclass
class Hooks:
    """Callbacks for progress bars, live curves and a stop button."""

    on_stage: Callable[[str, int, int], None] | None = None  # (stage, done, total)
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # after the epoch is saved
    should_stop: Callable[[], bool] | None = None  # checked between batches


@dataclass
class EpochOutput:
    """What an epoch gives the loop: training figures and validation logits (never the test
    set's: it is scored once, after training)."""

    train_loss: float
    train_accuracy: float
    val_logits: np.ndarray
    # The mirror images' logits, where a mode has them for free (partial); None elsewhere.
    val_mirror: np.ndarray | None = None


StepFn = Callable[[int, nn.Module, torch.optim.Optimizer], EpochOutput]


def progress_of(hooks: Hooks, stage: str) -> Callable[[int, int], None] | None:
    return (lambda d, t: hooks.on_stage(stage, d, t)) if hooks.on_stage else None


def check_stop(hooks: Hooks) -> None:
    if hooks.should_stop is not None and hooks.should_stop():
        raise TrainingStopped("training stopped on request; resume to continue")


def optimise(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@dataclass
class Tally:
    """Running loss and accuracy over an epoch's training batches."""

    loss: float = 0.0
    correct: int = 0
    n: int = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> int:
        """Count one batch; returns the images counted so far."""
        self.loss += loss.item() * len(y)
        self.correct += int((logits.argmax(1) == y).sum())
        self.n += len(y)
        return self.n

    def means(self) -> tuple[float, float]:
        """(mean loss, accuracy)."""
        return self.loss / max(1, self.n), self.correct / max(1, self.n)


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp: bool,
    hooks: Hooks,
    stage: str,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, float]:
    """One pass over the loader; returns (mean loss, accuracy) on the training batches."""
    scaler = scaler or make_scaler(device, False)
    tally = Tally()
    for x, y in batches(loader, device):
        check_stop(hooks)
        with precision(device, amp):
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimise(loss, optimizer, scaler)
        n = tally.add(loss, logits, y)
        if hooks.on_stage:
            hooks.on_stage(stage, n, len(loader.dataset))
    return tally.means()


def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    amp: bool = True,
    hooks: Hooks | None = None,
    stage: str = "evaluating",
    mirror: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, penultimate features) over the loader, in order; of the mirror images when
    `mirror` (the preprocessing is a centred crop, so flipping the tensor flips the photo)."""
    model.eval().to(device, memory_format=torch.channels_last)
    logits, feats = [], []
    progress = (lambda d, t: hooks.on_stage(stage, d, t)) if hooks and hooks.on_stage else None
    with torch.inference_mode(), precision(device, amp):
        for x, _ in batches(loader, device, progress):
            if mirror:
                x = x.flip(-1)
            f, z = model.forward_with_features(x)
            feats.append(f.float().cpu().numpy())
            logits.append(z.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(feats)


def epoch_metrics(
    logits: np.ndarray, labels: Sequence[int], class_names: list[str]
) -> dict[str, float]:
    """An epoch's validation figures: loss, accuracy and macro scores, keys "val_..."."""
    y = np.asarray(labels)
    res = classification_result(y, logits.argmax(1), class_names)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)))
    return {
        "val_loss": loss,
        "val_accuracy": res.accuracy,
        "val_macro_precision": res.macro_precision,
        "val_macro_recall": res.macro_recall,
        "val_macro_f1": res.macro_f1,
    }


def better(record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Validation decides: higher accuracy, then lower loss."""
    if best is None:
        return True
    a = (record["val_accuracy"], -record["val_loss"])
    return a > (best["val_accuracy"], -best["val_loss"])


def best_of(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    best = None
    for r in history:
        if "val_accuracy" in r and better(r, best):
            best = r
    return best
