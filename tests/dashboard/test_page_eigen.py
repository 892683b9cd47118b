"""AppTest of the Eigen-images page on a small real subset."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.metrics import classification_result
from core.vision.eigen import EigenImageClassifier
from tests.helpers import PAGES, gray_splits

PAGE = str(PAGES / "eigen.py")


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _percent(text: str) -> float:
    assert text.endswith("%"), text
    return float(text[:-1]) / 100


def _expected(intel_small: Path, k: int, method: str = "global", size: int = 64):
    """The library's report for the page's data from a fresh fit of k components: the page
    reads k from prefixes of one larger fit, which must give the same answer."""
    data = gray_splits(intel_small, size)
    model = EigenImageClassifier(n_components=k, method=method).fit(*data["train"])
    x_test, y_test = data["test"]
    return classification_result(y_test, model.predict(x_test), sorted(set(y_test)))


def test_eigen_page_slider_and_controls(intel_small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    metrics = _metrics(at)
    accuracy = _percent(metrics["Accuracy"])
    expected = _expected(intel_small, 39)
    assert accuracy == pytest.approx(expected.accuracy, abs=5e-4)  # shown to 0.1%
    assert metrics["Macro F1"] == f"{expected.macro_f1:.3f}"
    assert metrics["Components k"] == "39"
    assert any("train 120 · test 48" in c.value for c in at.caption)
    # confusion, distances, accuracy vs k, variance, projection (t-SNE waits for its box)
    assert len(at.get("plotly_chart")) == 5
    assert at.dataframe[0].value.shape == (6, 5)  # the classification report

    # Moving the slider answers from the cached model with the new k.
    at.slider(key="eigen_k").set_value(10).run()
    assert not at.exception
    assert _metrics(at)["Components k"] == "10"
    assert _metrics(at)["Accuracy"] == f"{_expected(intel_small, 10).accuracy:.1%}"
    # A k above what 120 images allow is clamped, and said so.
    at.slider(key="eigen_k").set_value(200).run()
    assert not at.exception
    assert _metrics(at)["Components k"] == "119"
    assert any("at most 119" in c.value for c in at.caption)

    # The other controls refit (a new cache entry) and still render.
    at.selectbox(key="eigen_method").set_value("class-subspace").run()
    assert not at.exception
    expected = _expected(intel_small, 119, "class-subspace")  # the slider still says 200
    assert _metrics(at)["Accuracy"] == f"{expected.accuracy:.1%}"
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
