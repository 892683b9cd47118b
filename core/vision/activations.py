"""Cached-activation fine-tuning: run the frozen part of a backbone once per image.

`partial` training unfreezes only the last block(s) of a backbone. Everything below the
split point never changes, so its output for an image is a constant: it is computed once
per image (and once more for the horizontally flipped copy, the augmentation that survives
caching), stored on disk, and every epoch trains only the tail (the unfrozen blocks, the
final conv and the head) on the stored activations. On a 2-core CPU that turns a
20-minute epoch into a minute or less.

A backbone is seen as an ordered list of named units (`trunk_units`): a stem, every block of
every stage ("blocks.5.0" for EfficientNet-Lite, "layer4.0" for ResNet-50) and a pooling
head. `split_trunk(backbone, first_trainable)` cuts it before a unit. The units are the
backbone's own modules, so training the tail trains the run's model in place and its
checkpoint stays a complete model (predict/evaluate run it on images as usual).

The cache (`cached_activations`) is keyed like the feature cache: backbone, weights file
stamp, preprocessing, image size, split point and every file's path + size + mtime. It
holds float32 arrays of shape (n, 2, C, H, W) (original, flipped) for the paths in sorted
order, written through a temporary file and renamed, so a killed run leaves no half file.
A later split point of the same images is derived from an earlier one's cache by running
only the blocks in between (trying several split points costs one pass over the photos).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.vision.backbones import Backbone, weights_stamp
from core.vision.device import TrainingStopped
from core.vision.features import make_loader

log = logging.getLogger(__name__)

# 2: computed with the one eval transform (core.vision.transforms) instead of torchvision's.
ACTIVATION_CACHE_VERSION = 2
# Photos per forward pass when caching (each pass also runs their mirror images). Measured on
# the project's 2-core CPU, EfficientNet-Lite0 up to blocks.5 at 224 px, one thread: 4.3 img/s
# in batches of 64, 6.6 in 16, 7.2 in 4, 6.1 one at a time (loaded machine; the order held).
CACHE_BATCH = 4
Progress = Callable[[int, int], None]


class SplitPointError(ValueError):
    """The split point names no unit of the backbone."""


def trunk_units(backbone: Backbone) -> list[tuple[str, nn.Module]]:
    """The backbone's trunk as ordered (name, module) units whose composition is trunk(x)."""
    t = backbone.model.trunk
    units: list[tuple[str, nn.Module]] = []
    if backbone.family == "efficientnet_lite":
        units.append(("stem", nn.Sequential(t.conv_stem, t.bn1)))
        for i, stage in enumerate(t.blocks):
            units += [(f"blocks.{i}.{j}", block) for j, block in enumerate(stage)]
        units.append(("head", nn.Sequential(t.conv_head, t.bn2, t.global_pool, nn.Flatten(1))))
    elif backbone.family == "resnet":
        units.append(("stem", nn.Sequential(t.conv1, t.bn1, t.relu, t.maxpool)))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            layer = getattr(t, name)
            units += [(f"{name}.{j}", block) for j, block in enumerate(layer)]
        units.append(("head", nn.Sequential(t.avgpool, nn.Flatten(1))))
    else:
        raise SplitPointError(f"no unit list for backbone {backbone.name!r}")
    return units


def unit_names(backbone: Backbone) -> list[str]:
    return [name for name, _ in trunk_units(backbone)]


def split_trunk(backbone: Backbone, first_trainable: str) -> tuple[nn.Sequential, nn.Sequential]:
    """(frozen, tail): frozen(x) gives the activations before `first_trainable`, tail maps them
    to the pooled penultimate features. Both share the backbone's modules."""
    units = trunk_units(backbone)
    names = [n for n, _ in units]
    if first_trainable not in names or first_trainable == "stem":
        choices = ", ".join(names[1:])
        raise SplitPointError(
            f"--unfreeze must name a unit of {backbone.name} after the stem, not "
            f"{first_trainable!r}; choose one of {choices}"
        )
    k = names.index(first_trainable)
    return nn.Sequential(*(m for _, m in units[:k])), nn.Sequential(*(m for _, m in units[k:]))


def tail_train_mode(tail: nn.Module) -> None:
    """Training mode for the tail only; the frozen part never runs during training."""
    tail.train()


def activation_cache_key(ident: dict[str, Any], paths: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            stamp = [p, st.st_size, st.st_mtime_ns]
        except OSError:
            stamp = [p, -1, -1]
        h.update(json.dumps(stamp).encode())
    return h.hexdigest()[:24]


def activation_identity(backbone: Backbone, image_size: int, first_trainable: str) -> dict:
    return {
        "version": ACTIVATION_CACHE_VERSION,
        "backbone": backbone.name,
        "weights": weights_stamp(backbone.weights),
        "image_size": int(image_size),
        "split": first_trainable,
        "preprocess": [backbone.mean, backbone.std, backbone.interpolation, backbone.crop_pct],
        "dtype": "float32",
    }


def _compute(
    frozen: nn.Module,
    backbone: Backbone,
    paths: Sequence[str],
    image_size: int,
    out: np.ndarray,
    device: torch.device,
    batch_size: int,
    workers: int | None,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    """Fill out[i, 0] with frozen(image i) and out[i, 1] with frozen(flipped image i)."""
    loader = make_loader(
        paths,
        None,
        backbone.preprocess(False, image_size),
        batch_size,
        workers=workers,
        device=device,
    )
    frozen.eval().to(device)
    done = 0
    with torch.inference_mode():
        for x, _ in loader:
            if should_stop is not None and should_stop():
                raise TrainingStopped("stopped while caching activations; resume to continue")
            x = x.to(device, non_blocking=True)
            # The preprocessing is a centred crop, so flipping the tensor equals flipping the
            # photo first: one decode serves both copies.
            both = torch.cat([x, x.flip(-1)])
            a = frozen(both.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
            n = len(x)
            out[done : done + n, 0] = a[:n]
            out[done : done + n, 1] = a[n:]
            done += n
            if progress:
                progress(done, len(paths))


def activation_shape(frozen: nn.Module, image_size: int) -> tuple[int, ...]:
    with torch.inference_mode():
        return tuple(frozen.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1:])


def cached_activations(
    backbone: Backbone,
    first_trainable: str,
    paths: Sequence[str],
    image_size: int,
    cache_dir: str | Path | None,
    device: torch.device,
    batch_size: int = CACHE_BATCH,
    workers: int | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, bool]:
    """Activations before `first_trainable` for `paths` (in the order given), shape
    (n, 2, C, H, W) float32: [:, 0] the photo, [:, 1] its mirror image. Returns
    (array, from_cache). The array is memory-mapped from the cache file when there is one."""
    frozen, _ = split_trunk(backbone, first_trainable)
    paths = [str(p) for p in paths]
    order = sorted(range(len(paths)), key=paths.__getitem__)
    canonical = [paths[i] for i in order]  # a different order of the same files shares a file
    shape = (len(paths), 2, *activation_shape(frozen, image_size))
    cache_file = None
    if cache_dir is not None:
        cache_file = _cache_file(backbone, first_trainable, image_size, cache_dir, canonical)
        if cache_file.exists():
            try:
                arr = np.load(cache_file, mmap_mode="r")
                if arr.shape == shape and arr.dtype == np.float32:
                    if progress:
                        progress(len(paths), len(paths))
                    return _reorder(arr, order), True
                log.warning(
                    "activation cache %s has shape %s, expected %s; recomputing",
                    cache_file,
                    arr.shape,
                    shape,
                )
            except (OSError, ValueError) as exc:  # a damaged cache file is recomputed
                log.warning("ignoring unreadable activation cache %s: %s", cache_file, exc)
    if cache_file is None:
        arr = np.empty(shape, dtype=np.float32)
        _compute(
            frozen,
            backbone,
            canonical,
            image_size,
            arr,
            device,
            batch_size,
            workers,
            progress,
            should_stop,
        )
        return _reorder(arr, order), False
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(cache_file)
    tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
    try:
        # Written straight into a memory-mapped temporary file: the whole array never has to
        # sit in memory twice, and the rename makes it appear complete or not at all.
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        source = _earlier_cache(backbone, first_trainable, image_size, cache_dir, canonical)
        if source is not None:  # cheaper: run only the blocks between the two split points
            _derive(source[0], source[1], mm, device, batch_size, progress, should_stop)
        else:
            _compute(
                frozen,
                backbone,
                canonical,
                image_size,
                mm,
                device,
                batch_size,
                workers,
                progress,
                should_stop,
            )
        mm.flush()
        del mm
        os.replace(tmp, cache_file)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("cached activations of %d images in %s", len(paths), cache_file)
    return _reorder(np.load(cache_file, mmap_mode="r"), order), False


def _cache_file(
    backbone: Backbone, split: str, image_size: int, cache_dir: str | Path, canonical: list[str]
) -> Path:
    key = activation_cache_key(activation_identity(backbone, image_size, split), canonical)
    return Path(cache_dir) / "activations" / f"{backbone.name}-{image_size}-{split}-{key}.npy"


def _earlier_cache(
    backbone: Backbone,
    first_trainable: str,
    image_size: int,
    cache_dir: str | Path,
    canonical: list[str],
) -> tuple[np.ndarray, nn.Module] | None:
    """A cache of the same images at an earlier split point, and the blocks that lead from
    there to `first_trainable` (nearest earlier split first)."""
    units = trunk_units(backbone)
    names = [n for n, _ in units]
    k = names.index(first_trainable)
    for j in range(k - 1, 0, -1):
        path = _cache_file(backbone, names[j], image_size, cache_dir, canonical)
        if not path.exists():
            continue
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            continue
        if arr.ndim == 5 and arr.shape[:2] == (len(canonical), 2):
            log.info("deriving %s activations from the cache at %s", first_trainable, names[j])
            return arr, nn.Sequential(*(m for _, m in units[j:k]))
    return None


def _derive(
    source: np.ndarray,
    between: nn.Module,
    out: np.ndarray,
    device: torch.device,
    batch_size: int,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    between.eval().to(device)
    n = len(source)
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            if should_stop is not None and should_stop():
                raise TrainingStopped("stopped while caching activations; resume to continue")
            x = torch.from_numpy(np.array(source[i : i + batch_size]))  # a writable copy
            b = x.shape[0]
            y = between(x.flatten(0, 1).to(device).contiguous(memory_format=torch.channels_last))
            out[i : i + b] = y.float().cpu().numpy().reshape(b, 2, *y.shape[1:])
            if progress:
                progress(min(n, i + b), n)


def _remove_orphans(cache_file: Path) -> None:
    """Temporary files of killed runs (their process is gone) would fill the disk."""
    for tmp in cache_file.parent.glob(f".{cache_file.name}.*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
            os.kill(pid, 0)  # raises when no such process
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            continue


def _reorder(arr: np.ndarray, order: list[int]) -> np.ndarray:
    """Rows back in the caller's order (arr holds them sorted by path)."""
    if order == sorted(order):
        return arr
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    return np.asarray(arr)[inverse]
