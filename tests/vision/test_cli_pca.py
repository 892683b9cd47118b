"""`python -m core pca` on a small real subset: the JSON report, the text report, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from core.cli import app
from core.metrics import ClassificationResult
from core.vision.eigen import EigenImageClassifier, explained_variance_at
from tests.helpers import REPO, gray_splits

CLASSES = ["buildings", "forest", "glacier", "mountain", "sea", "street"]


def _run(intel_small: Path, cache: Path, *extra: str):
    args = [
        "pca",
        "--train",
        str(intel_small / "seg_train"),
        "--test",
        str(intel_small / "seg_test"),
        "--cache",
        str(cache),
        *extra,
    ]
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def report(intel_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    res = _run(intel_small, tmp_path_factory.mktemp("cache"), "--components", "10", "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_json_keys_and_values(report: dict) -> None:
    # Every field of the shared ClassificationResult (accuracy, macro_f1, per_class,
    # confusion_matrix, class_names, ...), then the eigen-image figures.
    result_keys = [f.name for f in fields(ClassificationResult)]
    for key in (*result_keys, "components", "fit_seconds", "predict_seconds", "n_train", "n_test"):
        assert key in report, key
    assert report["class_names"] == CLASSES
    assert report["n_train"] == 6 * 20 and report["n_test"] == 6 * 8
    assert report["components"] == 10 and report["method"] == "global"
    assert report["image_size"] == 64
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == 48 and (cm.sum(axis=1) == 8).all()
    assert report["accuracy"] == pytest.approx(np.trace(cm) / 48)
    # Macro F1: the mean of the per-class F1 (every class is in the test set).
    per_class_f1 = [report["per_class"][c]["f1"] for c in CLASSES]
    assert report["macro_f1"] == pytest.approx(np.mean(per_class_f1))
    assert set(report["per_class"]) == set(CLASSES)
    assert all(report["per_class"][c]["support"] == 8 for c in CLASSES)
    assert report["fit_seconds"] > 0 and report["predict_seconds"] > 0
    assert set(report["mean_distance_per_class"]) == set(CLASSES)
    assert report["skipped_train"] == 0 and report["skipped_test"] == 0


def test_same_figures_as_the_library(report: dict, intel_small: Path) -> None:
    """The CLI adds nothing of its own to the numbers: fit the same model directly."""
    data = gray_splits(intel_small, 64)
    model = EigenImageClassifier(n_components=10).fit(*data["train"])
    assert report["accuracy"] == model.score(*data["test"])
    # Moved from a range check (0 < share < 1): the library's share of variance at k=10.
    assert report["explained_variance"] == pytest.approx(explained_variance_at(model, 10))
    distances = model.mean_distance_per_class(*data["test"])
    assert report["mean_distance_per_class"] == pytest.approx(distances)


def test_class_subspace_with_sweep(intel_small: Path, tmp_path: Path) -> None:
    res = _run(
        intel_small,
        tmp_path,
        "--components",
        "4",
        "--method",
        "class-subspace",
        "--sweep",
        "6",
        "--json",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["method"] == "class-subspace" and out["components"] == 4
    assert list(out["sweep"]) == [str(k) for k in range(1, 7)]
    # --components k is read from the same fit as the sweep, so the two agree.
    assert out["accuracy"] == out["sweep"]["4"]
    # Every k of the sweep scores as a fresh fit of that many components would.
    data = gray_splits(intel_small, 64)
    for k in range(1, 7):
        refit = EigenImageClassifier(n_components=k, method="class-subspace").fit(*data["train"])
        assert out["sweep"][str(k)] == refit.score(*data["test"]), k


def test_text_report(intel_small: Path, tmp_path: Path) -> None:
    res = _run(intel_small, tmp_path, "--components", "5", "--image-size", "32", "--sweep", "3")
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "eigen-images (global), k=5 of 32x32" in text
    assert "precision" in text and "macro avg" in text
    assert all(c in text for c in CLASSES)
    assert "accuracy by k" in text and "k=   3" in text


@pytest.mark.parametrize(
    ("which", "extra"),
    [("--train", []), ("--test", []), (None, ["--method", "nearest"])],
    ids=["train", "test", "method"],
)
def test_bad_input_exits_with_one_line(
    intel_small: Path, tmp_path: Path, which: str | None, extra: list[str]
) -> None:
    folders = {"--train": intel_small / "seg_train", "--test": intel_small / "seg_test"}
    if which:
        folders[which] = tmp_path / "missing"
    args = ["pca", *(x for kv in folders.items() for x in (kv[0], str(kv[1]))), *extra]
    res = CliRunner().invoke(app, [*args, "--cache", str(tmp_path / "c"), "--json"])
    assert res.exit_code == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    if which:
        assert f"error: {which}: " in res.stderr and "no such folder" in res.stderr
    else:
        assert "--method must be one of global, class-subspace" in res.stderr


def test_python_dash_m_core(intel_small: Path, tmp_path: Path) -> None:
    """The real entry point, as a user runs it; a folder without class folders fails."""
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "pca",
            "--train",
            str(empty),
            "--test",
            str(intel_small / "seg_test"),
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --train: ")
    assert "no images found" in lines[0]


def test_broken_files_are_skipped_and_counted(intel_small: Path, tmp_path: Path) -> None:
    import shutil

    train = tmp_path / "train"
    shutil.copytree(intel_small / "seg_train", train)
    good = sorted((train / "sea").glob("*.jpg"))[0]
    (train / "forest" / "cut.jpg").write_bytes(good.read_bytes()[:500])  # truncated
    (train / "sea" / "empty.jpg").write_bytes(b"")
    args = [
        "pca",
        "--train",
        str(train),
        "--test",
        str(intel_small / "seg_test"),
        "--components",
        "5",
        "--cache",
        str(tmp_path / "c"),
        "--json",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["skipped_train"] == 2 and out["n_train"] == 120
