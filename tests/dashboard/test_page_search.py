"""AppTest of the Search page on a small real index built first."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.search.writer import (
    CHECKING_FILES,
    DERIVING,
    ENCODING,
    INDEXING,
    LOADING_MODEL,
    READING_FOLDER,
)
from dashboard.jobs import Job, index_job_key, registry
from tests.helpers import PAGES, build_small, flickr_subset

pytestmark = pytest.mark.slow
PAGE = str(PAGES / "search.py")
TIMEOUT = 120
STEPS = (READING_FOLDER, LOADING_MODEL, CHECKING_FILES, ENCODING, DERIVING, INDEXING)


@pytest.fixture(scope="module")
def small_index(intel_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("page_search")
    return build_small(intel_small, flickr_subset(tmp / "flickr"), tmp / "idx")


@pytest.fixture
def page(small_index: Path, intel_small: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small))
    monkeypatch.setenv("SCENESEEK_INDEX", str(small_index))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_example_sentence_gives_results_with_why(page: AppTest) -> None:
    assert "184 images" in page.caption[0].value
    page.button(key="example-2").click().run()  # "The beach is full of tourists."
    assert not page.exception, page.exception
    assert page.text_input(key="search_query").value == "The beach is full of tourists."
    assert len(page.get("image")) >= 10  # the result grid
    assert len(page.get("image")) == 10  # k = 10 by default, nothing else shows an image
    md = _markdown(page)
    assert "**1.**" in md and "**10.**" in md
    assert "learned image embedding ~ query" in md  # the default (semantic) mode's why
    page.selectbox[0].select("hybrid").run()
    md = _markdown(page)
    # hybrid's why names the parts it weighed: a sentence about people on a beach reads as a
    # description here (not close enough to a category's sentences): meaning, and the
    # category only as a light prior
    assert "semantic: semantic vector ~ query" in md and "keyword: " not in md


def test_side_by_side_modes_filter_and_more_like_this(page: AppTest) -> None:
    page.text_input(key="search_query").input("snow and ice on a glacier").run()
    page.selectbox[0].select("keyword").run()
    page.selectbox[1].select("semantic").run()
    assert not page.exception, page.exception
    assert [h.value for h in page.subheader][:2] == ["keyword", "semantic"]
    page.selectbox[2].select("glacier").run()
    md = _markdown(page)
    assert "· glacier" in md and "· sea" not in md
    page.button(key="more-b-1").click().run()
    assert not page.exception, page.exception
    assert "More like this" in [h.value for h in page.subheader]
    assert "backbone feature cosine" in _markdown(page)


def test_bad_query_answers_clearly(page: AppTest) -> None:
    page.selectbox[0].select("keyword").run()
    page.text_input(key="search_query").input("The desert is vast and dry.").run()
    assert not page.exception, page.exception
    assert any("nearest category by meaning" in i.value for i in page.info)


def test_evaluation_table(page: AppTest) -> None:
    page.button(key="evaluate").click().run()
    assert not page.exception, page.exception
    frames = [d.value for d in page.dataframe]
    assert len(frames) == 2  # category queries and caption queries
    assert list(frames[0].index) == ["keyword", "category", "semantic", "hybrid"]
    assert {"P@10", "MAP"} <= set(frames[0].columns)
    assert {"R@1", "R@5", "R@10", "median_rank", "MRR"} <= set(frames[1].columns)
    # the pool beside every figure: the 48 test images for the category queries, all 184
    # indexed images for the caption queries (issue 11), in the table and in words
    assert list(frames[0]["pool"]) == [48] * 4 and list(frames[1]["pool"]) == [184] * 4
    md = _markdown(page)
    assert "pool 48 test images" in md and "pool 184 images: all indexed" in md
    # each kind's hybrid-against-each-mode chart: three points (keyword, category, semantic),
    # each difference inside its own 95% interval
    charts = [c for c in page.get("plotly_chart")]
    assert len(charts) == 2, charts
    for chart in charts:
        trace = json.loads(chart.proto.spec)["data"][0]
        assert len(trace["y"]) == 3 and all(y.startswith("hybrid - ") for y in trace["y"])
        assert all(lo >= 0 for lo in trace["error_x"]["arrayminus"] + trace["error_x"]["array"])


def test_no_index_offers_to_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_INDEX", str(tmp_path / "none"))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "No search index" in at.info[0].value and at.button[0].label == "Build the index"


def test_upload_classifies_and_finds_the_same_photo_first(page: AppTest, intel_small: Path) -> None:
    photo = sorted((intel_small / "seg_test" / "forest").glob("*.jpg"))[0]
    page.file_uploader(key="image_upload").set_value((photo.name, photo.read_bytes(), "image/jpeg"))
    page.run()
    assert not page.exception, page.exception
    md = _markdown(page)
    # The photo is in the index: image-to-image search must rank it first, cosine ~ 1.
    first = next(m.value for m in page.markdown if m.value.startswith("**1.**"))
    assert float(first.split()[1]) > 0.99, first
    second = next(m.value for m in page.markdown if m.value.startswith("**2.**"))
    assert float(second.split()[1]) < float(first.split()[1])
    # the upload's category probabilities, most likely first
    assert any(m.value.startswith("forest:") for m in page.markdown), md


def test_upload_that_is_not_an_image_is_refused(page: AppTest) -> None:
    page.file_uploader(key="image_upload").set_value(("fake.jpg", b"not a jpeg", "image/jpeg"))
    page.run()
    assert not page.exception, page.exception
    assert any("fake.jpg: cannot use this file" in e.value for e in page.error)


def test_page_says_how_the_index_answered_and_marks_weak_results(page: AppTest) -> None:
    page.text_input(key="search_query").input("snow and ice on a glacier").run()
    assert not page.exception, page.exception
    captions = "\n".join(c.value for c in page.caption)
    assert "exact search" in captions and "relevance floor" in captions
    page.text_input(key="search_query").input("spreadsheet of quarterly tax returns").run()
    assert any(i.value.startswith("No good match") for i in page.info)
    assert "below the relevance floor" in _markdown(page)
    page.text_input(key="search_query").input("sea waves -people").run()
    assert any(i.value.startswith("Excluded: people") for i in page.info)


def test_upload_steered_by_words(page: AppTest, intel_small: Path) -> None:
    photo = sorted((intel_small / "seg_test" / "glacier").glob("*.jpg"))[0]
    page.file_uploader(key="image_upload").set_value((photo.name, photo.read_bytes(), "image/jpeg"))
    page.run()
    page.text_input(key="upload_words").input("a sandy beach with waves").run()
    assert not page.exception, page.exception
    assert "photo (50%) + words (50%) ~ image" in _markdown(page)


def test_index_built_from_the_page_runs_as_a_job_that_outlives_a_rerun(
    intel_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's build runs in a background job (dashboard.jobs): right after the click the
    page shows its live progress, a rerun (as after switching pages) joins the same job instead
    of starting another, and once it ends the page serves the new index. It decodes in
    forkserver workers (build_index's default): multiprocessing would re-run the page script
    inside each of them unless the loader hides it."""
    from dashboard.jobs import index_job_key, registry

    data = tmp_path / "data"
    for split, n in (("seg_train", 3), ("seg_test", 2)):
        for c in ("forest", "sea"):
            (data / split / c).mkdir(parents=True)
            for f in sorted((intel_small / split / c).glob("*.jpg"))[:n]:
                shutil.copy2(f, data / split / c / f.name)
    monkeypatch.setenv("SCENESEEK_DATA", str(data))
    monkeypatch.setenv("SCENESEEK_INDEX", str(tmp_path / "idx"))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    job = registry().get(index_job_key(tmp_path / "idx"))
    assert job is not None and job.running  # loading the models alone takes seconds
    assert any("runs in the background" in c.value for c in at.caption)
    shown = [i.value for i in at.info] + [p.proto.text for p in at.get("progress")]
    # the build's own step (or, before its thread's first word, that it is starting)
    assert any(step in t for t in shown for step in (*STEPS, "Indexing: starting")), shown
    at.run()  # the page again, as when the user comes back: the same job, not a new one
    assert registry().get(index_job_key(tmp_path / "idx")) is job
    assert job.wait(TIMEOUT) and job.status == "done", job.error
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("Indexed 10 images") for s in at.success)
    assert "10 images" in at.caption[0].value  # the page now serves the new index


def _held_build(gate: threading.Event):
    """A build's work as the job panel sees it, encoding, held until `gate` opens (it writes
    nothing: the index stays as it was)."""

    def work(job: Job) -> None:
        job.stage(ENCODING, 3, 10)
        gate.wait(TIMEOUT)

    return work


def test_an_update_leaves_the_index_searchable_while_it_runs(
    small_index: Path, intel_small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19: while an update of an existing index runs, the page shows its progress AND
    keeps serving the index as it stands (it stopped at the progress before); the buttons
    that would write the index wait for it."""
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small))
    monkeypatch.setenv("SCENESEEK_INDEX", str(small_index))
    gate = threading.Event()
    job = registry().start(index_job_key(small_index), "Indexing", _held_build(gate))
    try:
        at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
        assert not at.exception, at.exception
        texts = [p.proto.text for p in at.get("progress")]
        assert any(t.startswith(f"{ENCODING}… 3/10") for t in texts), texts
        assert any("Meanwhile search the index as it stands" in c.value for c in at.caption)
        at.text_input(key="search_query").input("snow and ice on a glacier").run()
        assert not at.exception, at.exception
        md = _markdown(at)
        assert "**1.**" in md and "**10.**" in md  # answered from the index as it stands
        assert at.button(key="index_update").disabled and at.button(key="prune").disabled
    finally:
        gate.set()
    assert job.wait(TIMEOUT)
    registry().forget(job.key)
    at.run()  # ended: the page's buttons are back
    assert not at.button(key="index_update").disabled


def test_a_first_build_stops_the_page_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No index yet (nothing to search): the page shows the build's progress alone, neither
    a search box nor a second offer to build."""
    index = tmp_path / "none"
    monkeypatch.setenv("SCENESEEK_INDEX", str(index))
    gate = threading.Event()
    job = registry().start(index_job_key(index), "Indexing", _held_build(gate))
    try:
        at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
        assert not at.exception, at.exception
        assert [p.proto.text.split(" · ")[0] for p in at.get("progress")] == [f"{ENCODING}… 3/10"]
        assert not at.text_input and not at.button
    finally:
        gate.set()
    assert job.wait(TIMEOUT)
    registry().forget(job.key)
