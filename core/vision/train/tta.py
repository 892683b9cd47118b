"""Test-time augmentation: average a photo's class probabilities with its mirror image's,
chosen per epoch on validation alone (partial mode, whose cache holds every mirror image)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core.vision.train.engine import EpochOutput


def mirror_average(logits: np.ndarray, mirror_logits: np.ndarray) -> np.ndarray:
    """Log of the mean class probability of a photo and its mirror image (usable as logits:
    argmax and cross-entropy see the averaged probabilities)."""
    a = torch.from_numpy(np.asarray(logits, np.float32)).log_softmax(1)
    b = torch.from_numpy(np.asarray(mirror_logits, np.float32)).log_softmax(1)
    return (torch.logaddexp(a, b) - math.log(2)).numpy()


def choose_tta(
    setting: str, out: EpochOutput, val_labels: Sequence[int]
) -> tuple[dict[str, Any], EpochOutput]:
    """Plain or mirror-averaged predictions for an epoch: `setting` "mirror" or "none", or
    "auto": the mirror average when it is more accurate on validation (ties stay plain).
    Returns the record fields (the choice and both validation figures) and the epoch output
    with the chosen validation logits."""
    if out.val_mirror is None or setting == "none":
        return {"tta": "none"}, out
    val_avg = mirror_average(out.val_logits, out.val_mirror)
    y = np.asarray(val_labels)
    fields = {
        "val_accuracy_plain": float((out.val_logits.argmax(1) == y).mean()),
        "val_accuracy_mirror": float((val_avg.argmax(1) == y).mean()),
    }
    use = setting == "mirror" or fields["val_accuracy_mirror"] > fields["val_accuracy_plain"]
    if not use:
        return {"tta": "none", **fields}, out
    return {"tta": "mirror", **fields}, EpochOutput(out.train_loss, out.train_accuracy, val_avg)
