"""`python -m core train | evaluate | predict` on a tiny real subset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from core.cli import app

CLASSES = ["buildings", "forest", "glacier", "mountain", "sea", "street"]
# Keys both `train --json` and `evaluate --json` report.
REPORT_KEYS = (
    "accuracy",
    "macro_f1",
    "per_class",
    "confusion_matrix",
    "class_names",
    "epochs",
    "backbone",
    "mode",
)


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _train(
    intel_small: Path,
    out: Path,
    *extra: str,
    train: Path | None = None,
    backbone: str = "efficientnet_lite0",
    epochs: int = 5,
    image_size: int = 96,
):
    """`train` on the small subset (no DataLoader workers), plus `extra` options."""
    return _invoke(
        "train",
        "--train",
        train or intel_small / "seg_train",
        "--test",
        intel_small / "seg_test",
        "--backbone",
        backbone,
        "--epochs",
        epochs,
        "--image-size",
        image_size,
        "--workers",
        "0",
        "--out",
        out,
        *extra,
    )


@pytest.fixture(scope="module")
def trained(intel_small: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "lp"
    res = _train(intel_small, out, "--mode", "linear-probe", "--json")
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def _val_accuracy(run: Path, intel_small: Path, n_val: int) -> pytest.approx:
    """The saved run's accuracy on its held-out validation images, computed afresh."""
    from core.data.split import make_partition, split_data
    from core.vision.runs import load_trained, score_images

    data = split_data(intel_small / "seg_train", intel_small / "seg_test")
    part = make_partition(data.train_paths, data.train_labels, [], [], 0.1, 0)
    assert len(part.val_paths) == n_val
    labels = [data.class_names[y] for y in part.val_labels]
    res, _, _ = score_images(load_trained(run), part.val_paths, labels, workers=0)
    return pytest.approx(res.accuracy, abs=1 / n_val + 1e-9)


def test_train_json(trained: tuple[Path, dict], intel_small: Path) -> None:
    run, report = trained
    for key in (*REPORT_KEYS, "val_accuracy", "train_seconds"):
        assert key in report, key
    assert report["selected_by"] == "validation"
    # The validation accuracy is the chosen epoch's, and what the saved model scores on the
    # held-out images (live inference, not the cached features: within one image).
    assert report["val_accuracy"] == report["epochs"][report["best_epoch"] - 1]["val_accuracy"]
    assert report["val_accuracy"] == _val_accuracy(run, intel_small, report["n_val"])
    assert report["class_names"] == CLASSES
    assert report["backbone"] == "efficientnet_lite0" and report["mode"] == "linear-probe"
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4, 5]
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == 48
    assert report["accuracy"] == pytest.approx(np.trace(cm) / 48)
    assert report["accuracy"] > 0.5 and report["train_seconds"] > 0


def test_train_refuses_to_overwrite_and_resume_finishes(trained, intel_small: Path) -> None:
    out, report = trained
    res = _train(intel_small, out)
    assert res.exit_code == 2 and "--resume" in res.output
    # Already finished: reports, trains nothing.
    res = _train(intel_small, out, "--resume", "--json")
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
    for key in REPORT_KEYS:
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
    res = _train(intel_small, tmp_path / "r", train=tmp_path / "nope")
    assert res.exit_code == 2 and "nope: no such folder" in res.output
    res = _train(intel_small, tmp_path / "r", backbone="vgg")
    assert res.exit_code == 2 and "efficientnet_lite0" in res.output
    res = _train(intel_small, tmp_path / "r", "--mode", "everything")
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
    def train(out: Path, *extra: str, image_size: int = 64):
        return _train(intel_small, out, *extra, epochs=2, image_size=image_size)

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    _one_line_error(train(a_file), "is a file")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not weights" * 10)
    _one_line_error(train(tmp_path / "w", "--weights", garbage), "garbage.pth")
    _one_line_error(train(tmp_path / "w", "--weights", tmp_path / "none.pth"), "no such file")
    _one_line_error(train(tmp_path / "d", "--device", "tpu9"), "tpu9")
    _one_line_error(train(tmp_path / "i", image_size=0), "--image-size")
    _one_line_error(train(tmp_path / "v", "--val-fraction", "1.5"), "--val-fraction")
    _one_line_error(
        train(tmp_path / "u", "--mode", "partial", "--unfreeze", "blocks.99.0"), "--unfreeze"
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
    config = (cut / "config.json").read_bytes()
    _one_line_error(_train(intel_small, cut, "--resume", epochs=6), "truncated")
    _one_line_error(
        _train(intel_small, foreign, "--resume", epochs=6), "not a SceneSeek run checkpoint"
    )
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
    res = _train(intel_small, copy, "--resume", train=other, epochs=6)
    _one_line_error(res, "different data")
    assert {f.name: f.read_bytes() for f in copy.iterdir()} == before


def test_partial_mode_defaults_to_the_backbones_its_search_chose(monkeypatch) -> None:
    # the record names Lite0 and Lite2 (validation 94.85% against 94.51% for Lite0 alone):
    # `train --mode partial` without --backbone trains both, other modes stay on Lite0
    import core.vision.backbones as backbones
    from core.cli.train import _choose_backbone
    from core.io import read_json
    from core.vision.train.config import PARTIAL_SEARCH, partial_backbone, partial_defaults

    monkeypatch.setattr(backbones, "resnet50_cached_file", lambda: None)
    record = read_json(PARTIAL_SEARCH)
    assert partial_backbone() == record["chosen"]["backbone"] == record["backbone"]
    name, why = _choose_backbone("", "partial")
    assert name == "efficientnet_lite0,efficientnet_lite2" and "validation" in why
    assert _choose_backbone("", "linear-probe")[0] == "efficientnet_lite0"
    assert _choose_backbone("efficientnet_lite0", "partial")[0] == "efficientnet_lite0"
    # the chosen settings apply to each backbone; the backbone is not one of them
    defaults = partial_defaults("efficientnet_lite0")
    assert "backbone" not in defaults and defaults["members"] == 5
    assert defaults["unfreeze"] == "blocks.6.0" and defaults["image_size"] == 224
    assert partial_defaults("efficientnet_lite2")["image_size"] == 260
