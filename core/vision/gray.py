"""Grayscale pixel vectors for the eigen-image classifier, decoded once and cached on disk.

`load_gray_images(paths, image_size)` decodes every file with the data layer's safe decoder
(`check_image`), converts it to 8-bit luma ("L"), resizes it to image_size x image_size and
returns one row of float32 pixels in [0, 1] per path. Files that cannot be decoded do not stop
the run: they are reported in `GrayImages.reasons` and flagged in `ok`.

The decoded block is cached as one .npz under <cache>/gray/, keyed by the image size, the
resampling and the sorted (path, size, mtime) of every file, so a second load of unchanged
files reads no JPEG.
`GrayscaleImages` is the loader as a scikit-learn transformer (paths in, pixel matrix out;
`load_gray_images` is its function form), and `cap_per_class` thins a labelled list.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin

from core.config import resolve_cache_dir
from core.data.images import check_image
from core.io import atomic_save_npz, file_stamp

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
GRAY_CACHE_VERSION = 1
# "linear" (default): bilinear *sampling* of the 2x2 nearest source pixels, what OpenCV's
#   cv2.resize does by default (INTER_LINEAR) and so what scripts like the study's feed PCA;
#   it keeps fine texture, which 1-NN on pixels profits from.
# "antialias": PIL's bicubic filter, which low-pass filters when shrinking.
# Measured on the Intel data (8,741 / 1,087 images, k=39, 64 px, exact PCA, 1-NN): test
# accuracy 0.4195 with "linear", 0.4121 with "antialias".
RESAMPLE_MODES = ("linear", "antialias")
# Value given to rows of unusable files by the transformer (mid-gray, so they stay finite).
FILL_VALUE = 0.5


@dataclass
class GrayImages:
    """Decoded pixels, one row per requested path, in the order requested."""

    pixels: np.ndarray  # (n, image_size * image_size) float32 in [0, 1]
    ok: np.ndarray  # (n,) bool: False where the file could not be decoded (row is FILL_VALUE)
    reasons: dict[str, str]  # path -> why it was skipped
    image_size: int
    from_cache: bool = False

    @property
    def n_skipped(self) -> int:
        return int((~self.ok).sum())


@functools.lru_cache(maxsize=64)
def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and weight of i1 for each output pixel, with OpenCV's
    half-pixel alignment: x = (i + 0.5) * n_in / n_out - 0.5, clamped at the borders."""
    x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    i0 = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, x - i0


def resize_linear(gray: np.ndarray, size: int) -> np.ndarray:
    """Bilinear sampling of a 2-D uint8 image to size x size, like cv2.resize INTER_LINEAR."""
    y0, y1, fy = _linear_taps(gray.shape[0], size)
    x0, x1, fx = _linear_taps(gray.shape[1], size)
    a = gray.astype(np.float32)
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    out = top * (1 - fy)[:, None] + bottom * fy[:, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def decode_gray(
    path: str | Path, image_size: int, resample: str = "linear"
) -> tuple[np.ndarray | None, str | None]:
    """(image_size x image_size uint8 luma, None), or (None, reason) for an unusable file."""
    check = check_image(path)
    if check.image is None:
        return None, check.reason or "unreadable"
    gray = check.image.convert("L")
    if resample == "antialias":
        small = gray.resize((image_size, image_size), Image.Resampling.BICUBIC)
        return np.asarray(small, dtype=np.uint8), None
    return resize_linear(np.asarray(gray, dtype=np.uint8), image_size), None


def cache_key(paths: Sequence[str | Path], image_size: int, resample: str = "linear") -> str:
    """Content key: image size, resampling and the sorted (path, bytes, mtime) of every file."""
    names = sorted({os.path.abspath(p) for p in paths})
    blob = json.dumps(
        [GRAY_CACHE_VERSION, int(image_size), resample, [file_stamp(p) for p in names]]
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def cache_file(
    paths: Sequence[str | Path], image_size: int, cache_dir: str | Path, resample: str = "linear"
) -> Path:
    key = cache_key(paths, image_size, resample)
    return Path(cache_dir) / "gray" / f"v{GRAY_CACHE_VERSION}-{image_size}px-{resample}-{key}.npz"


def _decode_all(
    names: list[str],
    image_size: int,
    resample: str,
    progress: Progress | None,
    workers: int | None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode in a thread pool (PIL releases the GIL while decoding)."""
    n = len(names)
    pixels = np.zeros((n, image_size * image_size), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    reasons = [""] * n
    if progress:
        progress(0, n)
    n_workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(n_workers) as pool:
        results = pool.map(lambda p: decode_gray(p, image_size, resample), names)
        for i, (arr, reason) in enumerate(results):
            if arr is None:
                reasons[i] = reason or "unreadable"
            else:
                pixels[i] = arr.reshape(-1)
                ok[i] = True
            if progress and (i % 64 == 0 or i == n - 1):
                progress(i + 1, n)
    return pixels, ok, reasons


def _read_cache(path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(pixels, ok, reasons) from a cache file of exactly these paths, else None."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if z["paths"].tolist() != names:
                return None  # hash collision or foreign file: decode again
            return z["pixels"], z["ok"], z["reasons"].tolist()
    except Exception as exc:  # a damaged cache is rebuilt, not fatal
        log.warning("ignoring unreadable gray-image cache %s: %s", path, exc)
        return None


def _rows(
    requested: list[str], names: list[str], decoded: tuple[np.ndarray, np.ndarray, list[str]]
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(float pixels, ok, reasons of the bad files) in the requested order, from the decoded
    sorted unique `names`; unusable rows get FILL_VALUE."""
    pixels, ok, reasons = decoded
    index = {p: i for i, p in enumerate(names)}
    rows = np.fromiter((index[p] for p in requested), dtype=np.int64, count=len(requested))
    out = pixels[rows].astype(np.float32) / np.float32(255.0)
    ok_rows = np.asarray(ok, dtype=bool)[rows]
    out[~ok_rows] = FILL_VALUE
    bad = {names[i]: reasons[i] for i in np.flatnonzero(~np.asarray(ok, dtype=bool))}
    if bad:
        log.warning(
            "%d of %d images could not be decoded and were given a flat gray row",
            len(bad),
            len(names),
        )
    return out, ok_rows, bad


def load_gray_images(
    paths: Sequence[str | Path],
    image_size: int = 64,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> GrayImages:
    """Pixels of `paths` as (n, image_size**2) float32 in [0, 1]; see the module docstring.
    `options` (keyword only) are `GrayscaleImages`'s: resample, use_cache, progress, workers."""
    return GrayscaleImages(image_size, cache_dir, **options).load(paths)


class GrayscaleImages(TransformerMixin, BaseEstimator):
    """Transformer: a list of image paths -> (n, image_size**2) float32 grayscale pixels.

    Stateless (fit does nothing), so it sits in front of `EigenImageClassifier` in a Pipeline:
    `Pipeline([("gray", GrayscaleImages(64)), ("pca", EigenImageClassifier(39))])`.
    Unusable files become a flat gray row (logged); filter them out beforehand with the
    manifest (`Manifest.paths_labels`) to drop them instead.
    """

    def __init__(
        self,
        image_size: int = 64,
        cache_dir: str | Path | None = None,
        resample: str = "linear",
        use_cache: bool = True,
        progress: Progress | None = None,
        workers: int | None = None,
    ) -> None:
        self.image_size = image_size
        self.cache_dir = cache_dir
        self.resample = resample
        self.use_cache = use_cache
        self.progress = progress
        self.workers = workers

    def fit(self, X: Sequence[str | Path], y: object = None) -> GrayscaleImages:
        self.n_features_out_ = int(self.image_size) ** 2
        return self

    def transform(self, X: Sequence[str | Path]) -> np.ndarray:
        return self.load(X).pixels

    def load(self, X: Sequence[str | Path]) -> GrayImages:
        """Like transform, but also says which files were unusable and whether it was cached;
        `load_gray_images` is this as a function."""
        if isinstance(X, str | Path):
            raise TypeError("expected a list of image paths, got a single path")
        size, resample = int(self.image_size), self.resample
        if size < 1:
            raise ValueError(f"image_size must be positive, got {size}")
        if resample not in RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
        requested = [os.path.abspath(p) for p in X]
        names = sorted(set(requested))
        target = None
        if self.use_cache and names:
            target = cache_file(names, size, resolve_cache_dir(self.cache_dir), resample)
        decoded = _read_cache(target, names) if target is not None else None
        from_cache = decoded is not None
        if decoded is None:
            decoded = _decode_all(names, size, resample, self.progress, self.workers)
            if target is not None:
                pixels, ok, reasons = decoded
                atomic_save_npz(
                    target, paths=np.array(names), pixels=pixels, ok=ok, reasons=np.array(reasons)
                )
                log.info("cached %d gray images at %s", len(names), target)
        elif self.progress:
            self.progress(len(names), len(names))
        return GrayImages(*_rows(requested, names, decoded), size, from_cache)

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


def cap_per_class(
    paths: Sequence[Path], labels: Sequence[str], cap: int
) -> tuple[list[Path], list[str]]:
    """At most `cap` images per class (0: all), spread evenly over each class's sorted files:
    a smaller training set that fits and scores faster (the Eigen-images page's option)."""
    if cap <= 0:
        return list(paths), list(labels)
    by_class: dict[str, list[Path]] = {}
    for p, y in sorted(zip(paths, labels, strict=True)):
        by_class.setdefault(y, []).append(p)
    out_p: list[Path] = []
    out_y: list[str] = []
    for y, files in sorted(by_class.items()):
        step = max(1, len(files) // cap)
        chosen = files[::step][:cap]
        out_p += chosen
        out_y += [y] * len(chosen)
    return out_p, out_y
