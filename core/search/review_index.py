"""A review applied to an existing search index's table (the rows of removed images deleted,
relabelled ones updated)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.data.review import Applied, Review, apply_review, load_review


def apply_review_to_index(index_dir: str | Path, review: Review | str | Path) -> Applied:
    """Apply a review to a search index's table, holding the index's writer lock: rows of
    removed images are deleted, the `label` of relabelled ones updated, and index.json's row
    count and table version rewritten. (A later re-index adds removed files back unless it is
    given the review again.)"""
    from core.io import atomic_write_json
    from core.search.maintenance import index_lock
    from core.search.store import meta_path, open_table, read_meta

    if not isinstance(review, Review):
        review = load_review(review)

    def quoted(paths: Sequence[str]) -> str:
        return ", ".join("'" + p.replace("'", "''") + "'" for p in paths)

    with index_lock(index_dir):
        tbl = open_table(index_dir)
        t = tbl.to_arrow().select(["path", "label"]).to_pydict()
        _, applied = apply_review(list(zip(t["path"], t["label"], strict=True)), review)
        for k in range(0, len(applied.removed), 500):
            tbl.delete(f"path IN ({quoted(applied.removed[k : k + 500])})")
        for path, _, new in applied.relabelled:
            tbl.update(where=f"path = {quoted([path])}", values={"label": new})
        if applied.removed or applied.relabelled:
            meta = read_meta(index_dir)
            meta["rows"] = tbl.count_rows()
            meta["table_version"] = tbl.version
            atomic_write_json(meta_path(index_dir), meta)
    return applied
