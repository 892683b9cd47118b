"""`python -m core train | evaluate | predict` on a tiny real subset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from core.cli import app

CLASSES = ["buildings", "forest", "glacier", "mountain", "sea", "street"]


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(intel_small: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "lp"
    res = _invoke("train", "--train", intel_small / "seg_train", "--test",
                  intel_small / "seg_test", "--backbone", "efficientnet_lite0", "--mode",
                  "linear-probe", "--epochs", "5", "--image-size", "96", "--workers", "0",
                  "--out", out, "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_train_json(trained: tuple[Path, dict]) -> None:
    _, report = trained
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "class_names",
                "epochs", "backbone", "mode", "train_seconds"):  # fmt: skip
        assert key in report, key
    assert report["class_names"] == CLASSES
    assert report["backbone"] == "efficientnet_lite0" and report["mode"] == "linear-probe"
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4, 5]
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == 48
    assert report["accuracy"] == pytest.approx(np.trace(cm) / 48)
    assert report["accuracy"] > 0.5 and report["train_seconds"] > 0


def test_train_refuses_to_overwrite_and_resume_finishes(trained, intel_small: Path) -> None:
    out, report = trained
    base = ["train", "--train", intel_small / "seg_train", "--test", intel_small / "seg_test",
            "--backbone", "efficientnet_lite0", "--epochs", "5", "--image-size", "96",
            "--workers", "0", "--out", out]  # fmt: skip
    res = _invoke(*base)
    assert res.exit_code == 2 and "--resume" in res.output
    res = _invoke(*base, "--resume", "--json")  # already finished: reports, trains nothing
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert again["accuracy"] == report["accuracy"] and len(again["epochs"]) == 5


def test_evaluate_json_matches_training(trained, intel_small: Path) -> None:
    out, report = trained
    res = _invoke("evaluate", "--run", out, "--test", intel_small / "seg_test", "--workers", "0",
                  "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "class_names",
                "epochs", "backbone", "mode"):  # fmt: skip
        assert key in ev, key
    # Same checkpoint, same images, same preprocessing: the same predictions.
    assert ev["confusion_matrix"] == report["confusion_matrix"]
    assert ev["checkpoint_epoch"] == 5


def test_predict(trained, intel_small: Path, tmp_path: Path) -> None:
    out, _ = trained
    img = sorted((intel_small / "seg_test" / "forest").glob("*.jpg"))[0]
    res = _invoke("predict", "--run", out, img, "--json")
    assert res.exit_code == 0, res.output
    pred = json.loads(res.stdout)["predictions"][0]
    assert set(pred["probabilities"]) == set(CLASSES)
    assert sum(pred["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert pred["label"] == max(pred["probabilities"], key=pred["probabilities"].get)
    assert len(pred["imagenet_top5"]) == 5
    text = _invoke("predict", "--run", out, img)
    assert text.exit_code == 0 and img.name in text.output

    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    res = _invoke("predict", "--run", out, img, bad)
    assert res.exit_code == 1
    assert "not a readable image: not-an-image" in res.output


def test_clear_errors(intel_small: Path, tmp_path: Path) -> None:
    res = _invoke("train", "--train", tmp_path / "nope", "--test", intel_small / "seg_test",
                  "--out", tmp_path / "r")  # fmt: skip
    assert res.exit_code == 2 and "nope: no such folder" in res.output
    res = _invoke("train", "--train", intel_small / "seg_train", "--test",
                  intel_small / "seg_test", "--backbone", "vgg", "--out", tmp_path / "r")  # fmt: skip
    assert res.exit_code == 2 and "efficientnet_lite0" in res.output
    res = _invoke("train", "--train", intel_small / "seg_train", "--test",
                  intel_small / "seg_test", "--mode", "everything", "--out", tmp_path / "r")  # fmt: skip
    assert res.exit_code == 2 and "linear-probe" in res.output
    res = _invoke("evaluate", "--run", tmp_path / "none", "--test", intel_small / "seg_test")
    assert res.exit_code == 2 and "not a run folder" in res.output
