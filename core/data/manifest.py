"""The manifest: one row per file of a data set, with what decoding it found.

Columns: path, split, class, width, height, mode, format, bytes, sha256, status, reason, note.
status is "ok", "converted" (usable after a fix, see note) or "skipped" (see reason).

Built once and cached under the cache folder; rebuilt only for files whose size or
modification time changed, so a second load of an unchanged data set decodes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.config import DEFAULT_CACHE_DIR
from core.data.dataset import Dataset, ImageRecord
from core.data.images import check_image
from core.io import atomic_path, read_regular

log = logging.getLogger(__name__)

COLUMNS = [
    "path",
    "split",
    "class",
    "width",
    "height",
    "mode",
    "format",
    "bytes",
    "sha256",
    "status",
    "reason",
    "note",
    "size_ns",
]
MANIFEST_VERSION = 1
Progress = Callable[[int, int], None]


@dataclass
class Manifest:
    df: pd.DataFrame
    root: Path
    class_names: list[str]
    from_cache: int = 0  # rows reused from the on-disk cache
    inspected: int = 0  # rows decoded in this call

    def usable(self, split: str | None = None) -> pd.DataFrame:
        """Rows whose image can be used (ok or converted)."""
        df = self.df[self.df["status"] != "skipped"]
        return df if split is None else df[df["split"] == split]

    def skipped(self) -> pd.DataFrame:
        return self.df[self.df["status"] == "skipped"]

    def converted(self) -> pd.DataFrame:
        return self.df[self.df["status"] == "converted"]

    def modal_size(self) -> tuple[int, int] | None:
        ok = self.usable()
        if ok.empty:
            return None
        w, h = ok.groupby(["width", "height"]).size().idxmax()
        return int(w), int(h)

    def odd_sizes(self) -> pd.DataFrame:
        """Usable images whose size differs from the data set's usual one (resized at load)."""
        size = self.modal_size()
        ok = self.usable()
        if size is None:
            return ok
        return ok[(ok["width"] != size[0]) | (ok["height"] != size[1])]

    def reason_counts(self) -> dict[str, int]:
        """How many files were skipped or fixed, by reason: every one is counted."""
        skipped = self.skipped()["reason"].value_counts().to_dict()
        conv = self.converted()["note"].value_counts().to_dict()
        out = {f"skipped: {k}": int(v) for k, v in skipped.items()}
        out.update({f"used: {k}": int(v) for k, v in conv.items()})
        odd = len(self.odd_sizes())
        if odd:
            w, h = self.modal_size() or (0, 0)
            out[f"used: size other than {w}x{h} (resized at load)"] = odd
        return out

    def duplicates(self) -> pd.DataFrame:
        """All rows whose content hash occurs more than once, grouped by hash."""
        df = self.df[self.df["sha256"] != ""]
        dup = df[df.duplicated("sha256", keep=False)]
        return dup.sort_values(["sha256", "split", "class", "path"]).reset_index(drop=True)

    def cross_class_duplicates(self) -> pd.DataFrame:
        """Duplicate groups whose copies are filed under more than one class."""
        dup = self.duplicates()
        if dup.empty:
            return dup
        n_classes = dup.groupby("sha256")["class"].transform(lambda s: s.dropna().nunique())
        return dup[n_classes > 1].reset_index(drop=True)

    def paths_labels(self, split: str) -> tuple[list[Path], list[str]]:
        rows = self.usable(split)
        rows = rows[rows["class"].notna()]
        return [Path(p) for p in rows["path"]], rows["class"].astype(str).tolist()


def _inspect(rec: ImageRecord) -> dict:
    path = rec.path
    try:
        st = path.stat()
        data = read_regular(path)  # never a device or FIFO, never past the size cap
    except OSError as exc:
        note = str(exc.strerror or exc)
        return _row(rec, 0, "", 0, status="skipped", reason="unreadable", note=note)
    sha = hashlib.sha256(data).hexdigest() if data else ""
    check = check_image(data, keep=False)
    status = "skipped" if not check.ok else ("converted" if check.note else "ok")
    row = _row(
        rec, len(data), sha, st.st_mtime_ns, status=status, reason=check.reason, note=check.note
    )
    row.update(width=check.width, height=check.height, mode=check.mode, format=check.format)
    return row


def _row(rec: ImageRecord, nbytes: int, sha: str, mtime_ns: int, **kw) -> dict:
    return {
        "path": str(rec.path),
        "split": rec.split,
        "class": rec.label,
        "width": 0,
        "height": 0,
        "mode": "",
        "format": "",
        "bytes": nbytes,
        "sha256": sha,
        "status": kw.get("status", "ok"),
        "reason": kw.get("reason"),
        "note": kw.get("note"),
        "size_ns": f"{nbytes}:{mtime_ns}",
    }


def _cache_file(root: Path, cache_dir: Path) -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir / "manifests" / f"v{MANIFEST_VERSION}-{key}.parquet"


def build_manifest(
    dataset: Dataset,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    progress: Progress | None = None,
    workers: int | None = None,
) -> Manifest:
    """Inspect every file of `dataset`; reuse cached rows for files that did not change."""
    cached: dict[str, dict] = {}
    cache_file = _cache_file(dataset.root, Path(cache_dir)) if cache_dir else None
    if cache_file and cache_file.exists():
        try:
            old = pd.read_parquet(cache_file)
            cached = {r["path"]: r for r in old.to_dict("records")}
        except Exception as exc:  # a damaged cache is rebuilt, not fatal
            log.warning("ignoring unreadable manifest cache %s: %s", cache_file, exc)

    rows: list[dict | None] = [None] * len(dataset.records)
    todo: list[int] = []
    for i, rec in enumerate(dataset.records):
        prev = cached.get(str(rec.path))
        if prev is not None and prev["split"] == rec.split and prev["class"] == rec.label:
            try:
                st = rec.path.stat()
            except OSError:
                st = None
            if st is not None and prev["size_ns"] == f"{st.st_size}:{st.st_mtime_ns}":
                rows[i] = prev
                continue
        todo.append(i)

    done = len(dataset.records) - len(todo)
    if progress:
        progress(done, len(dataset.records))
    if todo:
        n_workers = workers or min(8, (os.cpu_count() or 2) * 2)
        with ThreadPoolExecutor(n_workers) as pool:
            for k, row in enumerate(pool.map(_inspect, [dataset.records[i] for i in todo])):
                rows[todo[k]] = row
                if progress and (k % 64 == 0 or k == len(todo) - 1):
                    progress(done + k + 1, len(dataset.records))
    df = pd.DataFrame([r for r in rows if r is not None], columns=COLUMNS)
    for col in ("width", "height", "bytes"):
        df[col] = df[col].astype("int64")
    if (cache_file and todo) or (cache_file and len(cached) != len(df)):
        with atomic_path(cache_file) as tmp:
            df.to_parquet(tmp, index=False)
    log.info(
        "manifest of %s: %d files, %d decoded, %d from cache",
        dataset.root,
        len(df),
        len(todo),
        done,
    )
    return Manifest(df, dataset.root, dataset.class_names, from_cache=done, inspected=len(todo))
