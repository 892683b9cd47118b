"""Writing back what another engine encoded: the Ray engine's actors (core.search.ray_engine)
return the pretrained outputs their rows derive from (a partial run's: its activations), and
the driver adds them to its encoding store (core.vision.encodings) here, so a later local
index, audit or training run encodes nothing again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.search.partial_rows import RunTails
from core.vision.encodings import ACTIVATIONS, OUTPUTS, EncodingStore, encoder_identity


class StoreSink:
    """Writes the pretrained outputs (a partial run: the activations, "numerics"
    "activations") another engine encoded (core.search.ray_engine's actors return them) into
    this machine's encoding store, STORE_FLUSH rows a shard, so a later local index, audit or
    training run encodes nothing again. `hashes[i]` is the content hash of the engine's
    index i."""

    STORE_FLUSH = 512

    def __init__(self, encoder: Any, cache_dir: str | Path, hashes: dict[int, str]):
        self.encoder, self.hashes = encoder, hashes
        self.store = EncodingStore.at(cache_dir)
        self.pending: dict[str, tuple[list[str], list[dict[str, np.ndarray]]]] = {}
        self.rows = 0

    def __call__(
        self, idx: list[int], numerics: str, outputs: dict[str, np.ndarray], ok: np.ndarray
    ) -> None:
        hashes, parts = self.pending.setdefault(numerics, ([], []))
        hashes += [self.hashes[i] for i, good in zip(idx, ok, strict=True) if good]
        parts.append({n: v[ok] for n, v in outputs.items()})
        self.rows += int(ok.sum())
        if self.rows >= self.STORE_FLUSH:
            self.flush()

    def flush(self) -> None:
        for numerics, (hashes, parts) in self.pending.items():
            if not hashes:
                continue
            arrays = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
            if numerics == ACTIVATIONS:  # a partial run's (core.search.partial_rows)
                ident, kind = RunTails(self.encoder).identity(), ACTIVATIONS
            else:
                enc = self.encoder
                ident = encoder_identity(enc.backbone, enc.image_size, numerics, enc.amp)
                kind = OUTPUTS
            if ident is not None:
                self.store.put(ident, hashes, arrays, kind)
        self.pending, self.rows = {}, 0

    def wrap(self, batches: Iterator[tuple[list[int], Any]]) -> Iterator[Any]:
        """`batches`, flushing what is left once they end (or the consumer stops)."""
        try:
            yield from batches
        finally:
            self.flush()
