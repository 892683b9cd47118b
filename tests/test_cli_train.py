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
    res = _invoke(
        "train",
        "--train",
        intel_small / "seg_train",
        "--test",
        intel_small / "seg_test",
        "--backbone",
        "efficientnet_lite0",
        "--mode",
        "linear-probe",
        "--epochs",
        "5",
        "--image-size",
        "96",
        "--workers",
        "0",
        "--out",
        out,
        "--json",
    )
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_train_json(trained: tuple[Path, dict]) -> None:
    _, report = trained
    for key in (
        "accuracy",
        "val_accuracy",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "class_names",
        "epochs",
        "backbone",
        "mode",
        "train_seconds",
    ):
        assert key in report, key
    assert report["selected_by"] == "validation" and 0 <= report["val_accuracy"] <= 1
    assert report["class_names"] == CLASSES
    assert report["backbone"] == "efficientnet_lite0" and report["mode"] == "linear-probe"
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4, 5]
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == 48
    assert report["accuracy"] == pytest.approx(np.trace(cm) / 48)
    assert report["accuracy"] > 0.5 and report["train_seconds"] > 0


def test_train_refuses_to_overwrite_and_resume_finishes(trained, intel_small: Path) -> None:
    out, report = trained
    base = [
        "train",
        "--train",
        intel_small / "seg_train",
        "--test",
        intel_small / "seg_test",
        "--backbone",
        "efficientnet_lite0",
        "--epochs",
        "5",
        "--image-size",
        "96",
        "--workers",
        "0",
        "--out",
        out,
    ]
    res = _invoke(*base)
    assert res.exit_code == 2 and "--resume" in res.output
    res = _invoke(*base, "--resume", "--json")  # already finished: reports, trains nothing
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert again["accuracy"] == report["accuracy"] and len(again["epochs"]) == 5


def test_evaluate_json_matches_training(trained, intel_small: Path) -> None:
    out, report = trained
    res = _invoke(
        "evaluate", "--run", out, "--test", intel_small / "seg_test", "--workers", "0", "--json"
    )
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    for key in (
        "accuracy",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "class_names",
        "epochs",
        "backbone",
        "mode",
    ):
        assert key in ev, key
    # Same checkpoint (the one validation chose), same images, same preprocessing: the same
    # predictions.
    assert ev["confusion_matrix"] == report["confusion_matrix"]
    assert ev["checkpoint_epoch"] == report["best_epoch"] and ev["selected_by"] == "validation"


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
    assert "not a readable image: not-an-image" in res.stdout  # its row of the report
    assert res.stderr.strip().splitlines() == [
        "error: 1 of 2 images could not be read: notes.jpg (not a readable image: not-an-image)"
    ]


def test_clear_errors(intel_small: Path, tmp_path: Path) -> None:
    res = _invoke(
        "train",
        "--train",
        tmp_path / "nope",
        "--test",
        intel_small / "seg_test",
        "--out",
        tmp_path / "r",
    )
    assert res.exit_code == 2 and "nope: no such folder" in res.output
    res = _invoke(
        "train",
        "--train",
        intel_small / "seg_train",
        "--test",
        intel_small / "seg_test",
        "--backbone",
        "vgg",
        "--out",
        tmp_path / "r",
    )
    assert res.exit_code == 2 and "efficientnet_lite0" in res.output
    res = _invoke(
        "train",
        "--train",
        intel_small / "seg_train",
        "--test",
        intel_small / "seg_test",
        "--mode",
        "everything",
        "--out",
        tmp_path / "r",
    )
    assert res.exit_code == 2 and "linear-probe" in res.output
    res = _invoke("evaluate", "--run", tmp_path / "none", "--test", intel_small / "seg_test")
    assert res.exit_code == 2 and "not a run folder" in res.output


def _one_line_error(res, *needles: str) -> None:
    """Non-zero exit, one line on stderr naming the problem, no traceback."""
    assert res.exit_code != 0, res.output
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    for n in needles:
        assert n in lines[0], lines[0]


def test_training_faults_are_one_line(intel_small: Path, tmp_path: Path) -> None:
    base = [
        "train",
        "--train",
        intel_small / "seg_train",
        "--test",
        intel_small / "seg_test",
        "--backbone",
        "efficientnet_lite0",
        "--epochs",
        "2",
        "--image-size",
        "64",
        "--workers",
        "0",
    ]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    _one_line_error(_invoke(*base, "--out", a_file), "is a file")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not weights" * 10)
    _one_line_error(_invoke(*base, "--weights", garbage, "--out", tmp_path / "w"), "garbage.pth")
    _one_line_error(
        _invoke(*base, "--weights", tmp_path / "none.pth", "--out", tmp_path / "w"), "no such file"
    )
    _one_line_error(_invoke(*base, "--device", "tpu9", "--out", tmp_path / "d"), "tpu9")
    _one_line_error(_invoke(*base, "--image-size", "0", "--out", tmp_path / "i"), "--image-size")
    _one_line_error(
        _invoke(*base, "--val-fraction", "1.5", "--out", tmp_path / "v"), "--val-fraction"
    )
    _one_line_error(
        _invoke(*base, "--mode", "partial", "--unfreeze", "blocks.99.0", "--out", tmp_path / "u"),
        "--unfreeze",
    )
    assert not (tmp_path / "w").exists() and not (tmp_path / "d").exists()


def test_damaged_checkpoints_are_one_line(trained, intel_small: Path, tmp_path: Path) -> None:
    import shutil

    import torch

    out, _ = trained
    img = sorted((intel_small / "seg_test" / "forest").glob("*.jpg"))[0]
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        data = (cut / name).read_bytes()
        (cut / name).write_bytes(data[: len(data) // 3])
    foreign = tmp_path / "foreign"
    shutil.copytree(out, foreign)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        torch.save({"weight": torch.zeros(3)}, foreign / name)
    for run in (cut, foreign):
        _one_line_error(
            _invoke("evaluate", "--run", run, "--test", intel_small / "seg_test", "--workers", "0"),
            str(run),
        )
        _one_line_error(_invoke("predict", "--run", run, img), str(run))
    base = [
        "train",
        "--train",
        intel_small / "seg_train",
        "--test",
        intel_small / "seg_test",
        "--backbone",
        "efficientnet_lite0",
        "--epochs",
        "6",
        "--image-size",
        "96",
        "--workers",
        "0",
        "--resume",
    ]
    config = (cut / "config.json").read_bytes()
    _one_line_error(_invoke(*base, "--out", cut), "truncated")
    _one_line_error(_invoke(*base, "--out", foreign), "not a SceneSeek run checkpoint")
    assert (cut / "config.json").read_bytes() == config  # nothing written before validating
    _one_line_error(
        _invoke("evaluate", "--run", out, "--test", intel_small / "seg_test", "--device", "tpu9"),
        "tpu9",
    )


def test_resume_with_other_data_writes_nothing(trained, intel_small: Path, tmp_path: Path) -> None:
    import shutil

    out, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    other = tmp_path / "other"
    shutil.copytree(intel_small / "seg_train", other)
    next(other.glob("forest/*.jpg")).unlink()
    before = {f.name: f.read_bytes() for f in copy.iterdir()}
    res = _invoke(
        "train",
        "--train",
        other,
        "--test",
        intel_small / "seg_test",
        "--backbone",
        "efficientnet_lite0",
        "--epochs",
        "6",
        "--image-size",
        "96",
        "--workers",
        "0",
        "--out",
        copy,
        "--resume",
    )
    _one_line_error(res, "different data")
    assert {f.name: f.read_bytes() for f in copy.iterdir()} == before
