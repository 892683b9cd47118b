"""The ANN indexes: built once the table reaches the threshold (on the backbone and the
semantic column), rebuilt after notable growth or a rewrite of the semantic column, recorded
in index.json, used by queries, and shown on the Search page (exact or approximate)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.io import read_json
from core.search.store import (
    ANN_MIN_ROWS,
    ANN_REBUILD_GROWTH,
    build_index,
    index_summary,
    load_rows,
    open_table,
    vector_search,
)
from tests.helpers import PAGES

pytestmark = pytest.mark.slow
THRESHOLD = 12  # a small table, so that the test exercises the real ANN build


def _copy(
    intel_small: Path, out: Path, classes: tuple[str, ...], n: int, flat: bool = False
) -> None:
    """n images per class into out/<class>/ (labelled), or loose into out/ (`flat`: no label,
    so the text mapping's training set, and the semantic column, stay as they are)."""
    for c in classes:
        dest = out if flat else out / c
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted((intel_small / "seg_train" / c).glob("*.jpg"))[:n]:
            shutil.copy2(f, dest / f.name)


def _vector_indices(index: Path) -> list:
    return [i for i in open_table(index).list_indices() if "vector" in i.columns]


def test_ann_built_recorded_and_rebuilt_on_growth(intel_small, encoder, tmp_path) -> None:
    folder, extra, index = tmp_path / "imgs", tmp_path / "extra", tmp_path / "idx"
    _copy(intel_small, folder, ("forest", "sea"), 8)

    def build(images: Path = folder):
        return build_index(
            images, index, encoder=encoder, workers=0, batch_size=8, ann_min_rows=THRESHOLD
        )

    assert build().rows == 16
    meta = read_json(index / "index.json")
    ann = meta["ann"]
    assert ann["type"] == "IVF_RQ" and ann["metric"] == "cosine" and ann["num_bits"] == 4
    assert ann["rows_at_build"] == 16 and ann["num_partitions"] >= 1 and ann["seconds"] >= 0
    assert ann["num_partitions"] == 1 and ann["nprobes"] == 8  # ~4,096 rows a partition; >= 8
    assert set(ann["columns"]) == {"vector", "semantic"}
    assert ann["columns"]["semantic"]["type"] == ann["columns"]["vector"]["type"] == "IVF_RQ"
    assert len(_vector_indices(index)) == 1  # LanceDB really has it, on each column
    assert [i for i in open_table(index).list_indices() if "semantic" in i.columns]
    vec = np.array(load_rows(index)["vector"].to_pylist())
    hit = vector_search(index, vec[3], k=1)[0]
    assert hit["path"] == load_rows(index)["path"][3].as_py()
    sem = np.array(load_rows(index)["semantic"].to_pylist())
    assert vector_search(index, sem[5], k=1, column="semantic")[0]["path"] == (
        load_rows(index)["path"][5].as_py()
    )
    summary = index_summary(index)
    assert (summary["search"], summary["rows"], summary["ann_min_rows"]) == (
        "approximate",
        16,
        THRESHOLD,
    )

    # Small growth that leaves the mapping as it is (unlabelled, uncaptioned images): the
    # ANN indexes stay; notable growth (ANN_REBUILD_GROWTH): rebuilt.
    _copy(intel_small, extra, ("glacier",), 2, flat=True)
    assert build(extra).rows == 18 < 16 * (1 + ANN_REBUILD_GROWTH)
    assert read_json(index / "index.json")["semantic"]["key"] == meta["semantic"]["key"]
    assert read_json(index / "index.json")["ann"] == ann
    assert index_summary(index)["rows_since_build"] == 2
    _copy(intel_small, extra, ("glacier",), 8, flat=True)
    assert build(extra).rows == 24 >= 16 * (1 + ANN_REBUILD_GROWTH)
    again = read_json(index / "index.json")["ann"]
    assert again["rows_at_build"] == 24 and again["built"] >= ann["built"]
    assert len(_vector_indices(index)) == 1
    # A labelled image changes the mapping: every semantic vector is rewritten, and the ANN
    # indexes are rebuilt over the rewritten rows even without notable growth.
    _copy(intel_small, folder, ("glacier",), 1)
    assert build().rows == 25
    latest = read_json(index / "index.json")
    assert latest["semantic"]["key"] != meta["semantic"]["key"]
    assert latest["ann"]["rows_at_build"] == 25


def test_page_shows_exact_or_approximate(intel_small, encoder, tmp_path, monkeypatch) -> None:
    folder = tmp_path / "imgs"
    # Two classes: the edge case of the category head (scikit-learn keeps one coefficient row).
    _copy(intel_small, folder, ("forest", "sea"), 9)
    exact, approx = tmp_path / "exact", tmp_path / "approx"
    build_index(folder, exact, encoder=encoder, workers=0, batch_size=8)
    build_index(folder, approx, encoder=encoder, workers=0, batch_size=8, ann_min_rows=THRESHOLD)
    assert "ann" not in read_json(exact / "index.json")
    assert index_summary(exact)["search"] == "exact"
    captions = {}
    for name, index in (("exact", exact), ("approx", approx)):
        monkeypatch.setenv("SCENESEEK_INDEX", str(index))
        at = AppTest.from_file(str(PAGES / "search.py"), default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        captions[name] = "\n".join(c.value for c in at.caption)
    built = read_json(approx / "index.json")["ann"]["built"]
    assert (
        "18 rows" in captions["exact"]
        and "vector index: none, vector search is exact (an ANN index is built from "
        f"{ANN_MIN_ROWS:,} rows)"
        in captions["exact"]
    )
    assert "vector index: approximate, IVF_RQ on vector, semantic" in captions["approx"]
    assert f"built {built} on 18 rows" in captions["approx"]
