"""Labelled splits: which images train, validate and test a run.

`labelled_split` lists the usable images of one <class>/ folder (through the manifest);
`split_data` (folders) and `manifest_split` (a data set's validated manifest) turn them into a
run's `SplitData`, the one place that maps class names to indices and refuses test or
validation classes the training data lacks.

The validation split is what chooses checkpoints, stopping points and hyperparameters.
Nothing is chosen on the test set. Every training run holds out a validation set: the data
set's own `val/` folder when it has one (`find_val_folder`), else a seeded, stratified share
of the training images (`stratified_split`: the same images for the same seed, fraction and
files, whatever order they were listed in, and each class in its own proportion).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.data.dataset import SPLIT_ALIASES, DatasetError

if TYPE_CHECKING:
    from core.data.manifest import Manifest

DEFAULT_VAL_FRACTION = 0.1


@dataclass
class SplitData:
    """Training images, test images and (optionally) a validation folder's images. Without
    val_paths the run holds out `val_fraction` of the training images."""

    train_paths: list[str]
    train_labels: list[int]
    test_paths: list[str]
    test_labels: list[int]
    class_names: list[str]
    val_paths: list[str] = field(default_factory=list)
    val_labels: list[int] = field(default_factory=list)
    val_source: str = ""


Labelled = tuple[Sequence[str | Path], Sequence[str]]  # (paths, class names)


def labelled_split(
    folder: str | Path,
    split: str,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Path], list[str], int]:
    """(paths, labels, n_skipped) of the usable images in a folder of <class>/ sub-folders.

    Every file is validated through the manifest (cached), so broken files are skipped with
    a reason instead of reaching the decoder. Raises DatasetError for an unusable folder."""
    from core.config import resolve_cache_dir
    from core.data.dataset import scan_class_folder
    from core.data.manifest import build_manifest

    ds = scan_class_folder(folder, split)
    manifest = build_manifest(ds, resolve_cache_dir(cache_dir), progress=progress)
    paths, labels = manifest.paths_labels(split)
    if not paths:
        raise DatasetError(f"{folder}: no usable images (all {len(ds.records)} were skipped)")
    return paths, labels, len(manifest.skipped())


def labelled_data(
    train: Labelled,
    test: Labelled,
    val: Labelled | None = None,
    test_source: str | Path = "test",
    val_source: str | Path = "",
) -> SplitData:
    """A run's SplitData from (paths, class name) lists; the class names are the training
    images' classes. A test or validation class the training data lacks raises DatasetError
    (the head would have no output for it)."""
    names = sorted(set(train[1]))
    index = {n: i for i, n in enumerate(names)}
    va_p, va_y = val or ((), ())
    for labels, source in ((test[1], test_source), (va_y, val_source)):
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise DatasetError(f"{source}: classes not in the training data: {unknown}")
    return SplitData(
        [str(p) for p in train[0]],
        [index[y] for y in train[1]],
        [str(p) for p in test[0]],
        [index[y] for y in test[1]],
        names,
        [str(p) for p in va_p],
        [index[y] for y in va_y],
        str(val_source) if val is not None else "",
    )


def split_data(
    train_dir: str | Path,
    test_dir: str | Path,
    cache_dir: str | Path | None = None,
    val_dir: str | Path | None = None,
    find_val: bool = True,
) -> SplitData:
    """Usable train/test images; class names are the training folder's classes. The
    validation images come from `val_dir`, else from a val/ (seg_val/, valid/...) folder
    beside the training folder when `find_val`; without one the run holds out a share of the
    training images."""
    train = labelled_split(train_dir, "train", cache_dir)[:2]
    test = labelled_split(test_dir, "test", cache_dir)[:2]
    if val_dir is None and find_val:
        val_dir = find_val_folder(train_dir)
    val = labelled_split(val_dir, "val", cache_dir)[:2] if val_dir is not None else None
    return labelled_data(train, test, val, test_dir, val_dir or "")


def manifest_split(manifest: Manifest) -> SplitData:
    """The data set's own train and test images (and its val/ folder's, when it has one) from
    its validated manifest. Raises DatasetError when it lacks labelled train or test images."""
    train, test, val = (manifest.paths_labels(s) for s in ("train", "test", "val"))
    if not train[0] or not test[0]:
        raise DatasetError(
            f"{manifest.root}: training needs labelled train and test images (seg_train/<class>/ "
            "and seg_test/<class>/, or train/<class>/ and test/<class>/)"
        )
    return labelled_data(
        train,
        test,
        val if val[0] else None,
        f"{manifest.root} (test)",
        "the data set's val/ folder",
    )


@dataclass
class Partition:
    """Training and validation images as indices into one pool (train folder, then val folder)."""

    paths: list[str]
    labels: list[int]
    train_idx: np.ndarray
    val_idx: np.ndarray
    source: str  # "held out 10% of the training images (seed 0)" or "folder DIR"
    train_paths: list[str] = field(init=False, repr=False)
    val_paths: list[str] = field(init=False, repr=False)
    train_labels: list[int] = field(init=False, repr=False)
    val_labels: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.train_paths = [self.paths[i] for i in self.train_idx]
        self.val_paths = [self.paths[i] for i in self.val_idx]
        self.train_labels = [self.labels[i] for i in self.train_idx]
        self.val_labels = [self.labels[i] for i in self.val_idx]

    def key(self) -> str:
        """Identifies the split (which files train, which validate) for resume checks."""
        h = hashlib.sha256()
        for part in (self.train_idx, self.val_idx):
            for i in part:
                h.update(f"{self.paths[i]}\t{self.labels[i]}\n".encode())
            h.update(b"--\n")
        return h.hexdigest()[:24]


def stratified_split(
    paths: Sequence[str], labels: Sequence[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): `fraction` of each class (rounded, at least one image of every
    class with two or more) goes to validation. Deterministic in (files, fraction, seed): the
    draw is over the files sorted by path, so the listing order does not matter."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, not {fraction}")
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for c in sorted(set(labels_arr.tolist())):
        members = sorted(np.flatnonzero(labels_arr == c).tolist(), key=lambda i: paths[i])
        n_val = round(fraction * len(members))
        n_val = min(max(1, n_val), len(members) - 1) if len(members) >= 2 else 0
        pick = rng.permutation(len(members))[:n_val]
        val += [members[i] for i in pick]
    val_idx = np.asarray(sorted(val), dtype=np.int64)
    mask = np.ones(len(labels_arr), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx


def find_val_folder(train_dir: str | Path) -> Path | None:
    """A validation folder beside the training folder (seg_val/, val/, valid/, validation/)."""
    train_dir = Path(train_dir).expanduser()
    parent = train_dir.parent
    if not parent.is_dir():
        return None
    names = {p.name.lower(): p for p in parent.iterdir() if p.is_dir()}
    for alias in SPLIT_ALIASES["val"]:
        if alias in names and names[alias] != train_dir:
            return names[alias]
    return None


def make_partition(
    train_paths: Sequence[str],
    train_labels: Sequence[int],
    val_paths: Sequence[str],
    val_labels: Sequence[int],
    fraction: float,
    seed: int,
    val_source: str = "",
) -> Partition:
    """The run's partition: a given validation set (a folder) or a held-out share."""
    if val_paths:
        paths = [*map(str, train_paths), *map(str, val_paths)]
        n = len(train_paths)
        return Partition(
            paths,
            [*train_labels, *val_labels],
            np.arange(n, dtype=np.int64),
            np.arange(n, len(paths), dtype=np.int64),
            f"folder {val_source}" if val_source else "validation folder",
        )
    tr, va = stratified_split([str(p) for p in train_paths], train_labels, fraction, seed)
    if len(va) == 0:
        raise ValueError("too few training images to hold out a validation set (need 2 per class)")
    return Partition(
        [str(p) for p in train_paths],
        list(train_labels),
        tr,
        va,
        f"held out {fraction:.0%} of the training images (seed {seed}, stratified)",
    )
