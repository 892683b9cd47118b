"""What every mode's strategy works on (`Context`, built once by the loop) and gives back
(`Strategy`: an epoch step that sees training and validation images only, and the one
scoring of the test images for the checkpoint validation chose, after training)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.split import Partition, SplitData
from core.vision.backbones import Backbone
from core.vision.train.config import TrainConfig
from core.vision.train.engine import Hooks, StepFn, check_stop, progress_of
from core.vision.train.model import SceneClassifier

# (test logits with the record's test-time augmentation, penultimate features) of the
# model as it stands (the loop has loaded the chosen checkpoint); the argument is the chosen
# epoch's record.
TestFn = Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]
Extract = Callable[[list[str], Callable[[int, int], None] | None], tuple[np.ndarray, bool]]


@dataclass
class Context:
    """What every mode's strategy works on, built once by `run_training`."""

    cfg: TrainConfig
    data: SplitData
    part: Partition
    backbone: Backbone
    model: SceneClassifier
    device: torch.device
    hooks: Hooks
    scaler: torch.amp.GradScaler
    cache_dir: str | Path | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per cached extraction


# The validation logits of the model as it stands, with the record's test-time augmentation
# (what a cross-backbone ensemble combines: core.vision.train.cross).
ValFn = Callable[[dict[str, Any]], np.ndarray]


@dataclass
class Strategy:
    step: StepFn
    test: TestFn
    validate: ValFn | None = None


def timed(ctx: Context, kind: str, split: str, paths: list[str], extract: Extract) -> np.ndarray:
    """`extract(paths, progress)` of one split ("train": the training pool, train +
    validation, one cache entry that any validation split of the same files reuses; "test"),
    timed into ctx.timings."""
    t0 = time.perf_counter()
    out, hit = extract(paths, progress_of(ctx.hooks, f"{kind} ({split})"))
    ctx.timings[f"{kind}_{split}"] = time.perf_counter() - t0
    ctx.timings[f"{kind}_{split}_cached"] = float(hit)
    check_stop(ctx.hooks)
    return out
