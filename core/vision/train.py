"""Train a CNN scene classifier on a pretrained backbone (torchvision-reference style).

Modes:
  linear-probe  frozen backbone: features are extracted once (cached on disk) and only a
                linear head is trained on them, which takes seconds. The augmentation cannot
                apply to cached features, so it is off in this mode (the config says so).
  partial       the frozen part of the backbone runs once per image and once per mirrored
                image; its activations are cached on disk (core.vision.activations) and every
                epoch trains the unfrozen last block(s) and the head on them: about a minute
                an epoch on a CPU instead of twenty. Flips are the augmentation (rotation
                cannot apply to cached activations). How much to unfreeze, the epochs, the
                learning rate and the number of tails (`members`: copies of the tail trained
                side by side on the one cache, their probabilities averaged) default to the
                choice made on validation by benchmarks/partial_search.py
                (core/resources/partial_search.json). The cache holds every image's mirror
                activations, so validation also decides, epoch by epoch, whether predictions
                average each photo with its mirror image (`tta`); evaluate and predict do
                what the chosen checkpoint's epoch did.
  fine-tune     every layer is trained on images, with the augmentation.

Model selection uses validation only: every run holds out a validation set (the data set's
`val/` folder, else a seeded stratified share of the training images, core.data.split).
checkpoint_best.pt is the epoch with the best validation accuracy, early stopping
(`patience`) watches validation, and the test set is only scored for reporting.

A run is a folder (see `RunFiles`): config.json, metrics.jsonl (one line per finished
epoch), checkpoint_last.pt and checkpoint_best.pt, eval.npz (test logits, penultimate
features and labels of the validation-selected checkpoint) and result.json. Checkpoints hold
tensors and plain values only (configs and history as JSON text) and are read with
`torch.load(weights_only=True)`: a checkpoint that needs anything else is refused
(`CheckpointError`), so opening a shared run never runs code from it. Every file is written
atomically; an interrupted run resumes from checkpoint_last.pt (model, optimizer, scheduler,
gradient scaler, epoch) and loses at most the epoch in progress.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.data.split import DEFAULT_VAL_FRACTION, Partition, SplitData, make_partition
from core.io import (
    append_jsonl,
    atomic_path,
    atomic_save_npz,
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    read_json,
    read_jsonl,
)
from core.metrics import classification_result
from core.vision.backbones import (
    IMAGENET,
    Backbone,
    BackboneWeightsError,
    TorchFileError,
    create_backbone,
    load_tensors_file,
)
from core.vision.features import batches, cached_features, make_loader

log = logging.getLogger(__name__)

MODES = ("linear-probe", "fine-tune", "partial")
SCHEDULES = ("step", "cosine")
# Test-time augmentation: "mirror" averages the class probabilities of a photo and its mirror
# image; "auto" lets validation choose it per epoch where it is free (partial mode, whose
# cache holds every image's mirror activations); other modes predict plainly.
TTA_CHOICES = ("auto", "none", "mirror")
DEVICE_TYPES = ("cpu", "cuda", "mps")
CHECKPOINT_FORMAT = 2
# Settings that define what a run's checkpoints contain; a resume must not change them.
FIXED_ON_RESUME = ("backbone", "weights", "mode", "image_size", "seed", "unfreeze", "members")
PARTIAL_SEARCH = Path(__file__).resolve().parents[1] / "resources" / "partial_search.json"
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


class CheckpointError(ValueError):
    """A checkpoint that is unreadable, truncated, foreign, or holds more than tensors."""


def partial_defaults(backbone: str = "efficientnet_lite0") -> dict[str, Any]:
    """The partial-mode settings chosen on validation (core/resources/partial_search.json,
    written by benchmarks/partial_search.py), else the fallback the search started from."""
    chosen = dict(PARTIAL_FALLBACK)
    try:
        record = read_json(PARTIAL_SEARCH)
        chosen.update(record["chosen"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("no partial-mode search record (%s); using built-in defaults", exc)
    if backbone == "resnet50":
        chosen["unfreeze"] = RESNET_UNFREEZE
    return chosen


def mode_defaults(mode: str, backbone: str = "efficientnet_lite0") -> dict[str, Any]:
    """Defaults that depend on the mode (the rest are TrainConfig's field defaults)."""
    if mode == "partial":
        return partial_defaults(backbone)
    return {}


def check_device(name: str | None) -> torch.device:
    """The device to train on: `name` (validated), else cuda when available, else cpu."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use cpu or cuda (cuda:N)") from None
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"unsupported device {name!r}; use cpu or cuda (cuda:N)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for but no CUDA GPU is available; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for but MPS is not available; use cpu")
    return dev


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


@dataclass
class Hooks:
    """Callbacks for progress bars, live curves and a stop button."""

    on_stage: Callable[[str, int, int], None] | None = None  # (stage, done, total)
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # after the epoch is saved
    should_stop: Callable[[], bool] | None = None  # checked between batches


class TrainingStopped(Exception):
    """Stopped on request; the run resumes from its last checkpoint."""


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


class SceneClassifier(nn.Module):
    """Backbone trunk + a linear head over its penultimate features.

    With `members` > 1 (partial mode) it is an ensemble of tails on one frozen trunk: the
    backbone's own tail (the units from `split` on) and head are member 0, and `extra` holds
    members 1.. as copies of that tail with their own heads. The frozen part runs once; the
    prediction is the mean of the members' class probabilities (returned as its log, so
    argmax and cross-entropy read it as logits) and the features are the members' mean."""

    def __init__(
        self, backbone: Backbone, n_classes: int, members: int = 1, split: str | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone.model
        self.head = nn.Linear(backbone.feature_dim, n_classes)
        self.extra = nn.ModuleList()
        self._parts: tuple[nn.Module, nn.Module] | None = None  # not registered: shared modules
        if members > 1:
            from core.vision.activations import split_trunk

            if split is None:
                raise ValueError("an ensemble of tails needs the split point (unfreeze)")
            frozen, tail = split_trunk(backbone, split)
            self._parts = (frozen, tail)
            for _ in range(members - 1):
                self.extra.append(
                    nn.Sequential(copy.deepcopy(tail), nn.Linear(backbone.feature_dim, n_classes))
                )

    @property
    def members(self) -> int:
        return 1 + len(self.extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._parts is None:
            feats = self.backbone(x)
            return feats, self.head(feats)
        return self.tails_forward(self._parts[0](x))

    def member_forward(self, i: int, a: torch.Tensor) -> torch.Tensor:
        """Member i's logits from the frozen part's activations `a` (training)."""
        if i == 0:
            assert self._parts is not None
            return self.head(self._parts[1](a))
        return self.extra[i - 1](a)

    def tails_forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean features, log of the mean class probability) of every member from `a`."""
        assert self._parts is not None
        feats = [self._parts[1](a)]
        logps = [self.head(feats[0]).float().log_softmax(1)]
        for member in self.extra:
            f = member[0](a)
            feats.append(f)
            logps.append(member[1](f).float().log_softmax(1))
        logp = torch.logsumexp(torch.stack(logps), 0) - math.log(len(logps))
        return torch.stack(feats).mean(0), logp


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def precision(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA (with a GradScaler in training); float32 elsewhere: bf16 autocast
    does not pay on this project's CPUs, and float32 keeps cached and live results equal."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def make_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA (small gradients would underflow); a no-op elsewhere."""
    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")


def set_trainable(
    model: SceneClassifier, backbone: Backbone, mode: str, unfreeze: str | None = None
) -> list[nn.Parameter]:
    """Freeze what the mode keeps fixed; return the parameters to optimise."""
    trunk = backbone.model.trunk
    trunk.requires_grad_(mode == "fine-tune")
    if mode == "partial":
        from core.vision.activations import split_trunk

        _, tail = split_trunk(backbone, unfreeze or partial_defaults(backbone.name)["unfreeze"])
        tail.requires_grad_(True)
    if backbone.model.imagenet_head is not None:
        backbone.model.imagenet_head.requires_grad_(False)
    model.head.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _check_stop(hooks: Hooks) -> None:
    if hooks.should_stop is not None and hooks.should_stop():
        raise TrainingStopped("training stopped on request; resume to continue")


def _optimise(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@dataclass
class _Tally:
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
    tally = _Tally()
    for x, y in batches(loader, device):
        _check_stop(hooks)
        with precision(device, amp):
            logits = model(x)
        loss = criterion(logits.float(), y)
        _optimise(loss, optimizer, scaler)
        n = tally.add(loss, logits, y)
        if hooks.on_stage:
            hooks.on_stage(stage, n, len(loader.dataset))
    return tally.means()


def evaluate(
    model: SceneClassifier,
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


def mirror_average(logits: np.ndarray, mirror_logits: np.ndarray) -> np.ndarray:
    """Log of the mean class probability of a photo and its mirror image (usable as logits:
    argmax and cross-entropy see the averaged probabilities)."""
    a = torch.from_numpy(np.asarray(logits, np.float32)).log_softmax(1)
    b = torch.from_numpy(np.asarray(mirror_logits, np.float32)).log_softmax(1)
    return (torch.logaddexp(a, b) - math.log(2)).numpy()


def epoch_metrics(
    logits: np.ndarray, labels: Sequence[int], class_names: list[str], prefix: str = ""
) -> dict[str, float]:
    """Accuracy, loss and macro scores; test keys are unprefixed (accuracy, test_loss...),
    validation keys carry "val_"."""
    y = np.asarray(labels)
    res = classification_result(y, logits.argmax(1), class_names)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)))
    return {
        f"{prefix or 'test_'}loss": loss,
        f"{prefix}accuracy": res.accuracy,
        f"{prefix}macro_precision": res.macro_precision,
        f"{prefix}macro_recall": res.macro_recall,
        f"{prefix}macro_f1": res.macro_f1,
    }


# --- checkpoints -----------------------------------------------------------------------------


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _checkpoint_state(
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
        "model": _trained_state(model, cfg.mode),
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


def _sync_metrics(files: RunFiles, history: list[dict[str, Any]]) -> None:
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


def _prepare_run(
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


def partition_of(data: SplitData, cfg: TrainConfig) -> Partition:
    return make_partition(
        data.train_paths,
        data.train_labels,
        data.val_paths,
        data.val_labels,
        cfg.val_fraction,
        cfg.seed,
        data.val_source,
    )


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma)


def _better(record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Validation decides: higher accuracy, then lower loss."""
    if best is None:
        return True
    a = (record["val_accuracy"], -record["val_loss"])
    return a > (best["val_accuracy"], -best["val_loss"])


def best_of(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    best = None
    for r in history:
        if "val_accuracy" in r and _better(r, best):
            best = r
    return best


def run_training(
    cfg: TrainConfig,
    data: SplitData,
    out_dir: str | Path,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run in `out_dir`; return the result dict (also in result.json)."""
    hooks = hooks or Hooks()
    files = RunFiles(Path(out_dir))
    part = partition_of(data, cfg)
    ckpt = _prepare_run(cfg, files, resume, data.class_names, part.key())
    device = check_device(cfg.device)
    seed_everything(cfg.seed)
    try:
        backbone = create_backbone(cfg.backbone, cfg.weights)
    except BackboneWeightsError:
        raise
    except RuntimeError as exc:  # a state dict of another network: say so in one line
        first = " ".join(str(exc).split())[:240]  # torch's first line alone says nothing
        raise BackboneWeightsError(
            f"weights {cfg.weights} do not fit {cfg.backbone}: {first}"
        ) from None
    model = SceneClassifier(backbone, len(data.class_names), cfg.members, cfg.unfreeze)
    params = set_trainable(model, backbone, cfg.mode, cfg.unfreeze)
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(cfg, optimizer)
    scaler = make_scaler(device, cfg.amp)
    history: list[dict[str, Any]] = []
    spent = 0.0  # training seconds of earlier sessions of this run
    if ckpt is not None:
        _load_trained(model, ckpt)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["lr_scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt["history"])
        spent = float(ckpt.get("train_seconds", 0.0))
    # Everything is validated; only now does the run folder change.
    files.root.mkdir(parents=True, exist_ok=True)
    if ckpt is None and files.metrics.exists():  # lines without a checkpoint: no resumable state
        files.metrics.unlink()
    atomic_write_json(
        files.config,
        {
            **asdict(cfg),
            "class_names": data.class_names,
            "validation": part.source,
            "n_val": len(part.val_idx),
            "selected_by": "validation",
        },
    )
    if ckpt is not None:
        _sync_metrics(files, history)
        log.info("resuming %s after epoch %d", files.root, ckpt["epoch"])

    start = time.perf_counter()
    ctx = _Context(cfg, data, part, backbone, model, device, hooks, scaler, cache_dir)
    steps = {"linear-probe": _linear_probe_steps, "partial": _partial_steps}
    step = steps.get(cfg.mode, _network_steps)(ctx)

    best = best_of(history)
    since_best = 0 if best is None else history[-1]["epoch"] - best["epoch"]
    stop_reason = ""
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        if cfg.patience is not None and since_best >= cfg.patience:
            stop_reason = f"no better validation accuracy in {cfg.patience} epochs"
            break
        t0 = time.perf_counter()
        seed_everything(cfg.seed * 1000 + epoch)  # same shuffles/augmentation after a resume
        lr = optimizer.param_groups[0]["lr"]
        out = step(epoch, criterion, optimizer)
        scheduler.step()
        tta, out = choose_tta(cfg.tta, out, part.val_labels, data.test_labels)
        record = {
            "epoch": epoch,
            "train_loss": out.train_loss,
            "train_accuracy": out.train_accuracy,
            **epoch_metrics(out.val_logits, part.val_labels, data.class_names, "val_"),
            **epoch_metrics(out.test_logits, data.test_labels, data.class_names),
            **tta,
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        elapsed = spent + time.perf_counter() - start
        state = _checkpoint_state(
            model,
            cfg,
            optimizer,
            scheduler,
            scaler,
            epoch,
            data.class_names,
            history,
            elapsed,
            part.key(),
        )
        improved = _better(record, best)
        # Order matters for crash safety: checkpoints, then eval artefacts, then the log line
        # (_sync_metrics repairs a line lost between the first and the last).
        _save_checkpoint(files.last, state)
        if improved:
            best, since_best = record, 0
            _save_checkpoint(files.best, state)
            _save_eval(files.eval, out.test_logits, out.test_features, data, epoch)
        else:
            since_best += 1
        append_jsonl(files.metrics, record)
        log.info(
            "epoch %d: loss %.4f, validation accuracy %.4f, test accuracy %.4f",
            epoch,
            out.train_loss,
            record["val_accuracy"],
            record["accuracy"],
        )
        if hooks.on_epoch:
            hooks.on_epoch(record)
        if cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60 and epoch < cfg.epochs:
            log.warning("time budget of %.1f min spent after epoch %d", cfg.max_minutes, epoch)
            stop_reason = f"time budget of {cfg.max_minutes:g} min spent"
            break
    train_seconds = spent + time.perf_counter() - start
    if ckpt is not None and len(history) == ckpt["epoch"]:
        train_seconds = spent  # nothing left to train
    return write_result(
        files,
        cfg,
        data.class_names,
        history,
        train_seconds,
        stop_reason,
        backbone,
        ctx.timings,
        part,
    )


def choose_tta(
    setting: str, out: EpochOutput, val_labels: Sequence[int], test_labels: Sequence[int]
) -> tuple[dict[str, Any], EpochOutput]:
    """Plain or mirror-averaged predictions for an epoch: `setting` "mirror" or "none", or
    "auto": the mirror average when it is more accurate on validation (ties stay plain).
    Returns the record fields (the choice and both validation figures; the test figures
    report) and the epoch output with the chosen logits."""
    if out.val_mirror is None or out.test_mirror is None or setting == "none":
        return {"tta": "none"}, out
    val_avg = mirror_average(out.val_logits, out.val_mirror)
    test_avg = mirror_average(out.test_logits, out.test_mirror)

    def acc(logits: np.ndarray, labels: Sequence[int]) -> float:
        return float((logits.argmax(1) == np.asarray(labels)).mean())

    fields_ = {
        "val_accuracy_plain": acc(out.val_logits, val_labels),
        "val_accuracy_mirror": acc(val_avg, val_labels),
        "accuracy_plain": acc(out.test_logits, test_labels),
        "accuracy_mirror": acc(test_avg, test_labels),
    }
    use = setting == "mirror" or fields_["val_accuracy_mirror"] > fields_["val_accuracy_plain"]
    if not use:
        return {"tta": "none", **fields_}, out
    chosen = EpochOutput(out.train_loss, out.train_accuracy, val_avg, test_avg, out.test_features)
    return {"tta": "mirror", **fields_}, chosen


def _trained_state(model: SceneClassifier, mode: str) -> dict[str, torch.Tensor]:
    # A linear probe changes only the head; the frozen backbone is rebuilt from its weights.
    module = model.head if mode == "linear-probe" else model
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _load_trained(model: SceneClassifier, ckpt: dict[str, Any]) -> None:
    target = model.head if ckpt["trained"] == "head" else model
    target.load_state_dict(ckpt["model"], strict=True)


def _save_eval(path: Path, logits: np.ndarray, feats: np.ndarray, data: SplitData, epoch: int):
    atomic_save_npz(
        path,
        logits=logits.astype(np.float32),
        features=feats.astype(np.float32),
        labels=np.asarray(data.test_labels, dtype=np.int64),
        paths=np.asarray(data.test_paths, dtype=str),
        epoch=np.asarray(epoch),
    )


@dataclass
class EpochOutput:
    train_loss: float
    train_accuracy: float
    val_logits: np.ndarray
    test_logits: np.ndarray
    test_features: np.ndarray
    # The mirror images' logits, where a mode has them for free (partial); None elsewhere.
    val_mirror: np.ndarray | None = None
    test_mirror: np.ndarray | None = None


StepFn = Callable[[int, nn.Module, torch.optim.Optimizer], EpochOutput]


@dataclass
class _Context:
    """What every mode's epoch step works on, built once by `run_training`."""

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


def _progress(hooks: Hooks, stage: str) -> Callable[[int, int], None] | None:
    return (lambda d, t: hooks.on_stage(stage, d, t)) if hooks.on_stage else None


def _cache_splits(
    ctx: _Context, kind: str, extract: Callable[..., tuple[np.ndarray, bool]]
) -> dict[str, np.ndarray]:
    """`extract(paths, progress)` over the training pool (train + validation: one cache entry,
    which any validation split of the same files reuses) and the test images, timed."""
    out: dict[str, np.ndarray] = {}
    for split, paths in (("train", ctx.part.paths), ("test", ctx.data.test_paths)):
        t0 = time.perf_counter()
        out[split], hit = extract(paths, _progress(ctx.hooks, f"{kind} ({split})"))
        ctx.timings[f"{kind}_{split}"] = time.perf_counter() - t0
        ctx.timings[f"{kind}_{split}_cached"] = float(hit)
        _check_stop(ctx.hooks)
    return out


def _linear_probe_steps(ctx: _Context) -> StepFn:
    """Extract (or load cached) features once; each epoch trains the head on them."""
    cfg, part, device, hooks = ctx.cfg, ctx.part, ctx.device, ctx.hooks
    feats = _cache_splits(
        ctx,
        "features",
        lambda paths, progress: cached_features(
            ctx.backbone,
            paths,
            cfg.image_size,
            ctx.cache_dir,
            device,
            cfg.eval_batch_size,
            cfg.workers,
            cfg.amp and device.type == "cuda",
            progress,
        ),
    )
    pool = torch.from_numpy(feats["train"]).to(device)
    x_train = pool[torch.as_tensor(part.train_idx, device=device)]
    x_val = pool[torch.as_tensor(part.val_idx, device=device)]
    y_train = torch.as_tensor(part.train_labels, device=device)
    x_test = torch.from_numpy(feats["test"]).to(device)
    head = ctx.model.head

    def step(epoch: int, criterion: nn.Module, optimizer: torch.optim.Optimizer) -> EpochOutput:
        head.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(y_train), generator=gen).to(device)
        tally = _Tally()
        for i in range(0, len(order), cfg.batch_size):
            _check_stop(hooks)
            idx = order[i : i + cfg.batch_size]
            logits = head(x_train[idx])
            loss = criterion(logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            tally.add(loss, logits, y_train[idx])
        head.eval()
        with torch.inference_mode():
            val = head(x_val).float().cpu().numpy()
            test = head(x_test).float().cpu().numpy()
        return EpochOutput(*tally.means(), val, test, feats["test"])

    return step


def _partial_steps(ctx: _Context) -> StepFn:
    """Cache the frozen part's activations (photo + mirror) once; each epoch trains the tail
    and the head on them, one randomly chosen copy of each training image per epoch."""
    from core.vision.activations import CACHE_BATCH, cached_activations, split_trunk

    cfg, part, device, hooks = ctx.cfg, ctx.part, ctx.device, ctx.hooks
    data, model = ctx.data, ctx.model
    unfreeze = cfg.unfreeze or partial_defaults(cfg.backbone)["unfreeze"]
    _, tail = split_trunk(ctx.backbone, unfreeze)
    acts = _cache_splits(
        ctx,
        "activations",
        lambda paths, progress: cached_activations(
            ctx.backbone,
            unfreeze,
            paths,
            cfg.image_size,
            ctx.cache_dir,
            device,
            cfg.eval_batch_size if device.type == "cuda" else CACHE_BATCH,
            cfg.workers,
            progress,
            hooks.should_stop,
        ),
    )
    pool, test = acts["train"], acts["test"]
    y_all = torch.as_tensor(part.labels)
    train_idx = part.train_idx

    def forward_rows(rows: np.ndarray, flips: np.ndarray | None = None) -> torch.Tensor:
        x = pool[rows, flips] if flips is not None else pool[rows, 0]
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    def infer(arr: np.ndarray, rows: np.ndarray, view: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(logits, features) of the photos (view 0) or their mirror images (view 1)."""
        tail.eval()
        model.head.eval()
        model.extra.eval()
        feats, logits = [], []
        with torch.inference_mode(), precision(device, cfg.amp):
            for i in range(0, len(rows), cfg.eval_batch_size):
                r = rows[i : i + cfg.eval_batch_size]
                x = torch.from_numpy(np.ascontiguousarray(arr[r, view])).to(device)
                x = x.contiguous(memory_format=torch.channels_last)
                if model.members > 1:
                    f, z = model.tails_forward(x)
                else:
                    f = tail(x)
                    z = model.head(f)
                feats.append(f.float().cpu().numpy())
                logits.append(z.float().cpu().numpy())
        return np.concatenate(logits), np.concatenate(feats)

    def draws(epoch: int, member: int) -> tuple[np.ndarray, np.ndarray]:
        """Each member's own shuffle and mirror choices (member 0: those of a single tail)."""
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 7919 * member)
        order = torch.randperm(len(train_idx), generator=gen).numpy()
        flips = (
            torch.randint(0, 2, (len(train_idx),), generator=gen).numpy()
            if cfg.hflip
            else np.zeros(len(train_idx), dtype=np.int64)
        )
        return order, flips

    def step(epoch: int, criterion: nn.Module, optimizer: torch.optim.Optimizer) -> EpochOutput:
        plans = [draws(epoch, m) for m in range(model.members)]
        tail.train()
        model.head.train()
        model.extra.train()
        tally = _Tally()
        stage = f"epoch {epoch}/{cfg.epochs}"
        for i in range(0, len(train_idx), cfg.batch_size):
            for member, (order, flips) in enumerate(plans):
                _check_stop(hooks)
                pick = order[i : i + cfg.batch_size]
                rows = train_idx[pick]
                # Sorted rows read the memory-mapped cache in file order; labels follow them.
                srt = np.argsort(rows)
                rows, fl = rows[srt], flips[pick][srt]
                x = forward_rows(rows, fl).contiguous(memory_format=torch.channels_last)
                y = y_all[torch.from_numpy(rows)].to(device)
                with precision(device, cfg.amp):
                    logits = (
                        model.member_forward(member, x)
                        if model.members > 1
                        else model.head(tail(x))
                    )
                loss = criterion(logits.float(), y)
                _optimise(loss, optimizer, ctx.scaler)
                n = tally.add(loss, logits, y)
                if hooks.on_stage:
                    hooks.on_stage(stage, n, len(train_idx) * model.members)
        test_rows = np.arange(len(data.test_paths))
        val_logits, _ = infer(pool, part.val_idx)
        test_logits, test_feats = infer(test, test_rows)
        mirrors: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        if cfg.tta != "none":
            mirrors = (infer(pool, part.val_idx, 1)[0], infer(test, test_rows, 1)[0])
        return EpochOutput(*tally.means(), val_logits, test_logits, test_feats, *mirrors)

    return step


def _network_steps(ctx: _Context) -> StepFn:
    """Real training loops over images with the augmentation (fine-tune)."""
    cfg, part, device, model = ctx.cfg, ctx.part, ctx.device, ctx.model
    train_tf = ctx.backbone.preprocess(
        True, cfg.image_size, {"hflip": cfg.hflip, "rotation": cfg.rotation}
    )
    eval_tf = ctx.backbone.preprocess(False, cfg.image_size)

    def eval_loader(paths: list[str], labels: list[int]) -> Any:
        return make_loader(
            paths, labels, eval_tf, cfg.eval_batch_size, workers=cfg.workers, device=device
        )

    val_loader = eval_loader(part.val_paths, part.val_labels)
    test_loader = eval_loader(ctx.data.test_paths, ctx.data.test_labels)

    def step(epoch: int, criterion: nn.Module, optimizer: torch.optim.Optimizer) -> EpochOutput:
        loader = make_loader(
            part.train_paths,
            part.train_labels,
            train_tf,
            cfg.batch_size,
            shuffle=True,
            workers=cfg.workers,
            seed=cfg.seed * 1000 + epoch,
            device=device,
        )
        model.train()
        loss, acc = train_one_epoch(
            model,
            loader,
            criterion,
            optimizer,
            device,
            cfg.amp,
            ctx.hooks,
            f"epoch {epoch}/{cfg.epochs}",
            ctx.scaler,
        )
        val_logits, _ = evaluate(model, val_loader, device, cfg.amp, ctx.hooks, "validating")
        logits, feats = evaluate(model, test_loader, device, cfg.amp, ctx.hooks, "testing")
        return EpochOutput(loss, acc, val_logits, logits, feats)

    return step


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
    """Score the validation-selected checkpoint's test predictions (eval.npz) and write
    result.json. The test figures report; they chose nothing."""
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
        "best_accuracy": best["accuracy"],  # test accuracy of the validation-chosen epoch
        "last_epoch_accuracy": history[-1]["accuracy"],
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


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of an epoch (1-based) under the config's schedule."""
    if cfg.schedule == "cosine":
        return cfg.lr * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs)) / 2
    return cfg.lr * cfg.gamma ** math.floor((epoch - 1) / cfg.step_size)
