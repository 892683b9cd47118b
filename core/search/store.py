"""The image index as a library reads it, and the names the rest of SceneSeek imports from
here. The index is one LanceDB table (a folder, no server) plus `index.json` beside it:

- core.search.index_format: the on-disk contract (table name, index.json, format version,
  the one `read_meta`, `open_table`, the schema);
- core.search.files: the image files under a root, their hashes and captions;
- core.search.writer: `build_index` (incremental, resumable; a review applied first) and
  `IndexConfig`;
- core.search.ann: the full-text, prefilter and ANN indexes kept up after a write;
- core.search.maintenance: one writer at a time, moves, pruning, damaged tables.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.search.ann import (
    ANN_COLUMNS,
    ANN_MIN_ROWS,
    ANN_REBUILD_GROWTH,
    SCALAR_COLUMNS,
    ann_params,
    describe_index,
    index_summary,
    meta_summary,
)
from core.search.files import (
    ImageFile,
    captions_by_image,
    file_sha256,
    hash_files,
    list_images,
    read_bytes,
    root_of,
)
from core.search.index_format import (
    INDEX_VERSION,
    META_FILE,
    TABLE,
    SearchIndexError,
    meta_path,
    open_table,
    read_meta,
    schema,
    tag_text,
)
from core.search.maintenance import read_arrow
from core.search.writer import (
    ENGINES,
    IndexConfig,
    IndexStats,
    Plan,
    Progress,
    build_index,
    plan,
    semantic_dim_of,
)

__all__ = [
    "ANN_COLUMNS",
    "ANN_MIN_ROWS",
    "ANN_REBUILD_GROWTH",
    "ENGINES",
    "INDEX_VERSION",
    "META_FILE",
    "SCALAR_COLUMNS",
    "TABLE",
    "ImageFile",
    "IndexConfig",
    "IndexStats",
    "Plan",
    "Progress",
    "SearchIndexError",
    "ann_params",
    "build_index",
    "captions_by_image",
    "describe_index",
    "file_sha256",
    "hash_files",
    "index_summary",
    "list_images",
    "load_rows",
    "meta_path",
    "meta_summary",
    "open_table",
    "plan",
    "read_bytes",
    "read_meta",
    "root_of",
    "schema",
    "semantic_dim_of",
    "tag_text",
    "text_search",
    "vector_search",
]

log = logging.getLogger(__name__)


def load_rows(index_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole table (or some columns) as Arrow; 10k rows load in well under a second."""
    tbl = open_table(index_dir)
    t = read_arrow(tbl, index_dir)
    return t.select(list(columns)) if columns else t


def text_search(index_dir: str | Path, query: str, k: int = 10) -> list[dict]:
    """LanceDB full-text search over tags and captions (path, text, score)."""
    tbl = open_table(index_dir)
    try:
        df = tbl.search(query, query_type="fts").limit(k).to_arrow().to_pylist()
    except Exception as exc:  # no FTS index yet, or an FTS syntax error in the query
        log.warning("full-text search failed: %s", exc)
        return []
    return [{"path": r["path"], "text": r["text"], "score": r.get("_score")} for r in df]


def vector_search(
    index_dir: str | Path,
    vector: np.ndarray,
    k: int = 10,
    where: str | None = None,
    column: str = "vector",
) -> list[dict]:
    """LanceDB vector search (cosine) on the backbone features (`column="vector"`) or the
    semantic column, with an optional SQL prefilter such as "label = 'sea'" or
    "split = 'test'"; ANN with the index's recorded query settings when the column has a
    vector index, else exact. Rows: path, label, split, category, score (cosine)."""
    from core.search.table import IndexTable

    hits = IndexTable.open(index_dir).vector_search(column, vector, k, where)
    return [
        {key: h[key] for key in ("path", "label", "split", "category", "score")} for h in hits.rows
    ]
