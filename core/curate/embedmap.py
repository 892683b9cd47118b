"""A 2-D map of the whole collection from its stored vectors: UMAP (umap-learn) or t-SNE
(openTSNE), after PCA to 50 dimensions. Computed once and cached under the vectors' key with
the method and its parameters, so the app never recomputes what it has."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.io import atomic_save_npz

log = logging.getLogger(__name__)

METHODS = ("umap", "tsne")
PCA_DIMS = 50


@dataclass
class MapParams:
    method: str = "umap"
    seed: int = 0
    n_neighbors: int = 15  # umap
    min_dist: float = 0.1  # umap
    perplexity: float = 30.0  # tsne

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"map method must be one of {', '.join(METHODS)}, not {self.method!r}")

    def key(self) -> str:
        d = {"method": self.method, "seed": self.seed, "pca": PCA_DIMS}
        if self.method == "umap":
            d.update(n_neighbors=self.n_neighbors, min_dist=self.min_dist)
        else:
            d.update(perplexity=self.perplexity)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _reduce(vectors: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    x = np.asarray(vectors, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if x.shape[1] > PCA_DIMS and len(x) > PCA_DIMS:
        x = PCA(PCA_DIMS, random_state=seed).fit_transform(x)
    return x.astype(np.float32)


def compute_map(vectors: np.ndarray, params: MapParams | None = None) -> np.ndarray:
    """(n, 2) coordinates of the vectors."""
    params = params or MapParams()
    n = len(vectors)
    if n < 3:
        return np.zeros((n, 2), np.float32)
    x = _reduce(vectors, params.seed)
    if params.method == "umap":
        import umap

        reducer = umap.UMAP(
            n_neighbors=min(params.n_neighbors, n - 1),
            min_dist=params.min_dist,
            random_state=params.seed,
            n_jobs=1,
        )
        xy = reducer.fit_transform(x)
    else:
        from openTSNE import TSNE

        perplexity = min(params.perplexity, max(2.0, (n - 1) / 3))
        xy = np.asarray(TSNE(perplexity=perplexity, random_state=params.seed, n_jobs=2).fit(x))
    return np.asarray(xy, np.float32)


def map_file(cache_root: str | Path, vectors_key: str, params: MapParams) -> Path:
    return Path(cache_root) / "curate" / vectors_key / f"map-{params.method}-{params.key()}.npz"


def cached_map(
    vectors: np.ndarray, vectors_key: str, cache_root: str | Path, params: MapParams | None = None
) -> tuple[np.ndarray, bool]:
    """(coordinates, from_cache): read from the cache when these vectors were mapped with
    these parameters before, else computed and stored atomically."""
    params = params or MapParams()
    path = map_file(cache_root, vectors_key, params)
    if path.exists():
        try:
            with np.load(path) as z:
                if len(z["xy"]) == len(vectors):
                    return z["xy"], True
        except (OSError, ValueError, KeyError) as exc:
            log.warning("recomputing unreadable map cache %s: %s", path, exc)
    t0 = time.perf_counter()
    xy = compute_map(vectors, params)
    log.info(
        "%s map of %d vectors in %.1f s", params.method, len(vectors), time.perf_counter() - t0
    )
    atomic_save_npz(path, xy=xy)
    return xy, False
