"""Finding a labelled image data set on disk.

Layouts understood (class = sub-folder name):
  kaggle:        ROOT/seg_train/<class>/*.jpg, ROOT/seg_test/<class>/*.jpg, optional ROOT/seg_pred/*.jpg
                 (the Kaggle zip's doubled folders, seg_train/seg_train/<class>, work too)
  plain:         ROOT/train/<class>/*, ROOT/test/<class>/* (optional val/, pred/)
  class-folders: ROOT/<class>/*  (one split, e.g. a folder passed as --train DIR)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("seg_train", "train", "training"),
    "test": ("seg_test", "test", "testing"),
    "val": ("seg_val", "val", "valid", "validation"),
    "pred": ("seg_pred", "pred", "predict", "unlabeled", "unlabelled"),
}

EXPECTED_LAYOUT = (
    "expected a folder with seg_train/<class>/ and seg_test/<class>/ (the Kaggle Intel layout, "
    "optional seg_pred/), or train/<class>/ and test/<class>/, or just <class>/ sub-folders "
    "holding .jpg/.png images"
)


class DatasetError(ValueError):
    """The folder is missing, empty, or not in a layout SceneSeek understands."""


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    split: str
    label: str | None  # None for unlabelled images (seg_pred)


@dataclass
class Dataset:
    root: Path
    layout: str
    records: list[ImageRecord]
    class_names: list[str]
    # Files that are not images by extension: (path, reason). Shown, never silently dropped.
    ignored: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def splits(self) -> list[str]:
        order = {s: i for i, s in enumerate(SPLIT_ALIASES)}
        return sorted({r.split for r in self.records}, key=lambda s: order.get(s, 99))

    def split(self, name: str) -> list[ImageRecord]:
        return [r for r in self.records if r.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: n}} over all files found (before validation)."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            out.setdefault(r.split, {}).setdefault(r.label or "(unlabelled)", 0)
            out[r.split][r.label or "(unlabelled)"] += 1
        return out


def safe_resolve(path: str | Path) -> Path | None:
    """`path` made absolute with symlinks resolved, or None when it cannot be (a symlink
    loop): one such file is skipped, it must not abort a whole run."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError):  # RuntimeError: "Symlink loop" (Python < 3.13)
        return None


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _unwrap(folder: Path) -> Path:
    """Kaggle zips nest seg_train/seg_train/<class>; descend through such doubled folders."""
    subs = _subdirs(folder)
    while len(subs) == 1 and subs[0].name == folder.name:
        folder = subs[0]
        subs = _subdirs(folder)
    return folder


def _walk_files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames))
    return out


def _scan_split(
    folder: Path, split: str, labelled: bool
) -> tuple[list[ImageRecord], list[tuple[Path, str]]]:
    folder = _unwrap(folder)
    records: list[ImageRecord] = []
    ignored: list[tuple[Path, str]] = []
    class_dirs = _subdirs(folder) if labelled else []
    if labelled:
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.name not in IGNORED_NAMES:
                ignored.append((p, "file outside a class folder"))
    sources = [(d, d.name) for d in class_dirs] if labelled else [(folder, None)]
    for d, label in sources:
        for f in _walk_files(d):
            if f.name in IGNORED_NAMES or f.name.startswith("."):
                continue
            if _is_image_name(f.name):
                records.append(ImageRecord(f, split, label))
            else:
                ignored.append((f, f"not an image extension ({f.suffix or 'none'})"))
    return records, ignored


def scan_class_folder(folder: str | Path, split: str = "all") -> Dataset:
    """A folder of <class>/ sub-folders, as one split (e.g. `--train seg_train`)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder; {EXPECTED_LAYOUT}")
    records, ignored = _scan_split(folder, split, labelled=True)
    if not records:
        raise DatasetError(f"{folder}: no images found in class sub-folders; {EXPECTED_LAYOUT}")
    classes = sorted({r.label for r in records if r.label})
    return Dataset(_unwrap(folder), "class-folders", records, classes, ignored)


def find_dataset(root: str | Path) -> Dataset:
    """Find train/test(/val/pred) splits under `root`; raise DatasetError if none."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; {EXPECTED_LAYOUT}")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; {EXPECTED_LAYOUT}")
    subs = {p.name.lower(): p for p in _subdirs(root)}
    records: list[ImageRecord] = []
    ignored: list[tuple[Path, str]] = []
    layout = None
    used: set[str] = set()
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in subs:
                used.add(alias)
                recs, ign = _scan_split(subs[alias], split, labelled=split != "pred")
                if split == "pred":
                    recs = [ImageRecord(r.path, r.split, None) for r in recs]
                records += recs
                ignored += ign
                layout = layout or ("kaggle" if alias.startswith("seg_") else "plain")
                break
    if layout is None:
        # Maybe ROOT itself holds class folders.
        try:
            return scan_class_folder(root, split="train")
        except DatasetError:
            raise DatasetError(f"{root}: no images found; {EXPECTED_LAYOUT}") from None
    if not any(r.label for r in records):
        raise DatasetError(f"{root}: found split folders but no labelled images; {EXPECTED_LAYOUT}")
    names = ", ".join(SPLIT_ALIASES)
    for name, folder in sorted(subs.items()):
        if name not in used:  # e.g. extra/ beside train/ and test/: listed, never silent
            ignored.append(
                (folder, f"folder beside the split folders, not read (splits are: {names})")
            )
    classes = sorted({r.label for r in records if r.label})
    return Dataset(root, layout, records, classes, ignored)
