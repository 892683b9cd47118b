"""Mode "fine-tune": every layer trains on images, with the augmentation (flip, rotation)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from core.vision.features import make_loader
from core.vision.train.engine import EpochOutput, evaluate, train_one_epoch
from core.vision.train.strategy import Context, Strategy


def fine_tune(ctx: Context) -> Strategy:
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
        stage = f"epoch {epoch}/{cfg.epochs}"
        loss, acc = train_one_epoch(
            model, loader, criterion, optimizer, device, cfg.amp, ctx.hooks, stage, ctx.scaler
        )
        val_logits, _ = evaluate(model, val_loader, device, cfg.amp, ctx.hooks, "validating")
        return EpochOutput(loss, acc, val_logits)

    def test(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        loader = eval_loader(list(ctx.data.test_paths), list(ctx.data.test_labels))
        return evaluate(model, loader, device, cfg.amp, ctx.hooks, "testing")

    return Strategy(step, test)
