"""The collection to curate and its backbone vectors.

Vectors come from core.vision.features.cached_features, whose encoding store is keyed by the
files' content (core.vision.encodings): a symlinked, copied or relabelled view of a data set,
a run trained on it and its index all share one encoding of each photo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
DEFAULT_BACKBONE = "efficientnet_lite0"
# One fixed backend (PyTorch on CUDA; ONNX Runtime fp32 on CPUs, falling back to PyTorch when
# it is missing) rather than "auto": the feature cache key names the backend's numerics, and
# curation caches (self-join table, map, audit) are derived from these vectors, so they must
# not change when another accelerated backend gets installed.
BACKEND = "onnxruntime"


@dataclass
class Collection:
    """Usable images of a data folder, in manifest order."""

    root: Path
    paths: list[str]
    labels: list[str | None]  # None for unlabelled images (e.g. seg_pred)
    splits: list[str]
    class_names: list[str]
    skipped: list[dict] = field(default_factory=list)  # {path, reason}

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: np.ndarray | list[int]) -> Collection:
        idx = [int(i) for i in keep]
        return dataclasses.replace(
            self,
            paths=[self.paths[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            splits=[self.splits[i] for i in idx],
        )


def load_collection(
    images: str | Path, cache_dir: str | Path | None = None, progress: Progress | None = None
) -> Collection:
    """Every usable image under `images` (any layout find_dataset understands) via the
    validated manifest. Raises core.data.dataset.DatasetError for a bad folder."""
    from core.config import resolve_cache_dir
    from core.data.dataset import DatasetError, find_dataset
    from core.data.manifest import build_manifest

    ds = find_dataset(images)
    manifest = build_manifest(ds, resolve_cache_dir(cache_dir), progress=progress)
    ok = manifest.usable()
    if ok.empty:
        raise DatasetError(f"{images}: no usable images (all {len(manifest.df)} were skipped)")
    labels = [None if not isinstance(c, str) else c for c in ok["class"]]
    skipped = [
        {"path": p, "reason": r}
        for p, r in zip(manifest.skipped()["path"], manifest.skipped()["reason"], strict=True)
    ]
    return Collection(
        ds.root,
        ok["path"].astype(str).tolist(),
        labels,
        ok["split"].astype(str).tolist(),
        list(ds.class_names),
        skipped,
    )


@dataclass
class VectorSource:
    """Which network gives the vectors: a backbone by name, or a trained run."""

    backbone: Any  # core.vision.backbones.Backbone (weights identify the cache entry)
    image_size: int
    description: str
    run: str | None = None

    def key(self) -> dict[str, Any]:
        from core.vision.backbones import weights_stamp

        return {
            "backbone": self.backbone.name,
            "weights": weights_stamp(self.backbone.weights),
            "image_size": self.image_size,
            "run": self.run,
        }


def vector_source(
    run: str | Path | None = None, backbone: str = DEFAULT_BACKBONE, device: str | None = None
) -> VectorSource:
    """The offline backbone by default; with `run`, that run's network (a linear probe's
    frozen backbone, or the fine-tuned layers, whose checkpoint then keys the cache)."""
    if run is None:
        from core.vision.backbones import create_backbone

        bb = create_backbone(backbone)
        return VectorSource(bb, bb.default_size, f"{bb.name} ({bb.source})")
    from core.vision.runs import load_trained

    trained = load_trained(run, "last", device)
    bb = trained.backbone
    if trained.config.mode != "linear-probe":
        # The trunk carries fine-tuned weights: key the cache on the checkpoint file.
        bb = dataclasses.replace(bb, weights=str(trained.checkpoint))
    return VectorSource(
        bb,
        trained.config.image_size,
        f"run {run} ({bb.name}, {trained.config.mode}, epoch {trained.epoch})",
        str(Path(run).resolve()),
    )


def _real(path: str) -> str:
    return os.path.realpath(path)


def collection_vectors(
    source: VectorSource,
    paths: list[str],
    cache_dir: str | Path | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """(n, d) float32 penultimate features of `paths`, in order, from the encoding store."""
    from core.config import resolve_cache_dir
    from core.vision.device import pick_device
    from core.vision.features import cached_features

    cache = resolve_cache_dir(cache_dir)
    dev = pick_device(device)
    real = [_real(p) for p in paths]
    unique = sorted(set(real))
    feats, hit = cached_features(
        source.backbone,
        unique,
        source.image_size,
        cache,
        dev,
        workers=workers,
        progress=progress,
        backend=BACKEND,
        precision="fp32",
    )
    log.info("vectors of %d files (%s)", len(unique), "stored" if hit else "encoded")
    if not paths:
        return np.zeros((0, source.backbone.feature_dim), np.float32)
    row = {r: i for i, r in enumerate(unique)}
    return feats[[row[r] for r in real]].astype(np.float32, copy=False)


def vectors_key(source: VectorSource, paths: list[str]) -> str:
    """Identifies these vectors (network + every real file's path, size, mtime) for caches
    derived from them (the self-join table, the 2-D map)."""
    h = hashlib.sha256(json.dumps(source.key(), sort_keys=True).encode())
    for p in paths:
        r = _real(p)
        try:
            st = os.stat(r)
            h.update(f"{r}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{r}|-1\n".encode())
    return h.hexdigest()[:20]


def imagenet_top1(source: VectorSource, features: np.ndarray, batch: int = 2048) -> list[str]:
    """The backbone's top-1 ImageNet label for each feature vector (its ImageNet head applied
    to the stored features; no image is decoded again)."""
    import torch

    from core.vision.backbones import IMAGENET

    head = source.backbone.model.imagenet_head
    # Only the pretrained trunk's features fit the pretrained ImageNet head (a fine-tuned
    # run's trunk does not): no labels then, rather than wrong ones.
    if head is None or features.size == 0 or source.backbone.weights != IMAGENET:
        return [""] * len(features)
    names = source.backbone.imagenet_classes
    head = head.float().cpu().eval()
    out: list[str] = []
    with torch.inference_mode():
        for i in range(0, len(features), batch):
            logits = head(torch.from_numpy(features[i : i + batch]).float())
            out += [names[int(j)] for j in logits.argmax(1)]
    return out
