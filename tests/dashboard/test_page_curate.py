"""AppTest of the Curate page on a small real subset: the audit runs, a decision lands in the
review sidecar, and a lasso/box selection on the map reaches the image grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data.review import review_file
from dashboard.jobs import registry
from tests.helpers import PAGES

pytestmark = pytest.mark.slow
PAGE = str(PAGES / "curate.py")


@pytest.fixture
def page(intel_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small))
    monkeypatch.setenv("SCENESEEK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SCENESEEK_INDEX", str(tmp_path / "no-index"))
    at = AppTest.from_file(PAGE, default_timeout=600).run()
    assert not at.exception, at.exception
    at.button(key="curate_start").click().run()
    assert not at.exception, at.exception
    # The audit runs as a background job: the page shows its progress meanwhile, and once it
    # has ended a run of the page shows the tabs.
    assert any("runs in the background" in c.value for c in at.caption)
    for job in registry().jobs():
        job.wait(600)
    at.run()
    assert not at.exception, at.exception
    return at


def test_audit_review_and_map_selection(page: AppTest, intel_small: Path) -> None:
    metrics = {m.label: m.value for m in page.metric}
    assert metrics["Groups"] == "0"  # the subset has no near-duplicates at the default
    # Mark the most likely label mistake "remove": it goes to the sidecar in the cache.
    radios = [r for r in page.radio if r.key and r.key.startswith("rv_")]
    assert radios, "the review grid shows the flagged images"
    radios[0].set_value("remove").run()
    assert not page.exception, page.exception
    sidecar = review_file(intel_small)
    decisions = json.loads(sidecar.read_text())["decisions"]
    assert [d["action"] for d in decisions.values()] == ["remove"]
    # A box/lasso selection event on the map (what Streamlit sends) reaches the grid.
    before = len(page.get("image"))
    page.session_state["curate_map"] = {
        "selection": {
            "points": [{"customdata": [3]}, {"customdata": [40]}, {"customdata": [41]}],
            "point_indices": [3, 40, 41],
            "box": [],
            "lasso": [],
        }
    }
    page.run()
    assert not page.exception, page.exception
    assert any("Selected: 3 images" in m.value for m in page.markdown)
    assert page.session_state["curate_selection"] == [3, 40, 41]
    assert len(page.get("image")) > before
    # The export tab offers exactly the selection.
    page.radio(key="curate_export_what").set_value("map selection").run()
    assert any(c.value.startswith("3 images") for c in page.caption)


def test_page_without_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(tmp_path / "nothing"))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "No data set found" in at.error[0].value


def test_eigen_page_tsne_of_pca_space(intel_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small))
    at = AppTest.from_file(str(PAGES / "eigen.py"), default_timeout=300).run()
    assert not at.exception, at.exception
    charts = len(at.get("plotly_chart"))
    at.checkbox(key="eigen_tsne").check().run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == charts + 1
