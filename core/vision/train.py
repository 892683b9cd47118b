"""Train a CNN scene classifier on a pretrained backbone (torchvision-reference style).

Modes:
  linear-probe  frozen backbone: features are extracted once (cached on disk) and only a
                linear head is trained on them, which takes seconds. The augmentation cannot
                apply to cached features, so it is off in this mode (the config says so).
  fine-tune     every layer is trained, with the augmentation.
  partial       the backbone's last stage and the head are trained; the rest stays frozen
                (its batch-norm statistics too).

A run is a folder (see `RunFiles`): config.json, metrics.jsonl (one line per finished
epoch), checkpoint_last.pt and checkpoint_best.pt (model, optimizer, lr_scheduler, epoch,
config, class names, history), eval.npz (logits, penultimate features and labels of the test
set for the last checkpoint) and result.json. Every file is written atomically; an
interrupted run resumes from checkpoint_last.pt and loses at most the epoch in progress.
"""

from __future__ import annotations

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

from core.evaluate import classification_result
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
from core.vision.backbones import IMAGENET, Backbone, create_backbone
from core.vision.features import (
    autocast,
    batches,
    cached_features,
    make_loader,
    pick_device,
)

log = logging.getLogger(__name__)

MODES = ("linear-probe", "fine-tune", "partial")
# Settings that define what a run's checkpoints contain; a resume must not change them.
FIXED_ON_RESUME = ("backbone", "weights", "mode", "image_size", "seed")


@dataclass
class TrainConfig:
    """The study's recipe by default: flip + 10 degree rotation, 224 px, ImageNet
    normalisation (the backbone's own), cross-entropy, AdamW lr 1e-3, StepLR(5, 0.1),
    20 epochs, batch 32."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = IMAGENET
    mode: str = "linear-probe"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    step_size: int = 5
    gamma: float = 0.1
    image_size: int = 224
    hflip: bool = True
    rotation: float = 10.0
    seed: int = 0
    workers: int | None = None
    device: str | None = None
    amp: bool = True  # bf16 autocast on CPU (where supported), fp16 on CUDA
    eval_batch_size: int = 64
    max_minutes: float | None = None  # stop after the epoch that passes this budget
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 16:
            raise ValueError("epochs and batch size must be >= 1, image size >= 16")
        if self.mode == "linear-probe":
            note = "linear-probe trains on cached features of un-augmented images: no flip/rotation"
            if note not in self.notes:
                self.notes = [*self.notes, note]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class SplitData:
    train_paths: list[str]
    train_labels: list[int]
    test_paths: list[str]
    test_labels: list[int]
    class_names: list[str]


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


@dataclass(frozen=True)
class RunFiles:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.root / "checkpoint_last.pt"

    @property
    def best(self) -> Path:
        return self.root / "checkpoint_best.pt"

    @property
    def eval(self) -> Path:
        return self.root / "eval.npz"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def tsne(self) -> Path:
        return self.root / "tsne.npz"


class SceneClassifier(nn.Module):
    """Backbone trunk + a linear head over its penultimate features."""

    def __init__(self, backbone: Backbone, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone.model
        self.head = nn.Linear(backbone.feature_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        return feats, self.head(feats)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_trainable(model: SceneClassifier, backbone: Backbone, mode: str) -> list[nn.Parameter]:
    """Freeze what the mode keeps fixed; return the parameters to optimise."""
    trunk = backbone.model.trunk
    for name, p in trunk.named_parameters():
        if mode == "fine-tune":
            p.requires_grad_(True)
        elif mode == "partial":
            p.requires_grad_(any(name.startswith(s + ".") for s in backbone.last_stage))
        else:
            p.requires_grad_(False)
    if backbone.model.imagenet_head is not None:
        backbone.model.imagenet_head.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def set_train_mode(model: SceneClassifier, backbone: Backbone, mode: str) -> None:
    """Training mode for the trained parts only: frozen layers keep their batch-norm stats."""
    model.train()
    if mode != "fine-tune":
        backbone.model.trunk.eval()
    if mode == "partial":
        for prefix in backbone.last_stage:
            backbone.model.trunk.get_submodule(prefix).train()


def _check_stop(hooks: Hooks) -> None:
    if hooks.should_stop is not None and hooks.should_stop():
        raise TrainingStopped("training stopped on request; resume to continue")


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp: bool,
    hooks: Hooks,
    stage: str,
) -> tuple[float, float]:
    """One pass over the loader; returns (mean loss, accuracy) on the training batches."""
    total_loss, correct, n = 0.0, 0, 0
    for x, y in batches(loader, device):
        _check_stop(hooks)
        with autocast(device, amp):
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
        if hooks.on_stage:
            hooks.on_stage(stage, n, len(loader.dataset))
    return total_loss / max(1, n), correct / max(1, n)


def evaluate(
    model: SceneClassifier,
    loader: Any,
    device: torch.device,
    amp: bool = True,
    hooks: Hooks | None = None,
    stage: str = "evaluating",
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, penultimate features) over the loader, in order."""
    model.eval().to(device, memory_format=torch.channels_last)
    logits, feats = [], []
    progress = (lambda d, t: hooks.on_stage(stage, d, t)) if hooks and hooks.on_stage else None
    with torch.inference_mode(), autocast(device, amp):
        for x, _ in batches(loader, device, progress):
            f, z = model.forward_with_features(x)
            feats.append(f.float().cpu().numpy())
            logits.append(z.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(feats)


def epoch_metrics(
    logits: np.ndarray, labels: Sequence[int], class_names: list[str]
) -> dict[str, float]:
    y = np.asarray(labels)
    res = classification_result(y, logits.argmax(1), class_names)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)))
    return {
        "test_loss": loss,
        "accuracy": res.accuracy,
        "macro_precision": res.macro_precision,
        "macro_recall": res.macro_recall,
        "macro_f1": res.macro_f1,
    }


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def _sync_metrics(files: RunFiles, history: list[dict[str, Any]]) -> None:
    """Make metrics.jsonl hold exactly the checkpoint's history (a crash between saving the
    checkpoint and appending its line, or an epoch logged after the checkpoint, is repaired;
    lines already right are left untouched)."""
    lines = read_jsonl(files.metrics)
    if [r.get("epoch") for r in lines] == [r["epoch"] for r in history]:
        return
    atomic_write_text(files.metrics, "".join(dumps_json(r, indent=None) + "\n" for r in history))


def _prepare_run(cfg: TrainConfig, files: RunFiles, resume: bool) -> dict[str, Any] | None:
    """Checkpoint to resume from (None: fresh start). Refuses to overwrite a run."""
    if files.last.exists():
        if not resume:
            raise RunExistsError(
                f"{files.root} already holds a run; pass --resume to continue it or choose "
                "another output folder"
            )
        ckpt = load_checkpoint(files.last)
        old = ckpt["config"]
        changed = [k for k in FIXED_ON_RESUME if old.get(k) != getattr(cfg, k)]
        if changed:
            raise ValueError(
                f"cannot resume {files.root} with different "
                + ", ".join(f"{k} ({old.get(k)!r} -> {getattr(cfg, k)!r})" for k in changed)
            )
        return ckpt
    if resume:
        log.warning("%s: nothing to resume, starting a new run", files.root)
    if files.metrics.exists():  # lines without a checkpoint belong to no resumable state
        files.metrics.unlink()
    return None


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
    files.root.mkdir(parents=True, exist_ok=True)
    ckpt = _prepare_run(cfg, files, resume)
    atomic_write_json(files.config, {**asdict(cfg), "class_names": data.class_names})
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    backbone = create_backbone(cfg.backbone, cfg.weights)
    model = SceneClassifier(backbone, len(data.class_names))
    params = set_trainable(model, backbone, cfg.mode)
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.step_size, cfg.gamma)
    history: list[dict[str, Any]] = []
    spent = 0.0  # training seconds of earlier sessions of this run
    best_acc = -1.0
    if ckpt is not None:
        _load_trained(model, ckpt)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["lr_scheduler"])
        history = list(ckpt["history"])
        spent = float(ckpt.get("train_seconds", 0.0))
        best_acc = max((r["accuracy"] for r in history), default=-1.0)
        _sync_metrics(files, history)
        log.info("resuming %s after epoch %d", files.root, ckpt["epoch"])

    start = time.perf_counter()
    timings: dict[str, float] = {}
    if cfg.mode == "linear-probe":
        step, finish = _linear_probe_steps(cfg, data, backbone, model, device, cache_dir, hooks,
                                           timings)  # fmt: skip
    else:
        step, finish = _network_steps(cfg, data, backbone, model, device, hooks)

    stopped_early = False
    criterion = nn.CrossEntropyLoss()
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        seed_everything(cfg.seed * 1000 + epoch)  # same shuffles/augmentation after a resume
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc, logits, feats = step(epoch, criterion, optimizer)
        scheduler.step()
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            **epoch_metrics(logits, data.test_labels, data.class_names),
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        elapsed = spent + time.perf_counter() - start
        state = {
            "model": _trained_state(model, cfg.mode),
            "trained": "head" if cfg.mode == "linear-probe" else "all",
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "config": asdict(cfg),
            "class_names": data.class_names,
            "history": history,
            "train_seconds": elapsed,
        }
        # Order matters for crash safety: checkpoint, then eval artefacts, then the log line
        # (_sync_metrics repairs a line lost between the first and the last).
        _save_checkpoint(files.last, state)
        _save_eval(files.eval, logits, feats, data, epoch)
        append_jsonl(files.metrics, record)
        if record["accuracy"] > best_acc:
            best_acc = record["accuracy"]
            _save_checkpoint(files.best, state)
        log.info("epoch %d: loss %.4f, test accuracy %.4f", epoch, train_loss, record["accuracy"])
        if hooks.on_epoch:
            hooks.on_epoch(record)
        if cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60 and epoch < cfg.epochs:
            log.warning("time budget of %.1f min spent after epoch %d", cfg.max_minutes, epoch)
            stopped_early = True
            break
    finish()
    train_seconds = spent + time.perf_counter() - start
    if ckpt is not None and len(history) == ckpt["epoch"]:
        train_seconds = spent  # nothing left to train
    return write_result(files, cfg, data.class_names, history, train_seconds, stopped_early,
                        backbone, timings, len(data.train_paths))  # fmt: skip


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


StepFn = Callable[[int, nn.Module, torch.optim.Optimizer], tuple[float, float, np.ndarray, Any]]


def _linear_probe_steps(
    cfg: TrainConfig,
    data: SplitData,
    backbone: Backbone,
    model: SceneClassifier,
    device: torch.device,
    cache_dir: str | Path | None,
    hooks: Hooks,
    timings: dict[str, float],
) -> tuple[StepFn, Callable[[], None]]:
    """Extract (or load cached) features once; each epoch trains the head on them."""
    feats: dict[str, np.ndarray] = {}
    for split, paths in (("train", data.train_paths), ("test", data.test_paths)):
        t0 = time.perf_counter()
        stage = f"features ({split})"
        progress = (lambda d, t, s=stage: hooks.on_stage(s, d, t)) if hooks.on_stage else None
        feats[split], hit = cached_features(
            backbone, paths, cfg.image_size, cache_dir, device, cfg.eval_batch_size,
            cfg.workers, cfg.amp, progress,
        )  # fmt: skip
        timings[f"features_{split}"] = time.perf_counter() - t0
        timings[f"features_{split}_cached"] = float(hit)
        _check_stop(hooks)
    x_train = torch.from_numpy(feats["train"]).to(device)
    y_train = torch.as_tensor(data.train_labels, device=device)
    x_test = torch.from_numpy(feats["test"]).to(device)
    head = model.head

    def step(epoch: int, criterion: nn.Module, optimizer: torch.optim.Optimizer):
        head.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(y_train), generator=gen).to(device)
        total, correct = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            _check_stop(hooks)
            idx = order[i : i + cfg.batch_size]
            logits = head(x_train[idx])
            loss = criterion(logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y_train[idx]).sum())
        head.eval()
        with torch.inference_mode():
            logits = head(x_test).float().cpu().numpy()
        n = len(y_train)
        return total / n, correct / n, logits, feats["test"]

    return step, lambda: None


def _network_steps(
    cfg: TrainConfig,
    data: SplitData,
    backbone: Backbone,
    model: SceneClassifier,
    device: torch.device,
    hooks: Hooks,
) -> tuple[StepFn, Callable[[], None]]:
    """Real training loops over images with the augmentation (fine-tune / partial)."""
    train_tf = backbone.preprocess(True, cfg.image_size, {"hflip": cfg.hflip,
                                                          "rotation": cfg.rotation})  # fmt: skip
    test_loader = make_loader(data.test_paths, data.test_labels,
                              backbone.preprocess(False, cfg.image_size), cfg.eval_batch_size,
                              workers=cfg.workers, device=device)  # fmt: skip

    def step(epoch: int, criterion: nn.Module, optimizer: torch.optim.Optimizer):
        loader = make_loader(data.train_paths, data.train_labels, train_tf, cfg.batch_size,
                             shuffle=True, workers=cfg.workers, seed=cfg.seed * 1000 + epoch,
                             device=device)  # fmt: skip
        set_train_mode(model, backbone, cfg.mode)
        loss, acc = train_one_epoch(model, loader, criterion, optimizer, device, cfg.amp, hooks,
                                    f"epoch {epoch}/{cfg.epochs}")  # fmt: skip
        logits, feats = evaluate(model, test_loader, device, cfg.amp, hooks, "evaluating")
        return loss, acc, logits, feats

    return step, lambda: None


def write_result(
    files: RunFiles,
    cfg: TrainConfig,
    class_names: list[str],
    history: list[dict[str, Any]],
    train_seconds: float,
    stopped_early: bool,
    backbone: Backbone,
    timings: dict[str, float] | None = None,
    n_train: int | None = None,
) -> dict[str, Any]:
    """Score the last checkpoint's test predictions (eval.npz) and write result.json."""
    ev = np.load(files.eval)
    y = ev["labels"]
    res = classification_result(y, ev["logits"].argmax(1), class_names,
                                timings={**(timings or {}), "train": train_seconds})  # fmt: skip
    best = max(history, key=lambda r: r["accuracy"])
    out = {
        **res.to_dict(),
        "backbone": cfg.backbone,
        "backbone_source": backbone.source,
        "mode": cfg.mode,
        "image_size": cfg.image_size,
        "epochs": history,
        "epochs_done": len(history),
        "epochs_planned": cfg.epochs,
        "evaluated_checkpoint": "last",
        "evaluated_epoch": int(ev["epoch"]),
        "best_epoch": best["epoch"],
        "best_accuracy": best["accuracy"],
        "train_seconds": train_seconds,
        "stopped_early": stopped_early,
        "n_train": n_train,
        "n_test": len(y),
        "run": str(files.root),
        "config": asdict(cfg),
    }
    atomic_write_json(files.result, out)
    return out


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    path = RunFiles(Path(run_dir)).result
    return read_json(path) if path.exists() else None


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The StepLR learning rate of an epoch (1-based), for plots and checks."""
    return cfg.lr * cfg.gamma ** math.floor((epoch - 1) / cfg.step_size)
