"""The query side's view of an index: the LanceDB table opened read-only, its index.json, and
the searches every mode is made of (vector search on a column, full-text search, lookups by
path). Nothing here loads a whole column: a query reads the rows it returns.

The index may be a local folder or an object-store URI (s3://, gs://; anything LanceDB and
pyarrow's filesystems open). Its small side files (the text mapping, the keyword model) are
then copied once into a private temporary folder.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.config import index_cache_mb
from core.search.index_format import (
    INDEX_VERSION,
    META_FILE,
    REBUILD,
    TABLE,
    SearchIndexError,
    read_meta,
)
from core.search.uri import is_uri

log = logging.getLogger(__name__)

# What a result needs (no vectors: a result row stays a few hundred bytes).
RESULT_COLUMNS = (
    "path",
    "category",
    "probs",
    "top_ids",
    "top_labels",
    "top_probs",
    "label",
    "split",
    "captions",
    "text",
)
ROWID = "_rowid"  # ask a search for it (columns=(ROWID,)) to skip reading any column
REFINE_ROWS = 400  # full-vector re-ranks per ANN query, whatever k (see refine_factor)


@dataclass
class Hits:
    """Rows (dicts with `score`, higher is better) and how they were found."""

    rows: list[dict]
    search: str  # "exact", "approximate" (ANN) or "full-text"
    detail: dict = field(default_factory=dict)


def refine_factor(recorded: int, k: int) -> int:
    """The index's refine factor, capped so that at most REFINE_ROWS rows are re-ranked with
    their full vectors: each is a random read. Hybrid's 200 candidates at x50 (10,000 reads)
    cost 170 ms at 100k rows; at 1M rows (IVF_RQ, benchmarks/search.py) the semantic top 200
    at x2 already equals the exact top 200 (15 ms) where x5 cost 25 ms."""
    return max(1, min(int(recorded), REFINE_ROWS // max(int(k), 1)))


def _run(q: Any, k: int, where: str | None, columns: tuple[str, ...], score: str) -> list[dict]:
    """A search's rows: prefiltered by `where`, `columns` (ROWID: the row id, no column read)
    and the search's own `score` column."""
    if where:
        q = q.where(where, prefilter=True)
    if ROWID in columns:
        q = q.with_row_id(True)
    return q.limit(int(k)).select([*columns, score]).to_arrow().to_pylist()


class IndexTable:
    """One opened index. `open` checks it is complete and of this version."""

    def __init__(self, location: str, meta: dict, tbl: Any) -> None:
        self.location = location
        self.meta = meta
        self.tbl = tbl
        self.columns = set(tbl.schema.names)
        self.indexed: dict[str, str] = {}  # column -> index type
        self.indexed_rows: dict[str, int] = {}  # rows the index covers (0: all searched flat)
        for ix in tbl.list_indices():
            for col in ix.columns:
                self.indexed[col] = str(ix.index_type)
                self.indexed_rows[col] = int(getattr(ix, "num_indexed_rows", None) or 0)
        self._side: Path | None = None
        self._n: int | None = None

    @classmethod
    def open(cls, index: str | Path) -> IndexTable:
        import lancedb

        location = str(index)
        meta = read_meta(location)
        version = int(meta.get("version", 1) or 1)
        if version < INDEX_VERSION:
            raise SearchIndexError(
                f"{location}: an index of an older format (version {version}, "
                f"this SceneSeek reads {INDEX_VERSION}); "
                + REBUILD.format(index=location).replace("rebuild", "upgrade")
            )
        if version > INDEX_VERSION:
            raise SearchIndexError(
                f"{location}: index format {version} is newer than this "
                f"SceneSeek ({INDEX_VERSION}); upgrade SceneSeek"
            )
        try:
            db = lancedb.connect(location, session=_session())
            tbl = db.open_table(TABLE)
        except Exception as exc:  # LanceDB raises ValueError/RuntimeError/OSError here
            raise SearchIndexError(
                f"{location}: {META_FILE} is there but the table is missing or "
                f"damaged (a half-written index?); " + REBUILD.format(index=location)
            ) from exc
        _pin(tbl, meta, location)
        missing = {"path", "vector", "semantic", "text", "category"} - set(tbl.schema.names)
        if missing:
            raise SearchIndexError(
                f"{location}: the table lacks {sorted(missing)} (an older format); "
                + REBUILD.format(index=location)
            )
        return cls(location, meta, tbl)

    # --- facts --------------------------------------------------------------------------------

    @property
    def n(self) -> int:
        if self._n is None:
            self._n = int(self.tbl.count_rows())
        return self._n

    def has_semantic(self) -> bool:
        return bool((self.meta.get("semantic") or {}).get("key"))

    def is_ann(self, column: str) -> bool:
        """The column has a vector index that covers rows: its searches are approximate (an
        index LanceDB could not train, too few rows, leaves every row to an exact scan)."""
        kind = self.indexed.get(column, "").upper()  # IvfPq, IvfHnswSq, ...
        return ("IVF" in kind or "HNSW" in kind) and self.indexed_rows.get(column, 0) > 0

    def has_fts(self) -> bool:
        kind = self.indexed.get("text", "").upper()
        return "FTS" in kind or "INVERTED" in kind

    def ann_query_params(self, column: str) -> dict:
        ann = self.meta.get("ann") or {}
        p = (ann.get("columns") or {}).get(column) or ann
        return {
            "nprobes": int(p.get("nprobes", 20)),
            "refine_factor": int(p.get("refine_factor", 10)),
        }

    # --- searches -----------------------------------------------------------------------------

    def vector_search(
        self,
        column: str,
        vector: np.ndarray,
        k: int,
        where: str | None = None,
        metric: str = "cosine",
        columns: tuple[str, ...] = RESULT_COLUMNS,
        exact: bool = False,
    ) -> Hits:
        """Top `k` rows by `metric` similarity of `column` to `vector`; ANN (with the index's
        recorded nprobes and refine factor) when the column has an ANN index, unless `exact`."""
        if column not in self.columns:
            raise SearchIndexError(
                f"{self.location}: the index has no {column!r} column; "
                + REBUILD.format(index=self.location)
            )
        if k <= 0:
            return Hits([], "exact")
        v = np.asarray(vector, np.float32).reshape(-1)
        q = self.tbl.search(v, vector_column_name=column).distance_type(metric)
        ann = self.is_ann(column) and not exact
        detail: dict = {}
        if ann:
            p = self.ann_query_params(column)
            detail = {**p, "refine_factor": refine_factor(p["refine_factor"], k)}
            q = q.nprobes(p["nprobes"]).refine_factor(detail["refine_factor"])
        else:
            q = q.bypass_vector_index()
        rows = _run(q, k, where, columns, "_distance")
        for r in rows:
            d = float(r.pop("_distance"))
            r["score"] = 1.0 - d  # LanceDB: cosine distance 1 - cos, dot distance 1 - x·y
        return Hits(rows, "approximate" if ann else "exact", detail)

    def text_search(
        self,
        query: Any,
        k: int,
        where: str | None = None,
        columns: tuple[str, ...] = RESULT_COLUMNS,
    ) -> Hits:
        """BM25 full-text search over `text` (a lancedb FullTextQuery or a string)."""
        if k <= 0:
            return Hits([], "full-text")
        if not self.has_fts():
            raise SearchIndexError(
                f"{self.location}: the index has no full-text index; "
                + REBUILD.format(index=self.location)
            )
        rows = _run(self.tbl.search(query, query_type="fts"), k, where, columns, "_score")
        for r in rows:
            r["score"] = float(r.pop("_score"))
        return Hits(rows, "full-text")

    def rows_by_rowid(self, ids: list[int], columns: tuple[str, ...] = RESULT_COLUMNS) -> dict:
        """{row id: row} for row ids returned by a search of this table (one take)."""
        if not ids:
            return {}
        cols = [c for c in columns if c != ROWID]
        t = self.tbl.take_row_ids(list(ids)).select(cols).with_row_id().to_arrow()
        return {r[ROWID]: r for r in t.to_pylist()}

    def rows_by_path(self, paths: list[str], columns: tuple[str, ...] = RESULT_COLUMNS) -> dict:
        """{path: row} for the given paths (one filtered scan; bounded by len(paths))."""
        if not paths:
            return {}
        out: dict[str, dict] = {}
        for a in range(0, len(paths), 500):
            quoted = ", ".join(_sql_str(p) for p in paths[a : a + 500])
            t = (
                self.tbl.search()
                .where(f"path IN ({quoted})")
                .select(list(columns))
                .limit(len(paths[a : a + 500]))
                .to_arrow()
            )
            for r in t.to_pylist():
                out[r["path"]] = r
        return out

    def column(self, name: str, where: str | None = None) -> list:
        """A whole column (evaluation and maintenance only: memory grows with the table)."""
        q = self.tbl.search().select([name]).limit(self.n)
        if where:
            q = q.where(where)
        return q.to_arrow().column(name).to_pylist()

    def columns_table(self, names: list[str]):
        return self.tbl.search().select(names).limit(max(1, self.n)).to_arrow()

    # --- side files ---------------------------------------------------------------------------

    def side_path(self, rel: str) -> Path | None:
        """A local path to the index's side file or folder `rel` (copied from object
        storage once); None when absent."""
        if not is_uri(self.location):
            p = Path(self.location) / rel
            return p if p.exists() else None
        if self._side is None:
            self._side = Path(tempfile.mkdtemp(prefix="sceneseek-index-"))
            atexit.register(shutil.rmtree, self._side, True)
        dest = self._side / rel
        if dest.exists():
            return dest
        return _fetch(f"{self.location.rstrip('/')}/{rel}", dest)


def cache_mb() -> tuple[int, int]:
    """(index cache, metadata cache) in MB for a query process: LanceDB keeps the index
    partitions it has read (IVF centroids, PQ codes, full-text postings) in a cache; bounded,
    a process's memory stays the same however large the table grows (the least recently used
    partitions are read again from disk when needed)."""
    index = index_cache_mb()  # $SCENESEEK_INDEX_CACHE_MB, default 256
    return index, max(16, index // 4)


def _pin(tbl: Any, meta: dict, location: str) -> None:
    """Read the table version index.json describes when the table is ahead of it: a writer
    (an `index` run, a review) is between its commits and its next index.json, e.g. derived
    columns of a new text mapping committed while index.json still names the old mapping.
    Every version stays on disk (nothing cleans them up), so a reader opened mid-update gets
    rows, derived columns and side files that agree, and the next index.json moves it on."""
    version = meta.get("table_version")
    if not isinstance(version, int) or not 0 < version < tbl.version:
        return
    try:
        tbl.checkout(version)
    except Exception as exc:  # a version gone (copied without its history): the latest
        log.warning("%s: reading the latest table, not version %s: %s", location, version, exc)


def _session() -> Any:
    from lancedb import Session

    index, metadata = cache_mb()
    return Session(index_cache_size_bytes=index << 20, metadata_cache_size_bytes=metadata << 20)


def _fetch(uri: str, dest: Path) -> Path | None:
    """Copy a file or a folder (one level) from a URI."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        return None
    items = (
        [f for f in filesystem.get_file_info(fs.FileSelector(path)) if f.type == fs.FileType.File]
        if info.type == fs.FileType.Directory
        else [info]
    )
    for f in items:
        target = dest / Path(f.path).name if info.type == fs.FileType.Directory else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(f.path) as fh:
            target.write_bytes(fh.read())
    return dest


def _sql_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def where_clause(**equal: str | None) -> str | None:
    """`a = 'x' AND b = 'y'` for the given non-empty values (bitmap-indexed columns)."""
    parts = [f"{col} = {_sql_str(v)}" for col, v in equal.items() if v]
    return " AND ".join(parts) or None
