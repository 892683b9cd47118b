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

The activations live in the one encoding store (core.vision.encodings, kind "activations"):
one entry per file content and encoder identity + split point, a float32 (2, C, H, W) array
(the photo, its mirror image). New photos add shards of STORE_CHUNK entries, nothing is
rewritten, each shard appears whole or not at all (a killed run keeps the shards it finished),
and a changed file is a new content hash, so it is computed again. Photos the store lacks at
this split point but holds at an earlier one are derived from those activations by running
only the blocks in between (trying several split points costs one pass over the photos).
A partial run's index reads the same entries (core.search.partial_rows).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.vision.backbones import Backbone
from core.vision.device import TrainingStopped
from core.vision.encodings import ACTIVATIONS, EncodingStore, encoder_identity
from core.vision.features import make_loader

log = logging.getLogger(__name__)

# 2: computed with the one eval transform (core.vision.transforms) instead of torchvision's.
# 3: entries of the encoding store, per file content.
ACTIVATION_CACHE_VERSION = 3
ACT = "acts"  # the array name of an activation entry in the store
STORE_CHUNK = 256  # photos per shard written: the unit a killed run keeps
# A collection larger than this is assembled in a memory-mapped file (unlinked at once, so
# nothing is left behind) instead of in RAM: a long training run never pins it all in memory.
IN_MEMORY_BYTES = 1 << 30
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


def activation_identity(backbone: Backbone, image_size: int, first_trainable: str) -> dict:
    """The store identity of the activations before `first_trainable` (photo + mirror image,
    PyTorch fp32, the eval preprocessing)."""
    return encoder_identity(
        backbone,
        image_size,
        "torch-fp32",
        split=first_trainable,
        views=["photo", "mirror"],
        activations=ACTIVATION_CACHE_VERSION,
    )


def frozen_pair(frozen: nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    """(n, 2, C, H, W) float32: frozen(x) and frozen of its mirror image. The preprocessing is
    a centred crop, so flipping the tensor equals flipping the photo first: one decode serves
    both copies."""
    x = x.to(device, non_blocking=True)
    both = torch.cat([x, x.flip(-1)])
    with torch.inference_mode():
        a = frozen(both.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
    n = len(x)
    return np.stack([a[:n], a[n:]], axis=1)


def _frozen_batches(
    frozen: nn.Module,
    backbone: Backbone,
    paths: Sequence[str],
    image_size: int,
    device: torch.device,
    batch_size: int,
    workers: int | None,
    should_stop: Callable[[], bool] | None,
) -> Iterator[np.ndarray]:
    """frozen_pair of each batch of photos, in order (the only place photos are decoded)."""
    loader = make_loader(
        paths,
        None,
        backbone.preprocess(False, image_size),
        batch_size,
        workers=workers,
        device=device,
    )
    frozen.eval().to(device)
    for x, _ in loader:
        _check_stop(should_stop)
        yield frozen_pair(frozen, x, device)


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise TrainingStopped("stopped while caching activations; resume to continue")


def activation_shape(frozen: nn.Module, image_size: int) -> tuple[int, ...]:
    with torch.inference_mode():
        return tuple(frozen.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1:])


class ActivationWriter:
    """Buffered writes of activation entries: one store shard per STORE_CHUNK photos, so a
    stopped run keeps what it computed and memory holds one chunk."""

    def __init__(self, store: EncodingStore, ident: dict[str, Any]) -> None:
        self.store, self.ident = store, ident
        self.hashes: list[str] = []
        self.parts: list[np.ndarray] = []

    def add(self, hashes: Sequence[str], acts: np.ndarray) -> None:
        self.hashes += list(hashes)
        self.parts.append(acts)
        if len(self.hashes) >= STORE_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.hashes:
            arr = np.concatenate(self.parts)
            self.store.put(self.ident, self.hashes, {ACT: arr}, ACTIVATIONS)
        self.hashes, self.parts = [], []


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
    (array, from_cache): from_cache when the store held every photo (nothing computed or
    derived). The photos the store lacks are computed (or derived) and added to it; the
    array is assembled from the store, in RAM or, above IN_MEMORY_BYTES, memory-mapped.
    cache_dir None: computed, nothing stored."""
    frozen, _ = split_trunk(backbone, first_trainable)
    paths = [str(p) for p in paths]
    shape = (len(paths), 2, *activation_shape(frozen, image_size))
    if cache_dir is None:
        arr = np.empty(shape, dtype=np.float32)
        done = 0
        for a in _frozen_batches(
            frozen, backbone, paths, image_size, device, batch_size, workers, should_stop
        ):
            arr[done : done + len(a)] = a
            done += len(a)
            if progress:
                progress(done, len(paths))
        return arr, False
    store = EncodingStore.at(cache_dir)
    hashes = store.hashes(paths)
    ident = activation_identity(backbone, image_size, first_trainable)
    computed = False
    for _ in range(2):  # a shard found damaged while reading is set aside: compute it again
        if store.missing(ident, hashes, ACTIVATIONS):
            computed = True
            job = _Job(backbone, first_trainable, image_size, device, batch_size, workers)
            _fill(store, ident, job, paths, hashes, progress, should_stop)
        try:
            out = _assemble(store, ident, hashes, shape, cache_dir)
        except KeyError as exc:
            log.warning("recomputing activations: %s", exc)
            continue
        if progress:
            progress(len(paths), len(paths))
        return out, not computed
    raise OSError(f"the activation store under {cache_dir} cannot be read back")


def _assemble(
    store: EncodingStore,
    ident: dict[str, Any],
    hashes: Sequence[str],
    shape: tuple[int, ...],
    cache_dir: str | Path,
) -> np.ndarray:
    """The rows of `hashes` in order, copied from the store once (KeyError: a damaged shard)."""
    if int(np.prod(shape)) * 4 <= IN_MEMORY_BYTES:
        out = np.empty(shape, np.float32)
    else:
        folder = store.root / ACTIVATIONS
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".view-{os.getpid()}-{uuid.uuid4().hex[:8]}.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        tmp.unlink()  # the mapping stays valid; the space is freed when the array goes
    store.read_into(ident, hashes, ACT, out, ACTIVATIONS)
    return out


@dataclass(frozen=True)
class _Job:
    backbone: Backbone
    split: str
    image_size: int
    device: torch.device
    batch_size: int
    workers: int | None


def _fill(
    store: EncodingStore,
    ident: dict[str, Any],
    job: _Job,
    paths: Sequence[str],
    hashes: Sequence[str],
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    """Add the photos the store lacks at this split point (one per content): derived from
    the nearest earlier split point that holds them, else computed from the photos."""
    backbone, image_size, device = job.backbone, job.image_size, job.device
    first: dict[str, int] = {}
    for i in store.missing(ident, hashes, ACTIVATIONS):
        first.setdefault(hashes[i], i)
    pick = sorted(first.values())
    done = [len(paths) - len(pick)]

    def report(n: int) -> None:
        done[0] += n
        if progress:
            progress(min(done[0], len(paths)), len(paths))

    def left() -> list[int]:
        absent = set(store.missing(ident, [hashes[i] for i in pick], ACTIVATIONS))
        return [i for k, i in enumerate(pick) if k in absent]

    units = trunk_units(backbone)
    names = [n for n, _ in units]
    k = names.index(job.split)
    for j in range(k - 1, 0, -1):
        todo = left()
        if not todo:
            return
        earlier = activation_identity(backbone, image_size, names[j])
        absent = set(store.missing(earlier, [hashes[i] for i in todo], ACTIVATIONS))
        have = [hashes[i] for n, i in enumerate(todo) if n not in absent]
        if not have:
            continue
        log.info("deriving %d %s activations from %s", len(have), job.split, names[j])
        between = nn.Sequential(*(m for _, m in units[j:k])).eval().to(device)
        derived = _derived(store, earlier, have, between, device, job.batch_size, should_stop)
        try:
            _write(store, ident, have, derived, report)
        except KeyError as exc:  # a damaged earlier shard: those photos are computed below
            log.warning("cannot derive from %s: %s", names[j], exc)
    todo = left()
    if todo:
        frozen, _ = split_trunk(backbone, job.split)
        todo_paths = [paths[i] for i in todo]
        batches = _frozen_batches(
            frozen,
            backbone,
            todo_paths,
            image_size,
            device,
            job.batch_size,
            job.workers,
            should_stop,
        )
        _write(store, ident, [hashes[i] for i in todo], batches, report)
    log.info("stored %s activations of %d photos", job.split, len(pick))


def _write(
    store: EncodingStore,
    ident: dict[str, Any],
    hashes: Sequence[str],
    batches: Iterator[np.ndarray],
    report: Callable[[int], None],
) -> None:
    """Store each batch of activations (in the order of `hashes`) as it comes."""
    writer = ActivationWriter(store, ident)
    done = 0
    for a in batches:
        writer.add(hashes[done : done + len(a)], a)
        done += len(a)
        report(len(a))
    writer.flush()


def _derived(
    store: EncodingStore,
    earlier: dict[str, Any],
    hashes: Sequence[str],
    between: nn.Module,
    device: torch.device,
    batch_size: int,
    should_stop: Callable[[], bool] | None,
) -> Iterator[np.ndarray]:
    """The blocks `between` run on the stored earlier activations, batch by batch."""
    for i in range(0, len(hashes), batch_size):
        _check_stop(should_stop)
        x = torch.from_numpy(store.read(earlier, hashes[i : i + batch_size], ACT, ACTIVATIONS))
        b = x.shape[0]
        with torch.inference_mode():
            y = between(x.flatten(0, 1).to(device).contiguous(memory_format=torch.channels_last))
        yield y.float().cpu().numpy().reshape(b, 2, *y.shape[1:])
