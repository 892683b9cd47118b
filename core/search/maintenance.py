"""Keeping the image index's promises: one writer at a time, moved files followed by their
content hash, rows of deleted files pruned, and results that say when a file is gone.

- `index_lock(index_dir)`: an exclusive lock on the index folder (an OS file lock, released
  by the kernel when the holder dies, even by `kill -9`). A second writer is refused with
  "index is being written by PID N" (or waits `timeout` seconds first).
- `apply_moves(...)`: a file that is new to the index but whose content hash is the hash of
  a row whose file no longer exists is a *move*: the row's path (and root, split, label,
  captions) are updated in one atomic LanceDB commit, nothing is re-encoded and no row is
  added.
- `prune(index_dir)`: deletes the rows whose files are gone (one atomic commit).
- `file_missing(path)`: what a search result's `missing` flag says.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.io import atomic_write_text, is_within
from core.search.index_format import quoted as _quoted

log = logging.getLogger(__name__)

LOCK_FILE = ".writer.lock"
PID_FILE = ".writer.pid"
F = TypeVar("F", bound=Callable[..., Any])


class IndexBusyError(RuntimeError):
    """Another process is writing this index."""


# --- one writer at a time -----------------------------------------------------------------------


def _writer_pid(index_dir: Path) -> str:
    try:
        return (index_dir / PID_FILE).read_text(encoding="utf-8").strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def index_lock(index_dir: str | Path, timeout: float = 0.0) -> Iterator[None]:
    """Hold the index folder's writer lock for the block; raise IndexBusyError when another
    process holds it for longer than `timeout` seconds (0: refuse at once)."""
    from filelock import FileLock, Timeout

    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(index_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise IndexBusyError(
            f"index {index_dir} is being written by PID {_writer_pid(index_dir)}; wait for "
            "it to finish and run again"
        ) from None
    try:
        atomic_write_text(index_dir / PID_FILE, f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            (index_dir / PID_FILE).unlink()
        lock.release()


def holds_index_lock(fn: F) -> F:
    """Decorator: run `fn` holding the writer lock of its `index_dir` argument."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        index_dir = sig.bind_partial(*args, **kwargs).arguments["index_dir"]
        with index_lock(index_dir):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --- files that are gone --------------------------------------------------------------------------


def file_missing(path: str, roots: Sequence[str] | None = None) -> bool:
    """True when a local indexed file no longer exists, or lies outside the local `roots` the
    index was built from (an index is data from elsewhere: a row naming /etc/shadow is not
    followed). URIs are not checked: too slow to ask object storage once per result."""
    if "://" in path and not path.startswith("file://"):
        return False
    local = path[len("file://") :] if path.startswith("file://") else path
    local_roots = [
        r.removeprefix("file://") for r in roots or () if "://" not in r or r.startswith("file://")
    ]
    if roots is not None and not is_within(local, local_roots):
        return True
    try:
        return not os.path.isfile(local)
    except (OSError, ValueError):
        return True


@dataclass
class PruneResult:
    checked: int
    removed: list[str]

    def to_dict(self) -> dict:
        return {"checked": self.checked, "removed": len(self.removed), "paths": self.removed}


def prune(index_dir: str | Path, dry_run: bool = False) -> PruneResult:
    """Delete the rows whose files are gone (holding the writer lock); index.json's row
    count is updated. Returns what was (or, with dry_run, would be) removed."""
    from core.io import atomic_write_json
    from core.search.index_format import delete_paths, meta_path, open_table, read_meta

    index_dir = Path(index_dir)
    with index_lock(index_dir):
        tbl = open_table(index_dir)
        with table_reads(index_dir):  # only the path column: the vectors stay on disk
            paths = tbl.search().select(["path"]).limit(max(1, tbl.count_rows())).to_arrow()
        paths = paths.column("path").to_pylist()
        gone = sorted(p for p in paths if file_missing(p))
        if gone and not dry_run:
            delete_paths(tbl, gone)
            meta = read_meta(index_dir)
            meta["rows"] = tbl.count_rows()
            meta["table_version"] = tbl.version
            atomic_write_json(meta_path(index_dir), meta)
        log.info("pruned %d of %d rows in %s", len(gone), len(paths), index_dir)
        return PruneResult(len(paths), gone)


# --- moved files ----------------------------------------------------------------------------------


def find_moves(
    new_paths: Sequence[str],
    new_shas: Sequence[str],
    existing: dict[str, tuple[str, str, list[str]]],
) -> dict[str, str]:
    """{new path: old path} for new files whose content hash is that of a row whose file no
    longer exists. `existing` is {path: (sha256, root, captions)} of the table's rows."""
    present = set(new_paths)
    orphans: dict[str, list[str]] = {}
    for p, (sha, _root, _caps) in existing.items():
        if sha and p not in present and file_missing(p):
            orphans.setdefault(sha, []).append(p)
    moves: dict[str, str] = {}
    for p, sha in zip(new_paths, new_shas, strict=True):
        if p in existing or not sha or not orphans.get(sha):
            continue
        moves[p] = orphans[sha].pop()  # each old row follows at most one new file
    return moves


def apply_moves(
    tbl: Any,
    files: Sequence[Any],  # files.ImageFile
    todo: list[int],
    gone: list[str],
    shas: Sequence[str],
    existing: dict[str, tuple[str, str, list[str]]],
    root: str,
    captions_for: Callable[[str, list[str]], list[str]],
    text_for: Callable[[dict, list[str]], str],
) -> int:
    """Update the rows of moved files in place (one atomic commit) and take them out of
    `todo` (nothing to encode) and `gone` (the row lives on). Returns how many moved."""
    if tbl is None or not todo:
        return 0
    cand = [files[i].path for i in todo]
    moves = find_moves(cand, [shas[i] for i in todo], existing)
    if not moves:
        return 0
    import pyarrow as pa

    old_of = {old: new for new, old in moves.items()}
    by_path = {f.path: f for f in files}
    olds = list(old_of)
    rows: list[dict] = []
    for k in range(0, len(olds), 500):  # only the moved rows, every column
        part = olds[k : k + 500]
        q = tbl.search().where(f"path IN ({_quoted(part)})").select(list(tbl.schema.names))
        rows += q.limit(len(part)).to_arrow().to_pylist()
    for row in rows:
        new = by_path[old_of[row["path"]]]
        caps = captions_for(new.path, list(row.get("captions") or []))
        row.update(path=new.path, root=root, split=new.split, label=new.label, captions=caps)
        if "text" in row:
            row["text"] = text_for(row, caps)
    table = pa.Table.from_pylist(rows, schema=tbl.schema)
    (
        tbl.merge_insert("path")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .when_not_matched_by_source_delete(f"path IN ({_quoted(list(old_of))})")
        .execute(table)
    )
    moved = set(moves)
    todo[:] = [i for i in todo if files[i].path not in moved]
    gone[:] = [p for p in gone if p not in old_of]
    log.info("%d files moved: rows updated, nothing re-encoded", len(moves))
    return len(moves)


# --- damaged files --------------------------------------------------------------------------------


def is_lance_damage(exc: BaseException) -> bool:
    """A Lance read error: what an overwritten, truncated or missing data file raises."""
    text = str(exc)
    return isinstance(exc, RuntimeError | OSError | ValueError) and (
        "lance error" in text.lower() or "LanceError" in text
    )


def damaged_table_error(where: Any, exc: BaseException) -> Exception:
    """The SearchIndexError that names a damaged table and what to do about it."""
    from core.search.index_format import SearchIndexError

    first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    return SearchIndexError(
        f"{where}: the index table is damaged ({first}); delete the folder and run "
        "`python -m core index` again"
    )


@contextlib.contextmanager
def table_reads(where: Any) -> Iterator[None]:
    """Turn a Lance read error inside the block into one clear SearchIndexError (wrap reads of
    the table with it: a damaged data file is then named, not a Lance panic message)."""
    try:
        yield
    except (RuntimeError, OSError, ValueError) as exc:
        if is_lance_damage(exc):
            raise damaged_table_error(where, exc) from exc
        raise


def read_arrow(tbl: Any, index_dir: str | Path | None = None) -> Any:
    """The whole table as Arrow; a damaged data file (overwritten, truncated) becomes one
    clear SearchIndexError instead of a Lance panic message."""
    uri = getattr(tbl, "uri", None)
    where = index_dir if index_dir is not None else (Path(uri).parent if uri else "the index")
    try:
        return tbl.to_arrow()
    except (RuntimeError, OSError, ValueError) as exc:
        raise damaged_table_error(where, exc) from exc


# --- index.json kept with the table ---------------------------------------------------------------

# The vector column's metadata holds what index.json cannot be rebuilt without: the encoder the
# vectors were made with, and the image roots with their captions files.
KEPT_KEY = "sceneseek:index"


def kept_part(meta: dict) -> dict:
    """The part of index.json that the table alone cannot tell (see KEPT_KEY)."""
    roots = meta.get("roots") or {}
    return {
        "encoder": meta.get("encoder"),
        "roots": {r: {"captions": (v or {}).get("captions")} for r, v in roots.items()},
    }


def keep_with_table(tbl: Any, meta: dict) -> None:
    """Store `kept_part(meta)` in the table's schema, so that an unreadable index.json is
    rebuilt with the settings its vectors were made with. Written only when it changed (each
    write is a table version)."""
    from core.io import dumps_json

    if tbl is None:
        return
    text = dumps_json(kept_part(meta), indent=None)
    try:
        have = (tbl.schema.field("vector").metadata or {}).get(KEPT_KEY.encode())
        if have != text.encode():
            tbl.update_field_metadata({"path": "vector", "metadata": {KEPT_KEY: text}})
    except Exception as exc:  # an older LanceDB or a damaged table: index.json still has it
        log.warning("index settings not kept with the table: %s", exc)


def _kept_in_table(tbl: Any) -> dict:
    import json

    try:
        raw = (tbl.schema.field("vector").metadata or {}).get(KEPT_KEY.encode())
        kept = json.loads(raw) if raw else {}
    except (KeyError, ValueError, UnicodeDecodeError):
        return {}
    return kept if isinstance(kept, dict) else {}


def read_meta_for_update(index_dir: str | Path, warn: bool = True) -> dict:
    """index.json for a run of `index`: {} when there is none, and also when it is unreadable
    (garbage, truncated): the run then rebuilds it from the table (the encoder and roots it
    keeps, the roots of its rows), and says so, naming the file (`warn`)."""
    from core.search.index_format import SearchIndexError, meta_path, read_meta

    if not meta_path(index_dir).exists():
        return {}
    try:
        return read_meta(index_dir)
    except SearchIndexError as exc:
        meta = _rebuilt_meta(index_dir)
        if warn:
            lost = (
                ""
                if meta.get("encoder")
                else "; the table does not keep the encoder it was built with (an index built "
                "before SceneSeek kept it there): give the same --encoder, --backbone, "
                "--image-size and --run as when it was built"
            )
            log.warning("rebuilding index.json from the table: %s%s", exc, lost)
        return meta


def _rebuilt_meta(index_dir: str | Path) -> dict:
    """index.json rebuilt from the table: its rows' roots, and what it keeps (KEPT_KEY)."""
    import lancedb

    from core.search.index_format import TABLE

    try:
        db = lancedb.connect(str(index_dir))
        tbl = db.open_table(TABLE)
        t = tbl.search().select(["root"]).limit(max(1, tbl.count_rows())).to_arrow()
    except Exception as exc:  # no table yet, or a damaged one: the run says so later
        log.warning("no roots recovered from the table of %s: %s", index_dir, exc)
        return {"roots": {}}
    rows_roots = sorted(set(t.column("root").to_pylist()) - {None, ""})
    kept = _kept_in_table(tbl)
    roots = {r: {"captions": None} for r in rows_roots}
    for r, v in (kept.get("roots") or {}).items():
        roots[r] = {"captions": (v or {}).get("captions")}
    meta: dict = {"roots": roots}
    if isinstance(kept.get("encoder"), dict):
        meta["encoder"] = kept["encoder"]
    return meta
