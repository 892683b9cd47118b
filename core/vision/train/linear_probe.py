"""Mode "linear-probe": the backbone stays frozen; its features are extracted once (cached
on disk) and each epoch trains the linear head on them, which takes seconds. The
augmentation cannot apply to cached features, so it is off in this mode."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from core.vision.features import cached_features
from core.vision.train.engine import EpochOutput, Tally, check_stop
from core.vision.train.strategy import Context, Strategy, timed


def linear_probe(ctx: Context) -> Strategy:
    cfg, part, device, hooks = ctx.cfg, ctx.part, ctx.device, ctx.hooks

    def extract(paths: list[str], progress: Any) -> tuple[np.ndarray, bool]:
        return cached_features(
            ctx.backbone,
            paths,
            cfg.image_size,
            ctx.cache_dir,
            device,
            cfg.eval_batch_size,
            cfg.workers,
            cfg.amp and device.type == "cuda",
            progress,
        )

    pool = torch.from_numpy(timed(ctx, "features", "train", part.paths, extract)).to(device)
    x_train = pool[torch.as_tensor(part.train_idx, device=device)]
    x_val = pool[torch.as_tensor(part.val_idx, device=device)]
    y_train = torch.as_tensor(part.train_labels, device=device)
    head = ctx.model.head

    def step(epoch: int, criterion: nn.Module, optimizer: torch.optim.Optimizer) -> EpochOutput:
        head.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(y_train), generator=gen).to(device)
        tally = Tally()
        for i in range(0, len(order), cfg.batch_size):
            check_stop(hooks)
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
        return EpochOutput(*tally.means(), val)

    def test(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        feats = timed(ctx, "features", "test", list(ctx.data.test_paths), extract)
        head.eval()
        with torch.inference_mode():
            logits = head(torch.from_numpy(feats).to(device)).float().cpu().numpy()
        return logits, feats

    return Strategy(step, test)
