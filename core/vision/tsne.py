"""t-SNE of penultimate features (scikit-learn's TSNE; no extra dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.io import atomic_save_npz


def tsne_2d(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(n, 2) t-SNE coordinates; PCA to 50 dimensions first, as is usual, for speed."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    if x.shape[1] > 50 and x.shape[0] > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def cached_tsne(run_dir: str | Path, features: np.ndarray, epoch: int, seed: int = 0) -> np.ndarray:
    """t-SNE of a run's test features, stored as tsne.npz beside them (recomputed when the
    evaluated epoch changed)."""
    path = Path(run_dir) / "tsne.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                if int(z["epoch"]) == epoch and len(z["xy"]) == len(features):
                    return z["xy"]
        except (OSError, ValueError, KeyError):  # a damaged cache is recomputed
            pass
    xy = tsne_2d(features, seed)
    atomic_save_npz(path, xy=xy, epoch=np.asarray(epoch))
    return xy
