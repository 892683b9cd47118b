"""`run_training`: build the model, train epoch by epoch on the mode's strategy (each epoch
scored on validation alone, which chooses the best checkpoint and stops early), checkpoint
every epoch (an interrupted run resumes losing at most the epoch in progress), then score the
test set once, for the checkpoint validation chose, and write the result."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.data.split import Partition, SplitData, make_partition
from core.io import append_jsonl
from core.vision.backbones import Backbone, BackboneWeightsError, create_backbone
from core.vision.device import check_device
from core.vision.train.checkpoint import (
    checkpoint_state,
    load_checkpoint,
    load_trained_state,
    save_checkpoint,
)
from core.vision.train.config import TrainConfig, is_cross, make_scheduler
from core.vision.train.engine import Hooks, best_of, better, epoch_metrics
from core.vision.train.files import (
    RunFiles,
    prepare_run,
    save_eval,
    sync_metrics,
    write_config,
    write_result,
)
from core.vision.train.fine_tune import fine_tune
from core.vision.train.linear_probe import linear_probe
from core.vision.train.model import SceneClassifier, make_scaler, seed_everything, set_trainable
from core.vision.train.partial import partial
from core.vision.train.strategy import Context, Strategy
from core.vision.train.tta import choose_tta

log = logging.getLogger(__name__)

# One strategy per mode; looked up when a run starts (tests replace one with a script).
STRATEGIES = {"linear-probe": linear_probe, "partial": partial, "fine-tune": fine_tune}


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


def _backbone(cfg: TrainConfig) -> Backbone:
    try:
        return create_backbone(cfg.backbone, cfg.weights)
    except BackboneWeightsError:
        raise
    except RuntimeError as exc:  # a state dict of another network: say so in one line
        first = " ".join(str(exc).split())[:240]  # torch's first line alone says nothing
        raise BackboneWeightsError(
            f"weights {cfg.weights} do not fit {cfg.backbone}: {first}"
        ) from None


@dataclass
class _Session:
    """One call of run_training: the run's state between epochs."""

    ctx: Context
    files: RunFiles
    optimizer: torch.optim.Optimizer
    scheduler: Any
    history: list[dict[str, Any]]
    spent: float  # training seconds of earlier sessions of this run
    start: float

    def elapsed(self) -> float:
        return self.spent + time.perf_counter() - self.start


def _open(
    cfg: TrainConfig,
    data: SplitData,
    part: Partition,
    files: RunFiles,
    ckpt: dict | None,
    hooks: Hooks,
    cache_dir: str | Path | None,
) -> _Session:
    """Model, optimizer and scheduler, restored from `ckpt` when resuming; the run folder's
    config.json written (everything is validated by now)."""
    device = check_device(cfg.device)
    seed_everything(cfg.seed)
    backbone = _backbone(cfg)
    model = SceneClassifier(backbone, len(data.class_names), cfg.members, cfg.unfreeze)
    params = set_trainable(model, backbone, cfg.mode, cfg.unfreeze)
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(cfg, optimizer)
    scaler = make_scaler(device, cfg.amp)
    history: list[dict[str, Any]] = []
    spent = 0.0
    if ckpt is not None:
        load_trained_state(model, ckpt)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["lr_scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt["history"])
        spent = float(ckpt.get("train_seconds", 0.0))
    files.root.mkdir(parents=True, exist_ok=True)
    if ckpt is None and files.metrics.exists():  # lines without a checkpoint: no resumable state
        files.metrics.unlink()
    write_config(files, cfg, data, part)
    if ckpt is not None:
        sync_metrics(files, history)
        log.info("resuming %s after epoch %d", files.root, ckpt["epoch"])
    ctx = Context(cfg, data, part, backbone, model, device, hooks, scaler, cache_dir)
    return _Session(ctx, files, optimizer, scheduler, history, spent, time.perf_counter())


def _epoch(s: _Session, strategy: Strategy, epoch: int, criterion: nn.Module) -> dict[str, Any]:
    """Train one epoch, score it on validation, checkpoint it; returns its record."""
    cfg, part = s.ctx.cfg, s.ctx.part
    t0 = time.perf_counter()
    seed_everything(cfg.seed * 1000 + epoch)  # same shuffles/augmentation after a resume
    lr = s.optimizer.param_groups[0]["lr"]
    out = strategy.step(epoch, criterion, s.optimizer)
    s.scheduler.step()
    tta, out = choose_tta(cfg.tta, out, part.val_labels)
    record = {
        "epoch": epoch,
        "train_loss": out.train_loss,
        "train_accuracy": out.train_accuracy,
        **epoch_metrics(out.val_logits, part.val_labels, s.ctx.data.class_names),
        **tta,
        "lr": lr,
        "seconds": time.perf_counter() - t0,
    }
    improved = better(record, best_of(s.history))
    s.history.append(record)
    state = checkpoint_state(
        s.ctx.model,
        cfg,
        s.optimizer,
        s.scheduler,
        s.ctx.scaler,
        epoch,
        s.ctx.data.class_names,
        s.history,
        s.elapsed(),
        part.key(),
    )
    # Order matters for crash safety: checkpoints, then the log line (sync_metrics repairs
    # a line lost between the two).
    save_checkpoint(s.files.last, state)
    if improved:
        save_checkpoint(s.files.best, state)
    append_jsonl(s.files.metrics, record)
    log.info(
        "epoch %d: loss %.4f, validation accuracy %.4f",
        epoch,
        out.train_loss,
        record["val_accuracy"],
    )
    return record


def _stop_reason(cfg: TrainConfig, history: list[dict[str, Any]], elapsed: float | None) -> str:
    """Why training stops before the next epoch ("": it goes on). `elapsed` None: the time
    budget is not checked (a resumed run trains at least one epoch)."""
    best = best_of(history)
    last = history[-1]["epoch"] if history else 0
    if cfg.patience is not None and best is not None and last - best["epoch"] >= cfg.patience:
        return f"no better validation accuracy in {cfg.patience} epochs"
    budget = cfg.max_minutes
    if elapsed is not None and budget is not None and elapsed > budget * 60 and last < cfg.epochs:
        log.warning("time budget of %.1f min spent after epoch %d", budget, last)
        return f"time budget of {budget:g} min spent"
    return ""


def _score_test(s: _Session, strategy: Strategy) -> None:
    """The one scoring of the test set: the validation-chosen checkpoint's, into eval.npz."""
    best = best_of(s.history) or s.history[-1]
    chosen = s.files.best if s.files.best.exists() else s.files.last
    load_trained_state(s.ctx.model, load_checkpoint(chosen))
    logits, feats = strategy.test(best)
    val = strategy.validate(best) if strategy.validate is not None else None
    save_eval(s.files.eval, logits, feats, s.ctx.data, best["epoch"], val, s.ctx.part.val_labels)


def run_training(
    cfg: TrainConfig,
    data: SplitData,
    out_dir: str | Path,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    hooks: Hooks | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run in `out_dir`; return the result dict (also in result.json)."""
    if is_cross(cfg.backbone):  # one partial run per backbone, then their ensemble
        from core.vision.train.cross import run_cross

        return run_cross(run_training, partition_of, cfg, data, out_dir, resume, cache_dir, hooks)
    hooks = hooks or Hooks()
    files = RunFiles(Path(out_dir))
    part = partition_of(data, cfg)
    ckpt = prepare_run(cfg, files, resume, data.class_names, part.key())
    s = _open(cfg, data, part, files, ckpt, hooks, cache_dir)
    strategy = STRATEGIES[cfg.mode](s.ctx)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    stop_reason = _stop_reason(cfg, s.history, None)
    for epoch in range(len(s.history) + 1, cfg.epochs + 1):
        if stop_reason:
            break
        record = _epoch(s, strategy, epoch, criterion)
        if hooks.on_epoch:
            hooks.on_epoch(record)
        stop_reason = _stop_reason(cfg, s.history, s.elapsed())
    train_seconds = s.elapsed()
    if ckpt is not None and len(s.history) == ckpt["epoch"]:
        train_seconds = s.spent  # nothing left to train
    _score_test(s, strategy)
    return write_result(
        files,
        cfg,
        data.class_names,
        s.history,
        train_seconds,
        stop_reason,
        s.ctx.backbone,
        s.ctx.timings,
        part,
    )
