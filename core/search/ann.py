"""Index upkeep after a write: the full-text index on `text`, bitmap and BTREE indexes on the
prefilter columns, and ANN indexes on the vector columns once they beat an exact scan.

Vector search is exact until the table reaches `ann_min_rows`; then an ANN index (IVF_RQ,
cosine) is built, and rebuilt once the table has grown by `ANN_REBUILD_GROWTH` since; its
parameters and build time go to `index.json` under "ann" (`describe_index` says it)."""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.search.category_index import PREFIX as CATEGORY_PREFIX
from core.search.index_format import read_meta

log = logging.getLogger(__name__)

ANN_MIN_ROWS = 100_000  # below this an exact scan is faster than any ANN index
ANN_COLUMNS = ("vector", "semantic")  # vector columns that get an ANN index above the threshold
SCALAR_COLUMNS = ("category", "split", "label")  # prefilters, each backed by a bitmap index
ANN_REBUILD_GROWTH = 0.5  # rebuild the ANN index once the table is 1.5x its size at the build


def ann_due(meta: dict, rows: int, ann_min_rows: int) -> bool:
    """An ANN index is due when the table reached the threshold and has none yet, or has
    grown by ANN_REBUILD_GROWTH since the last build (new rows are only scanned exactly)."""
    if rows < ann_min_rows:
        return False
    ann = meta.get("ann")
    return not ann or rows >= ann["rows_at_build"] * (1 + ANN_REBUILD_GROWTH)


def ann_params(rows: int, dim: int = 1280) -> dict:
    """IVF_RQ settings for `rows` vectors of `dim` dimensions, and the query settings that go
    with them (recorded in index.json, read by every query):
    - partitions: about 4,096 rows each (k-means on 2 cores stays minutes at 1M rows);
    - RaBitQ codes of 4 bits a dimension (640 bytes a 1280-d vector), no codebook to train;
    - nprobes: the partitions a query visits, about 6% of them and at least 8;
    - refine_factor: the candidates re-ranked with the full vectors, 10x k (capped at
      table.REFINE_ROWS rows), so the quantisation error is undone for the final order.
    Measured on 300k synthetic rows with the 1M benchmark's neighbourhoods (1,000 rows around
    each centre), nprobes 8: recall@10 of IVF_PQ (16 dims a sub-vector) 0.23 at x10 and 0.75
    at x50, build 155 s; IVF_RQ 4-bit 1.00 at x10 (9 ms), build 34 s; 384-d: IVF_PQ (8 dims a
    sub-vector) 0.58 at x10, IVF_RQ 4-bit 1.00, build 69 s against 10 s
    (benchmarks/ann_codes.py; at 1M rows, benchmarks/search.py: recall@10 1.00 for both).
    IVF rather than HNSW: its codes are read per partition (LanceDB's index cache is bounded,
    core.config.index_cache_mb) where an HNSW graph must be held whole."""
    parts = max(1, rows // 4096)
    return {
        "type": "IVF_RQ",
        "metric": "cosine",
        "num_partitions": parts,
        "num_bits": 4,
        "nprobes": max(8, math.ceil(0.06 * parts)),
        "refine_factor": 10,
    }


def maintain(
    tbl: Any, rows: int, meta: dict, ann_min_rows: int = ANN_MIN_ROWS, rebuild: bool = False
) -> None:
    """Full-text index on `text`, bitmap indexes on the prefilter columns, and ANN indexes on
    the vector columns where they beat an exact scan: (re)built per `ann_due`, or after the
    derived columns were rewritten (`rebuild`), recorded in meta["ann"]."""
    from lancedb.index import FTS, Bitmap, BTree

    try:  # whole words, lower case, no stemming: the study's keyword semantics
        tbl.create_index(
            "text",
            config=FTS(with_position=False, stem=False, remove_stop_words=False, lower_case=True),
            replace=True,
        )
    except Exception as exc:  # the keyword mode then says it has no full-text index
        log.warning("full-text index not built: %s", exc)
    for col in SCALAR_COLUMNS:
        tbl.create_index(col, config=Bitmap(), replace=True)
    tbl.create_index("path", config=BTree(), replace=True)  # result rows read back by path
    for col in tbl.schema.names:  # the category mode's range prefilters (category_index)
        if col.startswith(CATEGORY_PREFIX):
            tbl.create_index(col, config=BTree(), replace=True)
    meta["ann_min_rows"] = ann_min_rows
    if not (ann_due(meta, rows, ann_min_rows) or (rebuild and rows >= ann_min_rows)):
        return
    from lancedb.index import IvfRq

    t0 = time.perf_counter()
    columns = {}
    for col in ANN_COLUMNS:
        if col not in tbl.schema.names or tbl.count_rows(f"{col} IS NULL"):
            continue  # a semantic column not written yet (index --no-mapping)
        p = ann_params(rows, tbl.schema.field(col).type.list_size)
        tbl.create_index(
            col,
            config=IvfRq(
                distance_type=p["metric"],
                num_partitions=p["num_partitions"],
                num_bits=p["num_bits"],
            ),
            replace=True,
        )
        columns[col] = p
    meta["ann"] = {
        **ann_params(rows),
        "columns": columns,
        "rows_at_build": rows,
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info("ANN indexes built: %s", meta["ann"])


def index_summary(index_dir: str | Path) -> dict:
    """What the app shows about an index: size, last update, exact or approximate search."""
    return meta_summary(read_meta(index_dir))


def meta_summary(meta: dict) -> dict:
    """`index_summary` of an index.json already read."""
    ann = meta.get("ann")
    threshold = meta.get("ann_min_rows", ANN_MIN_ROWS)
    return {
        "rows": meta.get("rows", 0),
        "updated": meta.get("updated"),
        "search": "approximate" if ann else "exact",
        "ann": ann,
        "ann_min_rows": threshold,
        "rows_since_build": meta.get("rows", 0) - ann["rows_at_build"] if ann else None,
    }


def describe_index(meta: dict) -> str:
    """The index's size, last build and whether its vector search is exact or approximate."""
    s = meta_summary(meta)
    text = f"{s['rows']:,} rows · last updated {s['updated']} · LanceDB vector index: "
    a = s["ann"]
    if not a:
        return text + (
            f"none, vector search is exact (an ANN index is built from {s['ann_min_rows']:,} rows)"
        )
    cols = ", ".join(a.get("columns") or {}) or "vector"
    return text + (
        f"approximate, {a['type']} on {cols} ({a['metric']}, {a['num_partitions']} partitions, "
        f"nprobes {a.get('nprobes')}, refine ×{a.get('refine_factor')}) built {a['built']} on "
        f"{a['rows_at_build']:,} rows in {a['seconds']} s; {s['rows_since_build']:,} rows "
        "added since"
    )
