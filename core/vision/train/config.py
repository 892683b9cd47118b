"""A run's settings (`TrainConfig`), the mode defaults chosen on validation, and the
learning-rate schedule."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from core.data.split import DEFAULT_VAL_FRACTION
from core.io import read_json
from core.vision.backbones import BACKBONE_SPECS, IMAGENET

log = logging.getLogger(__name__)

MODES = ("linear-probe", "fine-tune", "partial")


SCHEDULES = ("step", "cosine")


# Test-time augmentation: "mirror" averages the class probabilities of a photo and its mirror
# image; "auto" lets validation choose it per epoch where it is free (partial mode, whose
# cache holds every image's mirror activations); other modes predict plainly.
TTA_CHOICES = ("auto", "none", "mirror")


# Settings that define what a run's checkpoints contain; a resume must not change them.
FIXED_ON_RESUME = ("backbone", "weights", "mode", "image_size", "seed", "unfreeze", "members")


PARTIAL_SEARCH = Path(__file__).resolve().parents[2] / "resources" / "partial_search.json"


# Partial-mode settings used when the search record is missing (what the search started from).
PARTIAL_FALLBACK = {
    "unfreeze": "head",
    "epochs": 4,
    "lr": 1e-3,
    "schedule": "cosine",
    "image_size": 224,
    "label_smoothing": 0.1,
}


RESNET_UNFREEZE = "layer4.0"


def partial_defaults(backbone: str = "efficientnet_lite0") -> dict[str, Any]:
    """The partial-mode settings chosen on validation (core/resources/partial_search.json,
    written by benchmarks/partial_search.py), else the fallback the search started from."""
    chosen = dict(PARTIAL_FALLBACK)
    chosen.update(_partial_record().get("chosen", {}))
    chosen.pop("backbone", None)  # the settings of one backbone; see partial_backbone
    if backbone == "resnet50":
        chosen["unfreeze"] = RESNET_UNFREEZE
    if backbone != "efficientnet_lite0":  # the search chose its image size for Lite0 only
        chosen["image_size"] = _resolution(backbone)
    return chosen


def _partial_record() -> dict[str, Any]:
    try:
        record = read_json(PARTIAL_SEARCH)
        if not isinstance(record.get("chosen"), dict):
            raise ValueError("no 'chosen' settings")
        return dict(record)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("no partial-mode search record (%s); using built-in defaults", exc)
        return {}


def partial_backbone() -> str | None:
    """The backbone(s) the partial-mode search chose on validation ("efficientnet_lite0,
    efficientnet_lite2": tails on both, probabilities averaged), or None when it names none:
    what `train --mode partial` trains when no --backbone is given and no ResNet-50 weights
    are on disk."""
    chosen = _partial_record().get("chosen", {})
    return str(chosen["backbone"]) if chosen.get("backbone") else None


def _resolution(backbone: str) -> int:
    """The backbone's own input resolution (its weights' config); 224 for unknown names, which
    TrainConfig's checks then refuse by name. A cross-backbone ensemble: the canvas that holds
    every member's input (core.vision.train.cross_model)."""
    if is_cross(backbone):
        return max(member_image_size(b) for b in backbone_names(backbone))
    spec = BACKBONE_SPECS.get(backbone)
    return spec.resolution if spec is not None else 224


def backbone_names(backbone: str) -> list[str]:
    """The backbones of a run: "efficientnet_lite0,efficientnet_lite2" names a cross-backbone
    ensemble (partial mode: tails on each backbone's own activation cache)."""
    return [b.strip() for b in backbone.split(",") if b.strip()]


def is_cross(backbone: str) -> bool:
    return len(backbone_names(backbone)) > 1


def member_image_size(backbone: str) -> int:
    """A cross-backbone member's input size: the partial-mode size of its backbone alone (the
    search's choice for Lite0, the weights' own resolution for the others)."""
    return int(partial_defaults(backbone)["image_size"])


def mode_defaults(mode: str, backbone: str = "efficientnet_lite0") -> dict[str, Any]:
    """Defaults that depend on the mode and the backbone (the image size: the backbone's own
    resolution; the rest are TrainConfig's field defaults)."""
    if mode == "partial":
        return partial_defaults(backbone)
    return {"image_size": _resolution(backbone)}


@dataclass
class TrainConfig:
    """The study's recipe by default: flip + 10 degree rotation, 224 px, ImageNet
    normalisation (the backbone's own), cross-entropy, AdamW lr 1e-3, StepLR(5, 0.1),
    20 epochs, batch 32. Mode "partial" takes its defaults from `partial_defaults`
    (use `TrainConfig.for_mode`)."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = IMAGENET
    mode: str = "linear-probe"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    schedule: str = "step"  # "step": StepLR(step_size, gamma); "cosine": to 0 over the epochs
    step_size: int = 5
    gamma: float = 0.1
    image_size: int = 224
    hflip: bool = True
    rotation: float = 10.0
    label_smoothing: float = 0.0
    unfreeze: str | None = None  # partial: the first trained unit (core.vision.activations)
    val_fraction: float = DEFAULT_VAL_FRACTION  # share of training images held out (no val/)
    patience: int | None = None  # stop after this many epochs without a better validation
    seed: int = 0
    workers: int | None = None
    device: str | None = None
    amp: bool = True  # mixed precision on CUDA (fp16 + GradScaler); the CPU stays float32
    eval_batch_size: int = 64
    max_minutes: float | None = None  # stop after the epoch that passes this budget
    tta: str = "auto"  # TTA_CHOICES; "auto": validation decides (partial mode)
    members: int = 1  # partial: tails trained side by side on the cached activations
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for problem in self.problems():
            raise ValueError(problem)
        if self.mode == "partial" and self.unfreeze is None:
            self.unfreeze = partial_defaults(self.backbone)["unfreeze"]
        note = {
            "linear-probe": "linear-probe trains on cached features of un-augmented images: "
            "no flip/rotation",
            "partial": "partial trains on cached activations: flip only, no rotation",
        }.get(self.mode)
        if note and note not in self.notes:
            self.notes = [*self.notes, note]

    def problems(self) -> list[str]:
        """Every out-of-range setting, as messages naming the option."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}"),
            (
                16 <= self.image_size <= 1024,
                f"--image-size must be between 16 and 1024 pixels, not {self.image_size}",
            ),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be positive, not {self.lr}"),
            (
                math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                f"--weight-decay must be >= 0, not {self.weight_decay}",
            ),
            (
                self.schedule in SCHEDULES,
                f"--schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}",
            ),
            (self.step_size >= 1, f"--step-size must be at least 1, not {self.step_size}"),
            (0 < self.gamma <= 1, f"--gamma must be in (0, 1], not {self.gamma}"),
            (0 <= self.rotation <= 180, f"--rotation must be 0-180 degrees, not {self.rotation}"),
            (
                0 <= self.label_smoothing < 1,
                f"--label-smoothing must be in [0, 1), not {self.label_smoothing}",
            ),
            (
                0 < self.val_fraction < 1,
                f"--val-fraction must be between 0 and 1, not {self.val_fraction}",
            ),
            (
                self.patience is None or self.patience >= 1,
                f"--patience must be at least 1, not {self.patience}",
            ),
            (
                self.workers is None or self.workers >= 0,
                f"--workers must be >= 0, not {self.workers}",
            ),
            (self.eval_batch_size >= 1, "eval batch size must be at least 1"),
            (
                1 <= self.members <= 16,
                f"--members must be between 1 and 16, not {self.members}",
            ),
            (
                self.members == 1 or self.mode == "partial",
                "--members above 1 needs --mode partial (tails on cached activations)",
            ),
            (
                not is_cross(self.backbone) or self.mode == "partial",
                "several backbones (--backbone a,b) need --mode partial (tails on cached "
                "activations of each)",
            ),
            (
                len(set(backbone_names(self.backbone))) == len(backbone_names(self.backbone)),
                f"--backbone {self.backbone}: each backbone once (--members sets the tails of "
                "each)",
            ),
            (
                not is_cross(self.backbone)
                or all(b in BACKBONE_SPECS for b in backbone_names(self.backbone)),
                f"--backbone {self.backbone}: unknown backbone; choose from "
                f"{', '.join(BACKBONE_SPECS)}",
            ),
            (
                self.tta in TTA_CHOICES,
                f"--tta must be one of {', '.join(TTA_CHOICES)}, not {self.tta!r}",
            ),
            (
                self.tta != "mirror" or self.mode == "partial",
                "--tta mirror needs --mode partial (its cache holds the mirror images)",
            ),
            (
                self.max_minutes is None or self.max_minutes > 0,
                f"--max-minutes must be positive, not {self.max_minutes}",
            ),
        ]
        return [msg for ok, msg in checks if not ok]

    @classmethod
    def for_mode(cls, mode: str = "linear-probe", **settings: Any) -> TrainConfig:
        """A config whose unset settings take the mode's defaults (None counts as unset)."""
        given = {k: v for k, v in settings.items() if v is not None}
        return cls(
            mode=mode, **{**mode_defaults(mode, given.get("backbone", cls.backbone)), **given}
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of an epoch (1-based) under the config's schedule."""
    if cfg.schedule == "cosine":
        return cfg.lr * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs)) / 2
    return cfg.lr * cfg.gamma ** math.floor((epoch - 1) / cfg.step_size)
