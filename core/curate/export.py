"""Export a set of images into class folders (copies or symbolic links), with a CSV of
paths, labels and scores: what the study's script did by hand. Also as a zip in memory for
the app's download button. The source files are only read, never moved or changed.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.io import (
    InsideInputError,
    OutsideRootsError,
    atomic_write_text,
    confine,
    refuse_inside,
)

if TYPE_CHECKING:
    from core.data.review import Review

log = logging.getLogger(__name__)

MODES = ("copy", "link")
CSV_NAME = "export.csv"
UNLABELLED = "unlabelled"
Progress = Callable[[int, int], None]


class ExportError(ValueError):
    """Nothing to export, an unusable destination, or a bad mode."""


@dataclass(frozen=True)
class ExportItem:
    path: str
    label: str | None
    score: float | None = None


def reviewed(items: Sequence[ExportItem], review: Review | str | Path) -> list[ExportItem]:
    """`items` with a review (core.data.review.Review, or its file) applied: removed images
    left out, relabelled ones under their new label, scores kept."""
    from core.data.review import apply_review

    pairs, _ = apply_review([(it.path, it.label) for it in items], review)
    score = {it.path: it.score for it in items}
    return [ExportItem(p, y, score[p]) for p, y in pairs]


def of_labels(items: Sequence[ExportItem], labels: Sequence[str]) -> list[ExportItem]:
    """The items filed under one of `labels`."""
    wanted = set(labels)
    return [it for it in items if it.label in wanted]


def _folder_name(label: str | None) -> str:
    """A safe folder name for a label (no separators or leading dots)."""
    name = re.sub(r"[^\w\- ]+", "_", str(label or UNLABELLED)).strip(" ._")
    return name or UNLABELLED


def plan_names(items: Sequence[ExportItem]) -> list[str]:
    """Relative destination of each item, <label>/<file name>; a clash gets a numbered name."""
    used: set[str] = set()
    out = []
    for it in items:
        folder, name = _folder_name(it.label), Path(it.path).name
        stem, suffix = Path(name).stem, Path(name).suffix
        rel, n = f"{folder}/{name}", 1
        while rel in used:
            rel, n = f"{folder}/{stem}-{n}{suffix}", n + 1
        used.add(rel)
        out.append(rel)
    return out


def _csv_text(items: Sequence[ExportItem], names: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "source", "label", "score"])
    for it, rel in zip(items, names, strict=True):
        w.writerow([rel, it.path, it.label or "", "" if it.score is None else f"{it.score:.6f}"])
    return buf.getvalue()


def dedupe(items: Sequence[ExportItem]) -> list[ExportItem]:
    """Drop repeats of the same source file (keeps the first)."""
    seen: set[str] = set()
    out = []
    for it in items:
        if it.path not in seen:
            seen.add(it.path)
            out.append(it)
    return out


def _checked(items: Sequence[ExportItem], roots: Sequence[str | Path] | None) -> list[ExportItem]:
    """`items` without repeats, each a regular file inside `roots` (when given: the folders
    an index was built from, or the data folder), checked before anything is written."""
    items = dedupe(items)
    if not items:
        raise ExportError("nothing to export: the selection is empty")
    if roots is not None:
        try:
            for it in items:
                confine(it.path, roots)
        except OutsideRootsError as exc:
            raise ExportError(str(exc)) from None
    missing = [it.path for it in items if not Path(it.path).is_file()]
    if missing:
        raise ExportError(
            f"{len(missing)} selected files are missing or not regular files, e.g. {missing[0]}"
        )
    return items


def export_folder(
    items: Sequence[ExportItem],
    out_dir: str | Path,
    mode: str = "copy",
    progress: Progress | None = None,
    roots: Sequence[str | Path] | None = None,
) -> Path:
    """Write `items` into `out_dir`/<label>/ (copies, or symbolic links to the originals) and
    `out_dir`/export.csv. `out_dir` must be new or empty: nothing is overwritten. With `roots`,
    every item must lie inside one of them. The export is written into a hidden folder beside
    `out_dir` and renamed into place whole: a failure leaves no half export."""
    if mode not in MODES:
        raise ExportError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty folder; choose a new one")
    try:  # written inside a data folder, an export becomes part of it (a seventh class)
        refuse_inside(out, roots or (), "the export folder")
    except InsideInputError as exc:
        raise ExportError(str(exc)) from None
    items = _checked(items, roots)
    names = plan_names(items)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for k, (it, rel) in enumerate(zip(items, names, strict=True)):
            dest = work / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if mode == "copy":
                shutil.copy2(it.path, dest)
            else:
                os.symlink(os.path.realpath(it.path), dest)
            if progress:
                progress(k + 1, len(items))
        atomic_write_text(work / CSV_NAME, _csv_text(items, names))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log.info("exported %d images to %s (%s)", len(items), out, mode)
    return out / CSV_NAME


def export_zip(items: Sequence[ExportItem], roots: Sequence[str | Path] | None = None) -> bytes:
    """The same layout as `export_folder` (copies), as zip bytes."""
    items = _checked(items, roots)
    names = plan_names(items)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not compress
        for it, rel in zip(items, names, strict=True):
            zf.write(it.path, rel)
        zf.writestr(CSV_NAME, _csv_text(items, names))
    return buf.getvalue()
