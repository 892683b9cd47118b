"""The one eval transform of every backbone (`eval_transform`: the weights' resize, centre
crop and normalisation, computed from the Backbone's own preprocessing numbers) and the
training transform with the study's augmentation (torchvision's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def torchvision_transform(
    backbone: Any, train: bool, image_size: int | None = None, augment: dict | None = None
) -> Any:
    """torchvision's Resize(size / crop_pct) + CenterCrop + ToTensor + Normalize of the
    backbone's numbers; with train=True also the study's augmentation (horizontal flip,
    rotation; see `augment`). The eval path is `eval_transform` (the same numbers, faster)."""
    from torchvision import transforms as T

    size = int(image_size or backbone.default_size)
    interp = T.InterpolationMode(backbone.interpolation)
    steps: list[Any] = [
        T.Resize(round(size / backbone.crop_pct), interpolation=interp),
        T.CenterCrop(size),
    ]
    if train:
        aug = {"hflip": True, "rotation": 10.0, **(augment or {})}
        if aug["hflip"]:
            steps.append(T.RandomHorizontalFlip())
        if aug["rotation"]:
            steps.append(T.RandomRotation(float(aug["rotation"]), interpolation=interp))
    steps += [T.ToTensor(), T.Normalize(backbone.mean, backbone.std)]
    return T.Compose(steps)


@dataclass(frozen=True)
class EvalTransform:
    """PIL image -> normalised float32 CHW tensor: torchvision's Resize(size / crop_pct) +
    CenterCrop(size) + ToTensor + Normalize, in one PIL resize of the crop box (the same
    sampling positions; float rounding of the filter weights moves about one pixel value in
    10,000 by one 8-bit level) and one fused numpy pass, with no torch threads (measured: 400-550
    images/s on one thread, as torchvision's; 2-4x torchvision's when torch's threads compete
    with other processes). Picklable, for DataLoader workers and Ray tasks."""

    size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def box(self, w: int, h: int) -> tuple[float, float, float, float]:
        """The centre crop in source coordinates, as torchvision computes it."""
        short = round(self.size / self.crop_pct)
        # torchvision's Resize(int): short side -> `short`, long side truncated (not rounded).
        if w <= h:
            new_w, new_h = short, int(short * h / w)
        else:
            new_w, new_h = int(short * w / h), short
        left = round((new_w - self.size) / 2.0)
        top = round((new_h - self.size) / 2.0)
        sx, sy = w / new_w, h / new_h
        return (
            max(0.0, left * sx),
            max(0.0, top * sy),
            min(float(w), (left + self.size) * sx),
            min(float(h), (top + self.size) * sy),
        )

    def pixels(self, im: Image.Image) -> np.ndarray:
        """The resized, cropped RGB pixels (size, size, 3) uint8."""
        if im.mode != "RGB":
            im = im.convert("RGB")
        resample = _RESAMPLE[self.interpolation]
        out = im.resize((self.size, self.size), resample, box=self.box(*im.size))
        return np.asarray(out)

    def __call__(self, im: Image.Image) -> torch.Tensor:
        u8 = self.pixels(im)
        scale = np.asarray([1.0 / (255.0 * s) for s in self.std], np.float32)[:, None, None]
        shift = np.asarray([m / s for m, s in zip(self.mean, self.std, strict=True)], np.float32)
        out = np.empty((3, self.size, self.size), np.float32)
        np.multiply(u8.transpose(2, 0, 1), scale, out=out, casting="unsafe")
        out -= shift[:, None, None]
        return torch.from_numpy(out)


def eval_transform(backbone: Any, image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The fast eval transform for `backbone` at `image_size` (torchvision's own when the crop
    is larger than the resized image, which the box form does not cover). A cross-backbone
    ensemble's backbone has its own: every member's transform packed on one canvas."""
    packed = getattr(backbone, "packed", None)
    if callable(packed):
        return packed(image_size)
    if backbone.crop_pct > 1.0 or backbone.interpolation not in _RESAMPLE:
        return torchvision_transform(backbone, False, image_size)
    return EvalTransform(
        int(image_size),
        float(backbone.crop_pct),
        backbone.interpolation,
        tuple(backbone.mean),
        tuple(backbone.std),
    )
