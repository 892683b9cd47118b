"""The validation split: what chooses checkpoints, stopping points and hyperparameters.

Nothing is chosen on the test set. Every training run holds out a validation set: the data
set's own `val/` folder when it has one (`find_val_folder`), else a seeded, stratified share
of the training images (`stratified_split`: the same images for the same seed, fraction and
files, whatever order they were listed in, and each class in its own proportion).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.dataset import SPLIT_ALIASES

DEFAULT_VAL_FRACTION = 0.1


@dataclass
class Partition:
    """Training and validation images as indices into one pool (train folder, then val folder)."""

    paths: list[str]
    labels: list[int]
    train_idx: np.ndarray
    val_idx: np.ndarray
    source: str  # "held out 10% of the training images (seed 0)" or "folder DIR"

    @property
    def train_paths(self) -> list[str]:
        return [self.paths[i] for i in self.train_idx]

    @property
    def val_paths(self) -> list[str]:
        return [self.paths[i] for i in self.val_idx]

    @property
    def train_labels(self) -> list[int]:
        return [self.labels[i] for i in self.train_idx]

    @property
    def val_labels(self) -> list[int]:
        return [self.labels[i] for i in self.val_idx]

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
