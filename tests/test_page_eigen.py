"""AppTest of the Eigen-images page on a small real subset."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import PAGES

PAGE = str(PAGES / "eigen.py")


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _percent(text: str) -> float:
    assert text.endswith("%"), text
    return float(text[:-1]) / 100


def test_eigen_page_slider_and_controls(intel_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    metrics = _metrics(at)
    accuracy = _percent(metrics["Accuracy"])
    assert 0.0 < accuracy <= 1.0
    assert 0.0 <= float(metrics["Macro F1"]) <= 1.0
    assert metrics["Components k"] == "39"
    assert any("train 120 · test 48" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) >= 4  # confusion, distances, accuracy vs k, variance
    assert at.dataframe[0].value.shape == (6, 5)  # the classification report

    # Moving the slider answers from the cached model with the new k.
    at.slider(key="eigen_k").set_value(10).run()
    assert not at.exception
    assert _metrics(at)["Components k"] == "10"
    assert 0.0 < _percent(_metrics(at)["Accuracy"]) <= 1.0
    # A k above what 120 images allow is clamped, and said so.
    at.slider(key="eigen_k").set_value(200).run()
    assert not at.exception
    assert _metrics(at)["Components k"] == "119"
    assert any("at most 119" in c.value for c in at.caption)

    # The other controls refit (a new cache entry) and still render.
    at.selectbox(key="eigen_method").set_value("class-subspace").run()
    assert not at.exception and _percent(_metrics(at)["Accuracy"]) > 0
    at.selectbox(key="eigen_size").set_value(32).run()
    at.number_input(key="eigen_cap").set_value(10).run()
    assert not at.exception
    assert any("train 60 · test 48" in c.value for c in at.caption)
    at.checkbox(key="eigen_wrong_first").uncheck().run()
    assert not at.exception


def test_eigen_page_without_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(tmp_path / "nothing"))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "No data set found" in at.error[0].value


def test_eigen_page_needs_a_test_split(
    intel_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Class folders only (one split): a clear message, not a crash."""
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small / "seg_train"))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert "needs labelled train and test images" in at.error[0].value
