"""Training on a tiny real subset: beats chance, follows the recipe, resumes without losing
a finished epoch (interrupted after an epoch, mid-epoch, and killed before its log line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.io import read_jsonl
from core.vision.runs import load_run, load_trained, misclassified, split_data
from core.vision.train import (
    Hooks,
    RunExistsError,
    RunFiles,
    SplitData,
    TrainConfig,
    TrainingStopped,
    lr_at,
    run_training,
)

CHANCE = 1 / 6
# Real runs on this subset (20 train / 8 test per class, 96 px) reach ~0.8 test accuracy
# after 4-10 linear-probe epochs; 0.5 is three times chance with a wide margin.
MIN_ACCURACY = 0.5


@pytest.fixture(scope="module")
def data(intel_small: Path) -> SplitData:
    return split_data(intel_small / "seg_train", intel_small / "seg_test")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("features")


def _cfg(**kw) -> TrainConfig:
    base = dict(mode="linear-probe", epochs=4, image_size=96, workers=0, step_size=2)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def probe_run(data: SplitData, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("runs") / "probe"
    return run_training(_cfg(epochs=10, step_size=5), data, out, cache_dir=cache)


def test_linear_probe_beats_chance_and_writes_a_run(probe_run: dict) -> None:
    assert probe_run["accuracy"] >= MIN_ACCURACY > 3 * CHANCE - 0.01
    assert probe_run["n_test"] == 48 and probe_run["n_train"] == 120
    run = RunFiles(Path(probe_run["run"]))
    for f in (run.config, run.metrics, run.last, run.best, run.eval, run.result):
        assert f.exists(), f
    metrics = read_jsonl(run.metrics)
    assert [m["epoch"] for m in metrics] == list(range(1, 11))
    for m in metrics:
        for key in ("train_loss", "accuracy", "macro_precision", "macro_recall", "macro_f1",
                    "lr", "seconds"):  # fmt: skip
            assert key in m
    cfg = TrainConfig.from_dict(json.loads(run.config.read_text()))
    assert [m["lr"] for m in metrics] == pytest.approx([lr_at(cfg, e) for e in range(1, 11)])
    assert metrics[0]["lr"] == pytest.approx(1e-3) and metrics[5]["lr"] == pytest.approx(1e-4)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert any("no flip/rotation" in n for n in cfg.notes)
    ckpt = torch.load(run.last, map_location="cpu", weights_only=False)
    assert {"model", "optimizer", "lr_scheduler", "epoch", "config", "class_names"} <= set(ckpt)
    assert ckpt["epoch"] == 10
    # The result scores the last checkpoint, consistent with its epoch line.
    assert probe_run["accuracy"] == pytest.approx(metrics[-1]["accuracy"])
    assert sum(map(sum, probe_run["confusion_matrix"])) == 48


def test_saved_run_reloads_and_reports_misclassified(probe_run: dict) -> None:
    info = load_run(probe_run["run"])
    assert info.finished and not info.resumable
    trained = load_trained(probe_run["run"])
    assert trained.epoch == 10 and trained.class_names == probe_run["class_names"]
    wrong = misclassified(probe_run["run"], trained.class_names)
    n_wrong = 48 - sum(probe_run["confusion_matrix"][i][i] for i in range(6))
    assert len(wrong) == min(n_wrong, 24)
    for w in wrong:
        assert w["true"] != w["predicted"] == w["top3"][0][0] and len(w["top3"]) == 3


def test_resume_after_interrupt_loses_no_finished_epoch(data: SplitData, cache: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    def interrupt_after_2(record: dict) -> None:
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # Ctrl-C right after epoch 2 was saved

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(), data, out, cache_dir=cache, hooks=Hooks(on_epoch=interrupt_after_2))
    before = RunFiles(out).metrics.read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in before] == [1, 2]
    assert not RunFiles(out).result.exists() and load_run(out).resumable

    with pytest.raises(RunExistsError, match="--resume"):
        run_training(_cfg(), data, out, cache_dir=cache)
    with pytest.raises(ValueError, match="mode"):
        run_training(_cfg(mode="partial"), data, out, cache_dir=cache, resume=True)

    resumed = run_training(_cfg(), data, out, cache_dir=cache, resume=True)
    after = RunFiles(out).metrics.read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in after] == [1, 2, 3, 4]
    assert after[:2] == before  # finished epochs untouched

    # Seeds per epoch: the resumed run ends exactly where an uninterrupted one does.
    straight = run_training(_cfg(), data, tmp_path / "straight", cache_dir=cache)
    keys = ("train_loss", "accuracy", "macro_f1", "lr")
    flat = [m[k] for m in resumed["epochs"] for k in keys]
    assert flat == pytest.approx([m[k] for m in straight["epochs"] for k in keys])


def test_resume_repairs_a_log_line_lost_to_a_kill(data: SplitData, cache: Path,
                                                  tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "run"
    run_training(_cfg(epochs=3), data, out, cache_dir=cache)
    files = RunFiles(out)
    lines = files.metrics.read_text().splitlines()
    # A process killed after writing checkpoint 3 but before appending epoch 3's line
    # (and with a torn half line): the checkpoint's history restores it.
    files.metrics.write_text("\n".join(lines[:2]) + '\n{"epoch": 3, "trai')
    run_training(_cfg(epochs=3), data, out, cache_dir=cache, resume=True)
    assert files.metrics.read_text().splitlines() == lines
    # More epochs on resume continue the same run.
    res = run_training(_cfg(epochs=5), data, out, cache_dir=cache, resume=True)
    assert [m["epoch"] for m in res["epochs"]] == [1, 2, 3, 4, 5]


def test_partial_stop_mid_epoch_then_resume(data: SplitData, tmp_path: Path) -> None:
    """Real training loop (partial mode): a stop in the middle of epoch 2 keeps epoch 1; the
    frozen layers never change; only the last stage and the head do."""
    keep = [i for i, _ in enumerate(data.train_labels) if i % 20 < 6]  # 6 images per class
    small = SplitData([data.train_paths[i] for i in keep], [data.train_labels[i] for i in keep],
                      data.test_paths[::2], data.test_labels[::2], data.class_names)  # fmt: skip
    calls = {"n": 0}

    def stop_in_epoch_2() -> bool:
        calls["n"] += 1
        return calls["n"] == 5  # 36 images / batch 12 = 3 batches per epoch

    cfg = _cfg(mode="partial", epochs=2, image_size=48, batch_size=12)
    out = tmp_path / "partial"
    with pytest.raises(TrainingStopped):
        run_training(cfg, small, out, hooks=Hooks(should_stop=stop_in_epoch_2))
    first = read_jsonl(RunFiles(out).metrics)
    assert [m["epoch"] for m in first] == [1]
    res = run_training(cfg, small, out, resume=True)
    assert [m["epoch"] for m in res["epochs"]] == [1, 2]
    assert res["epochs"][0] == first[0]

    from core.vision.backbones import create_backbone

    pristine = create_backbone("efficientnet_lite0").model.trunk.state_dict()
    trained = torch.load(RunFiles(out).last, map_location="cpu", weights_only=False)["model"]
    assert torch.equal(trained["backbone.trunk.conv_stem.weight"], pristine["conv_stem.weight"])
    assert torch.equal(trained["backbone.trunk.bn1.running_mean"], pristine["bn1.running_mean"])
    for key in ("conv_head.weight", "blocks.5.0.conv_pw.weight", "bn2.running_mean"):
        assert not torch.equal(trained[f"backbone.trunk.{key}"], pristine[key]), key
