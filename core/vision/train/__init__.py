"""Train a CNN scene classifier on a pretrained backbone, laid out like torchvision's
references/classification/train.py: settings (`config`), the classifier (`model`),
checkpoints (`checkpoint`), the run folder (`files`), the loop's pieces (`engine`:
train_one_epoch, evaluate), one strategy per mode (`linear_probe`, `partial`, `fine_tune`),
test-time augmentation (`tta`) and the short loop itself (`loop.run_training`).

Modes:
  linear-probe  frozen backbone: features are extracted once (cached on disk) and only a
                linear head is trained on them; no augmentation (it cannot apply to cached
                features).
  partial       the frozen part's activations of every photo and its mirror image are cached;
                each epoch trains the unfrozen last block(s) and the head on them (defaults
                chosen on validation by benchmarks/partial_search.py).
  fine-tune     every layer is trained on images, with the augmentation.

Model selection uses validation only: every run holds out a validation set (the data set's
`val/` folder, else a seeded stratified share of the training images, core.data.split).
Every epoch is scored on validation alone; checkpoint_best.pt is the epoch with the best
validation accuracy and early stopping (`patience`) watches validation. The test set is
scored once, after training, for the chosen checkpoint, and only reports.

The names other code imports are re-exported here (`from core.vision.train import X`).
"""

from __future__ import annotations

from core.vision.device import DEVICE_TYPES, TrainingStopped, check_device, precision
from core.vision.train.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint
from core.vision.train.config import (
    FIXED_ON_RESUME,
    MODES,
    PARTIAL_FALLBACK,
    PARTIAL_SEARCH,
    SCHEDULES,
    TTA_CHOICES,
    TrainConfig,
    lr_at,
    make_scheduler,
    mode_defaults,
    partial_defaults,
)
from core.vision.train.engine import (
    EpochOutput,
    Hooks,
    best_of,
    epoch_metrics,
    evaluate,
    train_one_epoch,
)
from core.vision.train.files import RunExistsError, RunFiles, write_result
from core.vision.train.loop import STRATEGIES, partition_of, run_training
from core.vision.train.model import SceneClassifier, make_scaler, seed_everything, set_trainable
from core.vision.train.strategy import Context, Strategy
from core.vision.train.tta import choose_tta, mirror_average

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEVICE_TYPES",
    "FIXED_ON_RESUME",
    "MODES",
    "PARTIAL_FALLBACK",
    "PARTIAL_SEARCH",
    "SCHEDULES",
    "STRATEGIES",
    "TTA_CHOICES",
    "CheckpointError",
    "Context",
    "EpochOutput",
    "Hooks",
    "RunExistsError",
    "RunFiles",
    "SceneClassifier",
    "Strategy",
    "TrainConfig",
    "TrainingStopped",
    "best_of",
    "check_device",
    "choose_tta",
    "epoch_metrics",
    "evaluate",
    "load_checkpoint",
    "lr_at",
    "make_scaler",
    "make_scheduler",
    "mirror_average",
    "mode_defaults",
    "partial_defaults",
    "partition_of",
    "precision",
    "run_training",
    "seed_everything",
    "set_trainable",
    "train_one_epoch",
    "write_result",
]
