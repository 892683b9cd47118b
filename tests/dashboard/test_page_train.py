"""AppTest of the Train a CNN and Runs & evaluation pages on a tiny real subset."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.helpers import PAGES

TRAIN = str(PAGES / "train.py")
RUNS = str(PAGES / "runs.py")


@pytest.fixture
def env(intel_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    runs = tmp_path / "runs"
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small))
    monkeypatch.setenv("SCENESEEK_RUNS", str(runs))
    return runs


def _no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_train_page_trains_a_run(env: Path) -> None:
    at = AppTest.from_file(TRAIN, default_timeout=180).run()
    _no_errors(at)
    assert any("efficientnet_lite0" in i.value for i in at.info)  # which backbone and why
    # The registry: every backbone with its size, input resolution and measured speed.
    table = at.dataframe[0].value.set_index("backbone")
    assert list(table.index) == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "resnet50",
    ]
    assert table.loc["efficientnet_lite2", "input (px)"] == 260
    assert table.loc["efficientnet_lite1", "img/s here"] > 0
    assert any("benchmarks/backbones.py" in c.value for c in at.caption)
    at.selectbox[1].set_value("linear-probe")
    at.number_input[0].set_value(3)
    at.selectbox[2].set_value(64).run()
    at.text_input[0].set_value("tiny")  # after the choices, which reset its default
    at.button[0].click().run()
    _no_errors(at)
    assert any("Test accuracy" in s.value for s in at.success)
    assert (env / "tiny" / "result.json").exists()
    # A rerun shows the run and trains nothing.
    stamp = (env / "tiny" / "checkpoint_last.pt").stat().st_mtime_ns
    at.run()
    _no_errors(at)
    assert (env / "tiny" / "checkpoint_last.pt").stat().st_mtime_ns == stamp
    assert "tiny" in at.dataframe[1].value["run"].tolist()


def test_train_page_offers_partial_modes_ensemble(env: Path) -> None:
    at = AppTest.from_file(TRAIN, default_timeout=180).run()
    _no_errors(at)
    ensemble = "efficientnet_lite0,efficientnet_lite2"  # core/resources/partial_search.json
    label = "lite0 + lite2"
    assert at.selectbox[0].options[-1] == label, at.selectbox[0].options
    at.selectbox[1].set_value("partial").run()  # one backbone: the page names the default
    assert any("trains lite0 + lite2 when no backbone" in c.value for c in at.caption)
    at.selectbox[0].set_value(ensemble)
    at.selectbox[1].set_value("linear-probe").run()
    assert any("partial mode only" in w.value for w in at.warning)  # and nothing to start
    assert not at.button
    at.selectbox[1].set_value("partial").run()
    _no_errors(at)
    assert at.selectbox[2].disabled  # each member runs at its own backbone's size
    assert at.text_input[0].value == "efficientnet_lite0+efficientnet_lite2-partial"
    assert at.number_input[0].value == 4  # epochs, tails: the validation choice
    tails = next(n for n in at.number_input if n.label.startswith("Tails"))
    assert tails.value == 5 and not tails.disabled


def test_train_page_without_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("SCENESEEK_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(TRAIN, default_timeout=60).run()
    assert not at.exception
    assert any("No data set found" in e.value for e in at.error)


def test_train_page_refuses_test_classes_the_training_lacks(
    intel_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page splits with core: an unknown test class is core's error, not dropped."""
    import shutil

    for split, classes in (("seg_train", ["forest", "sea"]), ("seg_test", ["forest", "street"])):
        for c in classes:
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for f in sorted((intel_small / split / c).glob("*.jpg"))[:3]:
                shutil.copy(f, tmp_path / "data" / split / c / f.name)
    monkeypatch.setenv("SCENESEEK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SCENESEEK_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(TRAIN, default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"{tmp_path / 'data'} (test): classes not in the training data: ['street']"
    ]
    assert not at.button  # nothing to start


def _make_run(intel_small: Path, runs: Path, name: str, epochs: int) -> Path:
    from core.data.split import split_data
    from core.vision.train import TrainConfig, run_training

    data = split_data(intel_small / "seg_train", intel_small / "seg_test")
    cfg = TrainConfig(epochs=epochs, image_size=64, workers=0)
    run_training(cfg, data, runs / name)
    return runs / name


def test_runs_page(env: Path, intel_small: Path) -> None:
    at = AppTest.from_file(RUNS, default_timeout=60).run()
    assert not at.exception and any("No runs" in i.value for i in at.info)

    _make_run(intel_small, env, "a", 3)
    _make_run(intel_small, env, "b", 2)
    at = AppTest.from_file(RUNS, default_timeout=180).run()
    _no_errors(at)
    assert len(at.selectbox[0].options) == 2
    assert any("chosen on validation" in m.value for m in at.markdown)
    assert any("Checkpoint chosen by: **validation**" in c.value for c in at.caption)
    assert any("precision" in c.value for c in at.code)  # the classification report
    # t-SNE on demand, then the eigen-image comparison.
    next(b for b in at.button if b.label == "Compute t-SNE").click().run()
    _no_errors(at)
    run_name = at.selectbox[0].value.split(" ")[0]
    assert (env / run_name / "tsne.npz").exists()
    next(b for b in at.button if "eigen" in b.label).click().run()
    _no_errors(at)
    assert any("Best eigen-image accuracy" in c.value for c in at.caption)

    # Predict: a real photo, then a file that is not an image.
    photo = sorted((intel_small / "seg_test" / "sea").glob("*.jpg"))[0].read_bytes()
    up = at.file_uploader(key=f"upload-{run_name}")
    up.set_value(("sea.jpg", photo, "image/jpeg")).run()
    _no_errors(at)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    at.file_uploader(key=f"upload-{run_name}").set_value(("notes.txt", b"hello", "text/plain"))
    at.run()
    assert not at.exception
    assert any("not a readable image" in e.value for e in at.error)


def test_runs_page_marks_an_old_run(env: Path, intel_small: Path) -> None:
    """A run written before validation splits (no selected_by) is shown as such."""
    import json

    run = _make_run(intel_small, env, "old", 2)
    for name in ("result.json", "config.json"):
        d = json.loads((run / name).read_text())
        for key in ("selected_by", "val_accuracy", "validation"):
            d.pop(key, None)
        (run / name).write_text(json.dumps(d))
    at = AppTest.from_file(RUNS, default_timeout=180).run()
    _no_errors(at)
    assert any("unknown (old run)" in c.value for c in at.caption)
    assert any("unknown (old run)" in w.value for w in at.warning)
