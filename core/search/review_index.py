"""A review applied to an existing search index: the rows of removed images deleted, the
labels of relabelled ones updated, and then everything derived from the labels fitted again
(semantic map, category head, floors; core.search.derive), so that nothing queries read
follows a label the user rejected.

(`python -m core index --apply-review` applies the review while indexing instead, before any
row is written; a later re-index adds removed files back unless it is given the review.)"""

from __future__ import annotations

from pathlib import Path

from core.data.review import Applied, Review, apply_review, load_review


def apply_review_to_index(
    index_dir: str | Path, review: Review | str | Path, derive: bool = True
) -> Applied:
    """Apply a review to a search index, holding its writer lock: rows of removed images are
    deleted, the `label` of relabelled ones updated; when anything changed and the index has
    derived data (and `derive`), it is derived again from the reviewed labels (this loads the
    index's encoder and, for a mapping, the sentence encoder); index.json is rewritten."""
    import pyarrow as pa

    from core.search.index_format import delete_paths, open_table, read_meta
    from core.search.maintenance import index_lock, read_arrow
    from core.search.writer import IndexConfig, load_index_encoder, refresh, write_meta

    if not isinstance(review, Review):
        review = load_review(review)
    with index_lock(index_dir):
        tbl = open_table(index_dir)
        t = read_arrow(tbl, index_dir).select(["path", "label"]).to_pydict()
        _, applied = apply_review(list(zip(t["path"], t["label"], strict=True)), review)
        if not (applied.removed or applied.relabelled):
            return applied
        delete_paths(tbl, applied.removed)
        if applied.relabelled:  # one commit for all the new labels
            new = pa.table(
                {"path": [p for p, _, _ in applied.relabelled],
                 "label": [label for _, _, label in applied.relabelled]}
            )  # fmt: skip
            tbl.merge_insert("path").when_matched_update_all().execute(new)
        meta = read_meta(index_dir)
        derived = derive and bool((meta.get("semantic") or {}).get("key"))
        cfg = IndexConfig(device="cpu", derive=derived, ann_min_rows=_ann_min_rows(meta))
        encoder = load_index_encoder(meta, cfg) if derived else None
        refresh(tbl, meta, encoder, cfg, None, True, Path(index_dir))
        write_meta(index_dir, meta, tbl)
    return applied


def _ann_min_rows(meta: dict) -> int:
    from core.search.ann import ANN_MIN_ROWS

    return int(meta.get("ann_min_rows", ANN_MIN_ROWS))
