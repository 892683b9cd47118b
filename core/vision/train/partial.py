"""Mode "partial": the frozen part of the backbone runs once per image and once per mirrored
image; its activations are cached on disk (core.vision.activations) and every epoch trains
the unfrozen last block(s) and the head on them, one randomly chosen copy of each training
image per epoch: about a minute an epoch on a CPU instead of twenty. With `members` > 1
several tails train side by side on the one cache. The cache holds every image's mirror, so
validation also decides, epoch by epoch, whether predictions average each photo with its
mirror image (core.vision.train.tta)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from core.vision.activations import CACHE_BATCH, cached_activations, split_trunk
from core.vision.device import precision
from core.vision.train.config import partial_defaults
from core.vision.train.engine import EpochOutput, Tally, check_stop, optimise
from core.vision.train.strategy import Context, Strategy, timed
from core.vision.train.tta import mirror_average


class _Partial:
    def __init__(self, ctx: Context) -> None:
        self.ctx, self.cfg, self.model = ctx, ctx.cfg, ctx.model
        self.unfreeze = ctx.cfg.unfreeze or partial_defaults(ctx.cfg.backbone)["unfreeze"]
        _, self.tail = split_trunk(ctx.backbone, self.unfreeze)
        self.pool = self.activations("train", ctx.part.paths)
        self.y_all = torch.as_tensor(ctx.part.labels)

    def activations(self, split: str, paths: list[str]) -> np.ndarray:
        ctx, cfg = self.ctx, self.cfg
        batch = cfg.eval_batch_size if ctx.device.type == "cuda" else CACHE_BATCH

        def extract(paths: list[str], progress: Any) -> tuple[np.ndarray, bool]:
            return cached_activations(
                ctx.backbone,
                self.unfreeze,
                paths,
                cfg.image_size,
                ctx.cache_dir,
                ctx.device,
                batch,
                cfg.workers,
                progress,
                ctx.hooks.should_stop,
            )

        return timed(ctx, "activations", split, paths, extract)

    def modules_mode(self, train: bool) -> None:
        for m in (self.tail, self.model.head, self.model.extra):
            m.train(train)

    def infer(self, arr: np.ndarray, rows: np.ndarray, view: int = 0) -> tuple[Any, Any]:
        """(logits, features) of the photos (view 0) or their mirror images (view 1)."""
        cfg, model, device = self.cfg, self.model, self.ctx.device
        self.modules_mode(False)
        feats, logits = [], []
        with torch.inference_mode(), precision(device, cfg.amp):
            for i in range(0, len(rows), cfg.eval_batch_size):
                r = rows[i : i + cfg.eval_batch_size]
                x = torch.from_numpy(np.ascontiguousarray(arr[r, view])).to(device)
                x = x.contiguous(memory_format=torch.channels_last)
                if model.members > 1:
                    f, z = model.tails_forward(x)
                else:
                    f = self.tail(x)
                    z = model.head(f)
                feats.append(f.float().cpu().numpy())
                logits.append(z.float().cpu().numpy())
        return np.concatenate(logits), np.concatenate(feats)

    def draws(self, epoch: int, member: int) -> tuple[np.ndarray, np.ndarray]:
        """Each member's own shuffle and mirror choices (member 0: those of a single tail)."""
        n = len(self.ctx.part.train_idx)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch + 7919 * member)
        order = torch.randperm(n, generator=gen).numpy()
        flips = (
            torch.randint(0, 2, (n,), generator=gen).numpy()
            if self.cfg.hflip
            else np.zeros(n, dtype=np.int64)
        )
        return order, flips

    def batch_loss(self, member: int, rows: np.ndarray, flips: np.ndarray, criterion: Any) -> Any:
        """(loss, logits, labels) of one member on one batch of cached rows."""
        device, model = self.ctx.device, self.model
        # Sorted rows read the memory-mapped cache in file order; labels follow them.
        srt = np.argsort(rows)
        rows, flips = rows[srt], flips[srt]
        x = torch.from_numpy(np.ascontiguousarray(self.pool[rows, flips])).to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        y = self.y_all[torch.from_numpy(rows)].to(device)
        with precision(device, self.cfg.amp):
            if model.members > 1:
                logits = model.member_forward(member, x)
            else:
                logits = model.head(self.tail(x))
        return criterion(logits.float(), y), logits, y

    def step(self, epoch: int, criterion: nn.Module, optimizer: torch.optim.Optimizer) -> Any:
        cfg, hooks, model = self.cfg, self.ctx.hooks, self.model
        train_idx = self.ctx.part.train_idx
        plans = [self.draws(epoch, m) for m in range(model.members)]
        self.modules_mode(True)
        tally = Tally()
        for i in range(0, len(train_idx), cfg.batch_size):
            for member, (order, flips) in enumerate(plans):
                check_stop(hooks)
                pick = order[i : i + cfg.batch_size]
                loss, logits, y = self.batch_loss(member, train_idx[pick], flips[pick], criterion)
                optimise(loss, optimizer, self.ctx.scaler)
                n = tally.add(loss, logits, y)
                if hooks.on_stage:
                    hooks.on_stage(f"epoch {epoch}/{cfg.epochs}", n, len(train_idx) * model.members)
        val_idx = self.ctx.part.val_idx
        val_logits, _ = self.infer(self.pool, val_idx)
        mirror = self.infer(self.pool, val_idx, 1)[0] if cfg.tta != "none" else None
        return EpochOutput(*tally.means(), val_logits, mirror)

    def validate(self, record: dict[str, Any]) -> np.ndarray:
        """Validation logits of the chosen checkpoint, as its epoch was scored."""
        val_idx = self.ctx.part.val_idx
        logits = self.infer(self.pool, val_idx)[0]
        if record.get("tta") == "mirror":
            logits = mirror_average(logits, self.infer(self.pool, val_idx, 1)[0])
        return logits

    def test(self, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        acts = self.activations("test", list(self.ctx.data.test_paths))
        rows = np.arange(len(acts))
        logits, feats = self.infer(acts, rows)
        if record.get("tta") == "mirror":
            logits = mirror_average(logits, self.infer(acts, rows, 1)[0])
        return logits, feats


def partial(ctx: Context) -> Strategy:
    trainer = _Partial(ctx)
    return Strategy(trainer.step, trainer.test, trainer.validate)
