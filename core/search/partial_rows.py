"""A partial run's index rows from the stored activations (core.vision.activations).

A partial run trained its tail on the activations of its frozen part, which the encoding
store (core.vision.encodings, kind "activations") keeps per photo content. Indexing a folder
the run was trained on therefore needs no decoding and no trunk pass: the run's tail on the
stored activations gives its features and class probabilities, and the pretrained tail
(the same units of the pristine backbone, whose frozen part is the same) gives the ImageNet
logits of the top-5. Photos the store lacks are decoded once, their activations (photo and
mirror image) added to the store, so a later training run or index reads them too.

The rows equal what the run's own model gives on the photos (the frozen part composed with
the tail is the trunk); the class probabilities are the photo's, not a mirror average, as
in the local and Ray engines' full passes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.search.backend import Encoded
from core.search.embed import image_loader, rows_from

log = logging.getLogger(__name__)

Batches = Iterator[tuple[list[int], Encoded]]


def is_partial(encoder: Any) -> bool:
    """A partial run's encoder: its rows come from activations (`activation_batches`)."""
    run = getattr(encoder, "run", None)
    return run is not None and run.config.mode == "partial"


class RunTails:
    """The tails of a partial run (features, class log-probabilities) and of the pretrained
    backbone (ImageNet logits), run on activations at the run's split point."""

    def __init__(self, encoder: Any) -> None:
        from core.vision.activations import split_trunk
        from core.vision.train.config import partial_defaults

        trained = encoder.run
        self.encoder, self.model = encoder, trained.model.eval()
        cfg = trained.config
        self.split = cfg.unfreeze or partial_defaults(cfg.backbone)["unfreeze"]
        self.frozen, self.tail = split_trunk(trained.backbone, self.split)
        ref = encoder.imagenet_ref  # None (no pretrained weights): `identity` is None
        self.ref_tail = split_trunk(ref, self.split)[1].eval() if ref is not None else None

    def identity(self) -> dict[str, Any] | None:
        """The store identity of the run's frozen part: the pretrained backbone's (the run's
        own backbone was rebuilt from its checkpoint, so its weights stamp says "random");
        None without the pretrained weights, when nothing in the store can be trusted."""
        from core.vision.activations import activation_identity

        ref = self.encoder.imagenet_ref
        if ref is None:
            return None
        return activation_identity(ref, self.encoder.image_size, self.split)

    def rows(self, acts: np.ndarray) -> Encoded:
        """Rows of photos from their (n, 2, C, H, W) activations (view 0: the photo)."""
        device = self.encoder.device
        x = torch.from_numpy(np.ascontiguousarray(acts[:, 0], np.float32)).to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.model.members > 1:
                feats, logits = self.model.tails_forward(x)
            else:
                feats = self.tail(x)
                logits = self.model.head(feats)
            inet = self.encoder.imagenet_ref.model.imagenet_head(self.ref_tail(x))
            probs = logits.float().softmax(1).cpu().numpy()
        return rows_from(feats.float().cpu().numpy(), inet.float().cpu().numpy(), probs)


def activation_batches(
    encoder: Any,
    cache_dir: str | Path,
    paths: Sequence[str],
    hashes: Sequence[str],
    batch_size: int,
    workers: int | None,
    encode_missing: bool = True,
    chunk: int = 512,
) -> tuple[Batches, list[int]]:
    """core.search.embed.stored_batches for a partial run: (batches of (positions, Encoded),
    positions still to encode). Stored photos are read `chunk` at a time; with
    `encode_missing` the rest are decoded here (undecodable files flagged), their activations
    stored, and the returned list is empty."""
    from core.vision.activations import ACT
    from core.vision.encodings import ACTIVATIONS, EncodingStore

    store = EncodingStore.at(cache_dir)
    tails = RunTails(encoder)
    ident = tails.identity()
    if ident is None:  # the engine encodes every photo with the run's whole model
        return iter(()), list(range(len(paths)))
    todo = store.missing(ident, hashes, ACTIVATIONS)
    absent = set(todo)
    hits = [i for i in range(len(paths)) if i not in absent]

    def run() -> Batches:
        late: list[int] = []  # in a shard found damaged while reading: encoded below
        for k in range(0, len(hits), chunk):
            pos = hits[k : k + chunk]
            try:
                acts = store.read(ident, [hashes[i] for i in pos], ACT, ACTIVATIONS)
            except KeyError:
                if not encode_missing:
                    raise
                late += pos
                continue
            rows = tails.rows(acts)
            rows.stored = True
            yield pos, rows
        rest = sorted(todo + late)
        if encode_missing and rest:
            yield from _encode(store, ident, tails, paths, hashes, rest, batch_size, workers)

    return run(), [] if encode_missing else todo


def _encode(
    store: Any,
    ident: dict[str, Any],
    tails: RunTails,
    paths: Sequence[str],
    hashes: Sequence[str],
    rest: list[int],
    batch_size: int,
    workers: int | None,
) -> Batches:
    """Decode the photos at `rest`, store their activations, yield their rows."""
    from core.vision.activations import ActivationWriter, frozen_pair

    enc = tails.encoder
    loader = image_loader(
        [paths[i] for i in rest],
        enc.backbone.preprocess(False, enc.image_size),  # the transform training stores with
        enc.image_size,
        batch_size,
        workers,
        enc.device,
    )
    writer = ActivationWriter(store, ident)
    tails.frozen.eval().to(enc.device)
    done = 0
    for x, ok, reason in loader:
        pos = rest[done : done + len(x)]
        done += len(x)
        acts = frozen_pair(tails.frozen, x, enc.device)
        good = ok.numpy().astype(bool)
        writer.add([hashes[i] for i, g in zip(pos, good, strict=True) if g], acts[good])
        rows = tails.rows(acts)
        rows.ok = good
        rows.reasons = [r or None for r in reason]
        yield pos, rows
    writer.flush()
    log.info("stored %s activations of %d photos while indexing", tails.split, done)
