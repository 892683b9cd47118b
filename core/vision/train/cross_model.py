"""A cross-backbone ensemble as one model: tails trained on different backbones (each on its
own activation cache, at its own resolution and normalisation), whose class probabilities are
averaged.

Every other part of SceneSeek feeds a run one tensor per photo made by one transform. So the
ensemble has one transform too (`PackedTransform`, the only factory of its inputs): each
member's own eval transform (its weights' resize, crop and mean/std), centred on a square
canvas as large as the largest member input, the members side by side along the channels.
`CrossClassifier` cuts each member's input back out. Centring keeps a mirrored canvas a canvas
of mirrored photos (every member's margin is even), so mirror averaging and flips of the whole
tensor stay right. A caller cannot hand a member another member's preprocessing: the canvas
carries them all and the model knows where each is."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from core.vision.backbones import Backbone, BackboneNet, create_backbone
from core.vision.train.model import SceneClassifier


def canvas_of(sizes: Sequence[int]) -> int:
    """The canvas side: the largest member input. Every member must sit centred on it with
    equal margins, so mirroring the canvas mirrors each member's photo."""
    canvas = max(sizes)
    odd = [s for s in sizes if (canvas - s) % 2]
    if odd:
        raise ValueError(
            f"member input sizes {list(sizes)}: each must differ from the largest by an even "
            "number of pixels (centred on one canvas)"
        )
    return canvas


@dataclass(frozen=True)
class PackedTransform:
    """PIL image -> (3 * members, canvas, canvas) float32: each member's own eval transform,
    centred. Picklable (DataLoader workers)."""

    parts: tuple[Callable[[Image.Image], torch.Tensor], ...]
    sizes: tuple[int, ...]

    @property
    def canvas(self) -> int:
        return canvas_of(self.sizes)

    def __call__(self, im: Image.Image) -> torch.Tensor:
        c = self.canvas
        out = torch.zeros(3 * len(self.parts), c, c)
        for i, (tf, s) in enumerate(zip(self.parts, self.sizes, strict=True)):
            o = (c - s) // 2
            out[3 * i : 3 * i + 3, o : o + s, o : o + s] = tf(im)
        return out


class CrossClassifier(nn.Module):
    """Groups of tails, one group per backbone (a `SceneClassifier`, itself an ensemble when
    its run had several tails). The prediction is the mean class probability over every tail
    (a group counts as many times as it has tails), returned as its log (argmax and
    cross-entropy read it as logits). A group whose run chose mirror averaging on validation
    averages each photo with its mirror image first. Features: the groups' features side by
    side (members of different backbones live in different spaces; a mean would mix them)."""

    def __init__(
        self, groups: Sequence[SceneClassifier], sizes: Sequence[int], mirror: Sequence[bool]
    ) -> None:
        super().__init__()
        self.groups = nn.ModuleList(groups)
        self.sizes = [int(s) for s in sizes]
        self.canvas = canvas_of(self.sizes)
        self.mirror = [bool(m) for m in mirror]

    @property
    def members(self) -> int:
        return sum(g.members for g in self.groups)

    @property
    def in_channels(self) -> int:
        """The canvas's channels: each member's RGB."""
        return 3 * len(self.groups)

    def member_input(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Group i's own input, cut out of the canvas."""
        s = self.sizes[i]
        o = (self.canvas - s) // 2
        return x[:, 3 * i : 3 * i + 3, o : o + s, o : o + s]

    def group_outputs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(features, log class probabilities) of each group on its own part of the canvas."""
        out = []
        for i, group in enumerate(self.groups):
            xi = self.member_input(x, i).contiguous(memory_format=torch.channels_last)
            f, z = group.forward_with_features(xi)
            logp = z.float().log_softmax(1)
            if self.mirror[i]:
                zm = group.forward_with_features(xi.flip(-1))[1]
                logp = torch.logaddexp(logp, zm.float().log_softmax(1)) - math.log(2)
            out.append((f.float(), logp))
        return out

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = self.group_outputs(x)
        weighted = [lp + math.log(g.members) for (_, lp), g in zip(outs, self.groups, strict=True)]
        logp = torch.logsumexp(torch.stack(weighted), 0) - math.log(self.members)
        return torch.cat([f for f, _ in outs], 1), logp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]


class _Features(nn.Module):
    """The ensemble's feature path, as a backbone trunk (what feature readers run)."""

    def __init__(self, model: CrossClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_with_features(x)[0]


@dataclass
class PackedBackbone(Backbone):
    """The backbone a cross-backbone run presents to the rest of SceneSeek: its preprocessing
    is the packed transform (nothing else fits its model); the scalar preprocessing fields are
    the first member's, for display only."""

    transform: PackedTransform | None = None

    def preprocess(
        self, train: bool = False, image_size: int | None = None, augment: dict | None = None
    ) -> Any:
        return self.packed(image_size) if not train else self._no_train()

    def packed(self, image_size: int | None = None) -> PackedTransform:
        if image_size not in (None, self.default_size):
            raise ValueError(
                f"{self.name} reads {self.default_size} px canvases (each member at its own "
                f"size), not {image_size} px"
            )
        assert self.transform is not None
        return self.transform

    def _no_train(self) -> Any:
        raise ValueError(f"{self.name}: a cross-backbone ensemble trains through its members")


def packed_backbone(name: str, members: Sequence[Backbone], model: CrossClassifier) -> Backbone:
    """The Backbone of a cross-backbone ensemble: its transform packs each member's own eval
    transform (core.vision.transforms) at the member's size, in the model's order."""
    from core.vision.transforms import eval_transform

    first = members[0]
    parts = tuple(eval_transform(b, s) for b, s in zip(members, model.sizes, strict=True))
    return PackedBackbone(
        name=name,
        model=BackboneNet(_Features(model), None),
        feature_dim=sum(b.feature_dim for b in members),
        imagenet_classes=first.imagenet_classes,
        mean=first.mean,
        std=first.std,
        interpolation=first.interpolation,
        crop_pct=first.crop_pct,
        default_size=model.canvas,
        weights=None,
        source="cross-backbone ensemble of " + ", ".join(b.describe() for b in members),
        family="cross",
        transform=PackedTransform(parts, tuple(model.sizes)),
    )


def build_cross(
    groups: Sequence[dict[str, Any]], n_classes: int
) -> tuple[CrossClassifier, Backbone]:
    """The ensemble's model (untrained tails: load its state next) and Backbone, from the
    checkpoint's group records (backbone, image_size, members, unfreeze, tta)."""
    backbones, classifiers = [], []
    for g in groups:
        bb = create_backbone(g["backbone"], None)  # every trained layer is in the checkpoint
        backbones.append(bb)
        classifiers.append(SceneClassifier(bb, n_classes, int(g["members"]), g["unfreeze"]))
    model = CrossClassifier(
        classifiers, [int(g["image_size"]) for g in groups], [g["tta"] == "mirror" for g in groups]
    )
    name = ",".join(g["backbone"] for g in groups)
    return model, packed_backbone(name, backbones, model)
