"""AppTest of the Data set and Home pages on a small real subset."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import PAGES


def test_dataset_page_on_real_subset(intel_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small))
    at = AppTest.from_file(str(PAGES / "dataset.py"), default_timeout=120).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == str(6 * (20 + 8))
    assert metrics["Classes"] == "6"
    # Paging through the grid works.
    at.selectbox(key="grid_class").set_value("sea").run()
    assert not at.exception


def test_dataset_page_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(tmp_path / "nothing"))
    at = AppTest.from_file(str(PAGES / "dataset.py"), default_timeout=60).run()
    assert not at.exception
    assert "No data set found" in at.error[0].value
    assert "seg_train/<class>/" in at.error[0].value


def test_home_page() -> None:
    at = AppTest.from_file(str(PAGES / "home.py"), default_timeout=60).run()
    assert not at.exception and "SceneSeek" in at.title[0].value
