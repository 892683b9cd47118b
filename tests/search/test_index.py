"""The image index: build, incremental update, resume after an interruption, bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.data.images import load_rgb
from core.io import read_json
from core.search import build_index
from core.search.store import SearchIndexError, load_rows, text_search, vector_search
from tests.helpers import IMAGE_SIZE, cli_json

pytestmark = pytest.mark.slow


def _build(folder: Path, index: Path, encoder, **kw):
    return build_index(folder, index, encoder=encoder, workers=0, batch_size=8, **kw)


def test_build_stores_every_field(folder: Path, tmp_path: Path, encoder) -> None:
    index = tmp_path / "idx"
    stats = _build(folder, index, encoder)
    assert stats.found == stats.encoded == stats.rows == 16
    t = load_rows(index).to_pydict()
    assert set(t["label"]) == {"forest", "sea"}  # class folders kept as labels
    assert all(len(x) == 64 for x in t["sha256"])
    assert all(
        len(x) == 5 and abs(sum(p) - 1) < 1
        for x, p in zip(t["top_labels"], t["top_probs"], strict=True)
    )
    assert all(p[0] >= p[-1] for p in t["top_probs"])
    # the stored top-5 are the encoder's own for that photo, decoded and encoded alone
    one = encoder.encode_images([load_rgb(t["path"][0])])
    assert t["top_labels"][0] == [encoder.imagenet_classes[j] for j in one.top_ids[0]]
    np.testing.assert_allclose(t["top_probs"][0], one.top_probs[0], atol=1e-4)
    vec = np.array(t["vector"])
    assert vec.shape == (16, encoder.feature_dim)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1, atol=1e-4)
    meta = read_json(index / "index.json")
    assert meta["rows"] == 16 and meta["encoder"]["image_size"] == IMAGE_SIZE
    assert meta["encoder"]["backbone"] == "efficientnet_lite0"
    # Vector search with a filter, in LanceDB.
    hits = vector_search(index, vec[0], k=3, where="label = 'sea'")
    assert len(hits) == 3 and all(h["label"] == "sea" for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    same = vector_search(index, vec[0], k=1)[0]
    assert same["path"] == t["path"][0] and same["score"] == pytest.approx(1, abs=1e-3)
    # Full-text search over the tags: each ImageNet label is one whole-label token.
    from core.search.index_format import LABEL_TOKEN, token

    tag = token(LABEL_TOKEN, t["top_labels"][0][0])
    assert any(tag in r["text"].split() for r in text_search(index, tag, k=5))


def test_incremental_update_only_processes_changes(folder: Path, tmp_path: Path, encoder) -> None:
    index = tmp_path / "idx"
    _build(folder, index, encoder)
    again = _build(folder, index, encoder)
    assert (again.encoded, again.unchanged, again.deleted) == (0, 16, 0)

    sea = sorted((folder / "sea").glob("*.jpg"))
    forest = sorted((folder / "forest").glob("*.jpg"))
    gone = sea[0]
    gone.unlink()  # deleted file leaves the index
    shutil.copy2(forest[0], sea[1])  # changed content under the same path
    shutil.copy2(forest[1], folder / "sea" / "new.jpg")  # new file
    stats = _build(folder, index, encoder)
    assert (stats.encoded, stats.deleted, stats.unchanged) == (2, 1, 14)
    t = load_rows(index).to_pydict()
    paths = dict(zip(t["path"], t["sha256"], strict=True))
    assert str(gone.resolve()) not in paths
    assert str((folder / "sea" / "new.jpg").resolve()) in paths
    assert len(t["path"]) == 16
    # the changed file now carries the hash of its new content
    src = dict(zip(t["path"], t["sha256"], strict=True))[str(forest[0].resolve())]
    assert paths[str(sea[1].resolve())] == src


def test_resume_after_interruption(folder: Path, tmp_path: Path, encoder) -> None:
    index = tmp_path / "idx"

    class Stop(Exception):
        pass

    def interrupt(done: int, total: int) -> None:
        if done >= 8:
            raise Stop  # as if the process were killed after the first committed chunk

    with pytest.raises(Stop):
        _build(folder, index, encoder, chunk=8, progress=interrupt)
    assert len(load_rows(index)) == 8  # the finished chunk is there, nothing half-written
    assert read_json(index / "index.json")["rows"] == 8
    stats = _build(folder, index, encoder, chunk=8)
    assert (stats.unchanged, stats.encoded, stats.rows) == (8, 8, 16)


def test_bad_files_are_skipped_with_a_reason(folder: Path, tmp_path: Path, encoder) -> None:
    (folder / "sea" / "empty.jpg").write_bytes(b"")
    (folder / "sea" / "text.jpg").write_text("not an image")
    stats = _build(folder, tmp_path / "idx", encoder)
    reasons = {Path(s["path"]).name: s["reason"] for s in stats.skipped}
    assert reasons == {"empty.jpg": "zero-byte", "text.jpg": "not-an-image"}
    assert stats.rows == 16


def test_settings_mismatch_and_missing_index(folder: Path, tmp_path: Path, encoder) -> None:
    index = tmp_path / "idx"
    _build(folder, index, encoder)
    with pytest.raises(SearchIndexError, match="image_size"):
        build_index(folder, index, image_size=IMAGE_SIZE + 32, workers=0)
    with pytest.raises(SearchIndexError, match="not an index"):
        load_rows(tmp_path / "nothing")


def test_index_with_a_trained_run(intel_small: Path, folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    split = ("--train", intel_small / "seg_train", "--test", intel_small / "seg_test")
    probe = ("--mode", "linear-probe", "--epochs", 2, "--image-size", IMAGE_SIZE, "--workers", 0)
    cli_json("train", *split, *probe, "--out", run)
    index = tmp_path / "idx"
    stats = build_index(folder, index, run_dir=run, workers=0, batch_size=8)
    assert stats.rows == 16
    t = load_rows(index).to_pydict()
    classes = read_json(index / "index.json")["encoder"]["class_names"]
    assert classes == ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    for cat, probs in zip(t["category"], t["probs"], strict=True):
        assert len(probs) == 6 and abs(sum(probs) - 1) < 1e-3
        assert cat == classes[int(np.argmax(probs))]
    assert read_json(index / "index.json")["encoder"]["run"] == str(run.resolve())
    again = build_index(folder, index, workers=0)  # an update keeps the index's run
    assert (again.encoded, again.unchanged) == (0, 16)


def _review_of(folder: Path, tmp_path: Path) -> tuple[Path, list[Path], list[Path]]:
    """A review of the two-class folder: three forest photos relabelled glacier, two sea
    photos removed. (review file, relabelled, removed)"""
    from core.data.review import Review, save_review

    forest = sorted((folder / "forest").glob("*.jpg"))[:3]
    sea = sorted((folder / "sea").glob("*.jpg"))[:2]
    review = Review(str(folder))
    for p in forest:
        review.decide(p, "relabel", "glacier")
    for p in sea:
        review.decide(p, "remove")
    return save_review(tmp_path / "review.json", review), forest, sea


def _assert_derived_from_review(index: Path, relabelled: list[Path], removed: list[Path]) -> None:
    """Everything indexing fits from `label` saw the reviewed labels and none of the removed
    photos: the rows, the category head's classes and columns, the mapping's training rows and
    the category floor's positives (14 = 16 photos - 2 removed)."""
    from core.search.category_index import column_names

    meta = read_json(index / "index.json")
    rows = load_rows(index).to_pydict()
    label = dict(zip(rows["path"], rows["label"], strict=True))
    assert len(label) == 14 and not {str(p.resolve()) for p in removed} & set(label)
    assert all(label[str(p.resolve())] == "glacier" for p in relabelled)
    assert meta["classes"] == ["forest", "glacier", "sea"]
    assert set(rows["category"]) <= set(meta["classes"])
    assert set(column_names(3)) <= set(rows)
    config = read_json(index / meta["semantic"]["mapping"] / "config.json")
    assert config["train_labelled_images"] == 14
    assert meta["floor"]["category"]["positives"] == 14


def test_review_is_applied_before_anything_is_derived(folder: Path, tmp_path: Path) -> None:
    """`index --apply-review`: the semantic map, the category head and the floors are fitted
    on the reviewed labels (issue 21: they followed the folder labels the user rejected)."""
    file, relabelled, removed = _review_of(folder, tmp_path)
    index = tmp_path / "idx"
    out = cli_json(
        "index", "--images", folder, "--index", index, "--workers", 0,
        "--image-size", IMAGE_SIZE, "--apply-review", file,
    )  # fmt: skip
    assert (out["review"]["removed"], out["review"]["relabelled"]) == (2, 3)
    assert out["rows"] == 14
    _assert_derived_from_review(index, relabelled, removed)


def test_review_of_an_existing_index_derives_again(folder: Path, tmp_path: Path, encoder) -> None:
    """`apply_review_to_index` on a built index: rows deleted and relabelled, then the map,
    categories and floors fitted again on the reviewed labels; a re-index without the review
    gives the folder's labels and the removed photos back (without re-encoding anything)."""
    from core.search.review_index import apply_review_to_index

    index = tmp_path / "idx"
    _build(folder, index, encoder)
    assert read_json(index / "index.json")["classes"] == ["forest", "sea"]
    file, relabelled, removed = _review_of(folder, tmp_path)
    applied = apply_review_to_index(index, file)
    assert (len(applied.removed), len(applied.relabelled)) == (2, 3)
    _assert_derived_from_review(index, relabelled, removed)
    again = _build(folder, index, encoder)
    assert (again.encoded, again.relabelled, again.rows) == (2, 3, 16)
    assert read_json(index / "index.json")["classes"] == ["forest", "sea"]
