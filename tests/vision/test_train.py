"""Training on a tiny real subset: beats chance, follows the recipe, chooses its checkpoint on
validation, resumes without losing a finished epoch (interrupted after an epoch, mid-epoch,
and killed before its log line), and loads checkpoints without running code from them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from core.data.split import SplitData, split_data
from core.io import read_jsonl
from core.vision.runs import load_run, load_trained, misclassified, scores_of
from core.vision.train import (
    Hooks,
    RunExistsError,
    RunFiles,
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


def _six_per_class(data: SplitData, test_step: int) -> SplitData:
    """6 training images per class (of 20) and every `test_step`-th test image."""
    keep = [i for i, _ in enumerate(data.train_labels) if i % 20 < 6]
    return SplitData(
        [data.train_paths[i] for i in keep],
        [data.train_labels[i] for i in keep],
        data.test_paths[::test_step],
        data.test_labels[::test_step],
        data.class_names,
    )


def _cfg(**kw) -> TrainConfig:
    base = dict(mode="linear-probe", epochs=4, image_size=96, workers=0, step_size=2)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def probe_run(data: SplitData, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("runs") / "probe"
    return run_training(_cfg(epochs=10, step_size=5), data, out, cache_dir=cache)


def test_linear_probe_beats_chance_and_writes_a_run(probe_run: dict) -> None:
    assert probe_run["accuracy"] >= MIN_ACCURACY > 3 * CHANCE - 0.01
    # 10% of each class's 20 images held out for validation.
    assert probe_run["n_test"] == 48 and probe_run["n_train"] == 108 and probe_run["n_val"] == 12
    assert probe_run["selected_by"] == "validation" and "val_accuracy" in probe_run
    run = RunFiles(Path(probe_run["run"]))
    for f in (run.config, run.metrics, run.last, run.best, run.eval, run.result):
        assert f.exists(), f
    metrics = read_jsonl(run.metrics)
    assert [m["epoch"] for m in metrics] == list(range(1, 11))
    for m in metrics:
        for key in (
            "train_loss",
            "train_accuracy",
            "val_accuracy",
            "val_loss",
            "val_macro_f1",
            "lr",
            "seconds",
        ):
            assert key in m
    cfg = TrainConfig.from_dict(json.loads(run.config.read_text()))
    assert [m["lr"] for m in metrics] == pytest.approx([lr_at(cfg, e) for e in range(1, 11)])
    assert metrics[0]["lr"] == pytest.approx(1e-3) and metrics[5]["lr"] == pytest.approx(1e-4)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert any("no flip/rotation" in n for n in cfg.notes)
    # Tensors and plain values only: loads with weights_only=True.
    ckpt = torch.load(run.last, map_location="cpu", weights_only=True)
    assert {
        "model",
        "optimizer",
        "lr_scheduler",
        "scaler",
        "epoch",
        "config_json",
        "class_names",
        "history_json",
    } <= set(ckpt)
    assert ckpt["epoch"] == 10
    # The result scores the checkpoint with the best validation accuracy (ties: lower loss).
    best = max(metrics, key=lambda m: (m["val_accuracy"], -m["val_loss"]))
    assert probe_run["best_epoch"] == best["epoch"] == probe_run["evaluated_epoch"]
    assert torch.load(run.best, weights_only=True)["epoch"] == best["epoch"]
    assert probe_run["best_accuracy"] == probe_run["accuracy"]
    assert probe_run["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert sum(map(sum, probe_run["confusion_matrix"])) == 48


def test_saved_run_reloads_and_reports_misclassified(probe_run: dict) -> None:
    info = load_run(probe_run["run"])
    assert info.finished and not info.resumable and info.selected_by == "validation"
    trained = load_trained(probe_run["run"], "last")
    assert trained.epoch == 10 and trained.class_names == probe_run["class_names"]
    assert load_trained(probe_run["run"]).epoch == probe_run["best_epoch"]  # default: best
    wrong = misclassified(probe_run["run"], trained.class_names)
    n_wrong = 48 - sum(probe_run["confusion_matrix"][i][i] for i in range(6))
    assert len(wrong) == min(n_wrong, 24)
    for w in wrong:
        assert w["true"] != w["predicted"] == w["top3"][0][0] and len(w["top3"]) == 3
    # The saved result's scores are the ones training returned (the CLI and the page show them).
    assert info.scores.accuracy == probe_run["accuracy"]
    assert info.scores.report() == scores_of(probe_run).report()
    assert info.scores.confusion_matrix == probe_run["confusion_matrix"]
    assert info.row()["state"] == "finished" and info.row()["epochs"] == "10/10"


def test_resume_after_interrupt_loses_no_finished_epoch(
    data: SplitData, cache: Path, tmp_path: Path
) -> None:
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
    keys = ("train_loss", "val_accuracy", "val_loss", "lr")
    flat = [m[k] for m in resumed["epochs"] for k in keys]
    assert flat == pytest.approx([m[k] for m in straight["epochs"] for k in keys])


def test_resume_repairs_a_log_line_lost_to_a_kill(
    data: SplitData, cache: Path, tmp_path: Path
) -> None:
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
    """Cached-activation training (partial mode): a stop in the middle of epoch 2 keeps epoch
    1; the frozen layers never change; only the unfrozen blocks and the head do."""
    small = _six_per_class(data, test_step=2)
    state = {"epochs": 0, "batches": 0}

    def stop_in_epoch_2() -> bool:
        if state["epochs"] == 1:
            state["batches"] += 1
        return state["batches"] == 2  # the second batch of epoch 2

    def count(record: dict) -> None:
        state["epochs"] += 1

    cfg = _cfg(
        mode="partial", epochs=2, image_size=48, batch_size=12, unfreeze="blocks.5.0", lr=1e-3
    )
    out = tmp_path / "partial"
    with pytest.raises(TrainingStopped):
        run_training(cfg, small, out, hooks=Hooks(on_epoch=count, should_stop=stop_in_epoch_2))
    first = read_jsonl(RunFiles(out).metrics)
    assert [m["epoch"] for m in first] == [1]
    res = run_training(cfg, small, out, resume=True)
    assert [m["epoch"] for m in res["epochs"]] == [1, 2]
    assert res["epochs"][0] == first[0]
    # The same two epochs uninterrupted end in the same place (seeded per epoch).
    straight = run_training(cfg, small, tmp_path / "straight")
    assert [m["train_loss"] for m in straight["epochs"]] == pytest.approx(
        [m["train_loss"] for m in res["epochs"]]
    )

    from core.vision.backbones import create_backbone

    pristine = create_backbone("efficientnet_lite0").model.trunk.state_dict()
    trained = torch.load(RunFiles(out).last, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(trained["backbone.trunk.conv_stem.weight"], pristine["conv_stem.weight"])
    assert torch.equal(trained["backbone.trunk.bn1.running_mean"], pristine["bn1.running_mean"])
    assert torch.equal(
        trained["backbone.trunk.blocks.4.2.conv_pw.weight"], pristine["blocks.4.2.conv_pw.weight"]
    )
    for key in ("conv_head.weight", "blocks.5.0.conv_pw.weight", "bn2.running_mean"):
        assert not torch.equal(trained[f"backbone.trunk.{key}"], pristine[key]), key


# --- validation split and model selection ------------------------------------------------------


def test_test_or_validation_classes_the_training_lacks_are_refused() -> None:
    from core.data.dataset import DatasetError
    from core.data.split import labelled_data

    train = (["a.jpg", "b.jpg"], ["sea", "forest"])
    data = labelled_data(train, (["c.jpg"], ["sea"]), (["d.jpg"], ["forest"]), "T", "V")
    assert data.class_names == ["forest", "sea"] and data.train_labels == [1, 0]
    assert (data.test_labels, data.val_labels, data.val_source) == ([1], [0], "V")
    with pytest.raises(DatasetError, match=r"^T: classes not in the training data: \['street'\]"):
        labelled_data(train, (["c.jpg", "e.jpg"], ["sea", "street"]), None, "T")
    with pytest.raises(DatasetError, match=r"^V: classes not in the training data: \['glacier'\]"):
        labelled_data(train, (["c.jpg"], ["sea"]), (["d.jpg"], ["glacier"]), "T", "V")


def test_validation_split_is_deterministic_and_stratified(data: SplitData) -> None:
    from core.data.split import stratified_split

    paths, labels = data.train_paths, data.train_labels
    tr, va = stratified_split(paths, labels, 0.25, seed=3)
    assert sorted([*tr, *va]) == list(range(len(paths))) and not set(tr) & set(va)
    per_class = [sum(labels[i] == c for i in va) for c in range(6)]
    assert per_class == [5] * 6  # 25% of 20 per class
    _, va2 = stratified_split(paths, labels, 0.25, seed=3)
    assert list(va2) == list(va)
    # The listing order does not matter: the same files are held out.
    rev = list(reversed(range(len(paths))))
    _, va_rev = stratified_split([paths[i] for i in rev], [labels[i] for i in rev], 0.25, 3)
    assert sorted(paths[rev[i]] for i in va_rev) == sorted(paths[i] for i in va)
    _, other = stratified_split(paths, labels, 0.25, seed=4)
    assert list(other) != list(va)
    with pytest.raises(ValueError, match="between 0 and 1"):
        stratified_split(paths, labels, 1.5, 0)


def test_a_val_folder_is_used_when_present(intel_small: Path, tmp_path: Path, cache: Path) -> None:
    import shutil

    root = tmp_path / "intel"
    shutil.copytree(intel_small / "seg_train", root / "seg_train")
    shutil.copytree(intel_small / "seg_test", root / "seg_test")
    for class_dir in sorted((root / "seg_train").iterdir()):  # move 3 per class to seg_val
        for f in sorted(class_dir.glob("*.jpg"))[:3]:
            (root / "seg_val" / class_dir.name).mkdir(parents=True, exist_ok=True)
            f.rename(root / "seg_val" / class_dir.name / f.name)
    split = split_data(root / "seg_train", root / "seg_test")
    assert len(split.val_paths) == 18 and len(split.train_paths) == 102
    assert split.val_source.endswith("seg_val")
    # The Train page's split (the data set's manifest) holds the same images and labels.
    from core.data.dataset import find_dataset
    from core.data.manifest import build_manifest
    from core.data.split import manifest_split

    page = manifest_split(build_manifest(find_dataset(root), cache))
    assert page.val_source == "the data set's val/ folder"
    assert dataclasses.replace(page, val_source=split.val_source) == split
    res = run_training(_cfg(epochs=2), split, tmp_path / "run", cache_dir=cache)
    assert res["n_val"] == 18 and res["n_train"] == 102 and "folder" in res["validation"]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_best_checkpoint_is_chosen_on_validation_not_test(
    data: SplitData, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epoch 1 is right on validation and wrong on test; epoch 2 the reverse. The run keeps
    epoch 1 and reports its test score."""
    import numpy as np

    from core.data.split import make_partition
    from core.vision import train as tr

    part = make_partition(data.train_paths, data.train_labels, [], [], 0.1, 0)
    val_y, test_y = np.asarray(part.val_labels), np.asarray(data.test_labels)

    def scripted(ctx):
        def onehot(y: np.ndarray, right: bool) -> np.ndarray:
            out = np.zeros((len(y), 6), dtype=np.float32)
            out[np.arange(len(y)), y if right else (y + 1) % 6] = 5.0
            return out

        def step(epoch, criterion, optimizer):
            return tr.EpochOutput(1.0 / epoch, 0.5, onehot(val_y, epoch == 1))

        def test(record):  # the test set is scored once, for the chosen epoch
            scored.append(record["epoch"])
            feats = np.zeros((len(test_y), 4), dtype=np.float32)
            return onehot(test_y, record["epoch"] != 1), feats

        return tr.Strategy(step, test)

    scored: list[int] = []
    monkeypatch.setitem(tr.STRATEGIES, "linear-probe", scripted)
    res = run_training(_cfg(epochs=2), data, tmp_path / "run", cache_dir=cache)
    assert [m["val_accuracy"] for m in res["epochs"]] == [1.0, 0.0]
    assert scored == [1]
    assert res["best_epoch"] == 1 and res["evaluated_epoch"] == 1
    assert res["accuracy"] == 0.0 and res["val_accuracy"] == 1.0  # test reports, never chooses
    assert torch.load(RunFiles(tmp_path / "run").best, weights_only=True)["epoch"] == 1


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_early_stopping_watches_validation(
    data: SplitData, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from core.vision import train as tr

    n_val = 12

    def scripted(ctx):
        def step(epoch, criterion, optimizer):
            val = np.zeros((n_val, 6), dtype=np.float32)  # never improves after epoch 1
            return tr.EpochOutput(1.0, 0.5, val)

        def test(record):
            return np.zeros((48, 6), dtype=np.float32), np.zeros((48, 2), dtype=np.float32)

        return tr.Strategy(step, test)

    monkeypatch.setitem(tr.STRATEGIES, "linear-probe", scripted)
    res = run_training(_cfg(epochs=10, patience=2), data, tmp_path / "run", cache_dir=cache)
    assert res["epochs_done"] == 3 and res["stopped_early"]
    assert "validation" in res["stop_reason"]


# --- checkpoints are data, never code ----------------------------------------------------------


class _Payload:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_holding_a_python_object_is_refused(probe_run: dict, tmp_path: Path) -> None:
    from core.vision.train import CheckpointError, load_checkpoint

    src = RunFiles(Path(probe_run["run"]))
    marker = tmp_path / "code-ran"
    ckpt = torch.load(src.last, map_location="cpu", weights_only=True)
    ckpt["config"] = _Payload(str(marker))  # what a hostile run folder would ship
    bad = tmp_path / "hostile"
    bad.mkdir()
    for f in (src.config, src.metrics, src.result, src.eval):
        (bad / f.name).write_bytes(f.read_bytes())
    torch.save(ckpt, bad / "checkpoint_last.pt")
    torch.save(ckpt, bad / "checkpoint_best.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(bad / "checkpoint_last.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_trained(bad)
    assert not marker.exists()


def test_truncated_foreign_and_old_checkpoints(probe_run: dict, tmp_path: Path) -> None:
    from core.vision.train import CheckpointError, load_checkpoint

    good = RunFiles(Path(probe_run["run"])).last
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(text)
    state_dict = tmp_path / "weights.pt"  # a plain state dict is not a run checkpoint
    torch.save({"conv.weight": torch.zeros(2)}, state_dict)
    with pytest.raises(CheckpointError, match="not a SceneSeek run checkpoint"):
        load_checkpoint(state_dict)
    # A checkpoint of the previous format (config and history as dicts) loads when it holds
    # plain values only.
    ckpt = torch.load(good, weights_only=True)
    old = {k: v for k, v in ckpt.items() if k not in ("config_json", "history_json", "format")}
    old["config"] = json.loads(ckpt["config_json"])
    old["history"] = json.loads(ckpt["history_json"])
    torch.save(old, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded["format"] == 1 and loaded["config"]["mode"] == "linear-probe"


def test_failed_resume_changes_nothing(data: SplitData, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_training(_cfg(epochs=2), data, out, cache_dir=cache)
    files = RunFiles(out)
    before = {f: f.read_bytes() for f in (files.config, files.metrics, files.last)}
    fewer = SplitData(
        data.train_paths[1:],
        data.train_labels[1:],
        data.test_paths,
        data.test_labels,
        data.class_names,
    )
    with pytest.raises(ValueError, match="different data"):
        run_training(_cfg(epochs=3), fewer, out, cache_dir=cache, resume=True)
    with pytest.raises(ValueError, match="image_size"):
        run_training(_cfg(epochs=3, image_size=64), data, out, cache_dir=cache, resume=True)
    assert {f: f.read_bytes() for f in before} == before


def test_out_of_range_settings_are_refused() -> None:
    for bad, match in (
        (dict(image_size=0), "--image-size"),
        (dict(epochs=0), "--epochs"),
        (dict(val_fraction=0.0), "--val-fraction"),
        (dict(lr=-1.0), "--lr"),
        (dict(patience=0), "--patience"),
        (dict(schedule="zigzag"), "--schedule"),
        (dict(label_smoothing=1.0), "--label-smoothing"),
    ):
        with pytest.raises(ValueError, match=match):
            _cfg(**bad)


def test_fine_tune_validates_and_resumes_with_its_optimizer(
    data: SplitData, tmp_path: Path
) -> None:
    """Every layer trained on images (tiny: 6 photos a class, 32 px); the checkpoint carries
    what a resume needs."""
    small = _six_per_class(data, test_step=4)
    cfg = _cfg(mode="fine-tune", epochs=1, image_size=32, batch_size=12, val_fraction=0.2)
    res = run_training(cfg, small, tmp_path / "ft")
    assert res["n_val"] == 6 and res["selected_by"] == "validation"
    ckpt = torch.load(RunFiles(tmp_path / "ft").last, weights_only=True)
    assert ckpt["optimizer"]["state"] and ckpt["lr_scheduler"]["last_epoch"] == 1
    more = run_training(
        _cfg(mode="fine-tune", epochs=2, image_size=32, batch_size=12, val_fraction=0.2),
        small,
        tmp_path / "ft",
        resume=True,
    )
    assert [m["epoch"] for m in more["epochs"]] == [1, 2]


# --- epochs see validation only ------------------------------------------------------------------

# Every figure of the test set a record could carry (plain, mirror-averaged, macro scores).
TEST_KEYS = {
    "accuracy",
    "test_loss",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "accuracy_plain",
    "accuracy_mirror",
}


def test_epochs_see_validation_only(data: SplitData, cache: Path, tmp_path: Path) -> None:
    """No epoch scores the test set: the records (returned, metrics.jsonl, the checkpoint's
    history) hold training and validation figures only; the test set is scored once, for the
    validation-chosen checkpoint, after training, and that figure is what the saved model
    scores on the test images now."""
    import numpy as np

    from core.vision.runs import score_images

    out = tmp_path / "run"
    res = run_training(_cfg(epochs=3), data, out, cache_dir=cache)
    files = RunFiles(out)
    history = torch.load(files.last, weights_only=True)["history_json"]
    for records in (res["epochs"], read_jsonl(files.metrics), json.loads(history)):
        assert [r["epoch"] for r in records] == [1, 2, 3]
        for r in records:
            assert "val_accuracy" in r and "val_loss" in r
            assert not TEST_KEYS & set(r), sorted(TEST_KEYS & set(r))
    ev = np.load(files.eval)
    assert int(ev["epoch"]) == res["best_epoch"] == res["evaluated_epoch"]
    assert res["accuracy"] == pytest.approx(float((ev["logits"].argmax(1) == ev["labels"]).mean()))
    names = data.class_names
    scored, _, _ = score_images(
        load_trained(out), data.test_paths, [names[y] for y in data.test_labels], workers=0
    )
    assert scored.accuracy == pytest.approx(res["accuracy"], abs=1e-9)
