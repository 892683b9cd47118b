"""The classifier: a backbone trunk with a linear head (an ensemble of tails in partial
mode), and which of its parameters a mode trains."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from core.vision.activations import split_trunk
from core.vision.backbones import Backbone
from core.vision.train.config import partial_defaults


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
        _, tail = split_trunk(backbone, unfreeze or partial_defaults(backbone.name)["unfreeze"])
        tail.requires_grad_(True)
    if backbone.model.imagenet_head is not None:
        backbone.model.imagenet_head.requires_grad_(False)
    model.head.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]
