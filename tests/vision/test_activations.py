"""Cached-activation fine-tuning on small real subsets: the split backbone is the backbone,
the cache holds what the frozen part computes (and its mirror image), is reused and derived,
and training on it beats the linear probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.split import split_data
from core.vision.activations import (
    SplitPointError,
    cached_activations,
    split_trunk,
    trunk_units,
)
from core.vision.backbones import create_backbone
from core.vision.train import RunFiles, TrainConfig, run_training
from tests.helpers import make_intel_subset

SIZE = 64


@pytest.fixture(scope="module")
def photos(intel_small: Path) -> list[str]:
    return [str(p) for p in sorted((intel_small / "seg_test").glob("*/*.jpg"))[::4]]  # 12


def test_the_split_backbone_is_the_backbone(lite0) -> None:
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        whole = lite0.model.trunk(x)
        for point in ("blocks.4.0", "blocks.5.0", "blocks.6.0", "head"):
            frozen, tail = split_trunk(lite0, point)
            assert torch.allclose(tail(frozen(x)), whole, atol=1e-5), point
    names = [n for n, _ in trunk_units(lite0)]
    assert names[0] == "stem" and names[-1] == "head" and "blocks.5.3" in names
    with pytest.raises(SplitPointError, match=r"blocks\.5\.0"):
        split_trunk(lite0, "blocks.9.9")
    resnet = create_backbone("resnet50", None)
    with torch.inference_mode():
        frozen, tail = split_trunk(resnet, "layer4.0")
        assert torch.allclose(tail(frozen(x)), resnet.model.trunk(x), atol=1e-4)


def test_cache_holds_photo_and_mirror_and_is_reused(
    lite0, photos: list[str], tmp_path: Path
) -> None:
    cpu = torch.device("cpu")
    acts, hit = cached_activations(lite0, "blocks.6.0", photos, SIZE, tmp_path, cpu, workers=0)
    assert not hit and acts.shape[:2] == (len(photos), 2) and acts.dtype == np.float32
    files = list((tmp_path / "activations").glob("*.npy"))
    assert len(files) == 1 and not list((tmp_path / "activations").glob(".*tmp"))
    # Equal to the frozen part run on the photo and on its mirror image.
    frozen, _ = split_trunk(lite0, "blocks.6.0")
    x = lite0.preprocess(False, SIZE)(__import__("PIL.Image").Image.open(photos[3]).convert("RGB"))
    with torch.inference_mode():
        a = frozen(torch.stack([x, x.flip(-1)])).numpy()
    assert np.allclose(acts[3], a, atol=1e-4)
    # Second call: from the cache, unchanged file; another order of the same photos too.
    stamp = files[0].stat().st_mtime_ns
    again, hit = cached_activations(lite0, "blocks.6.0", photos, SIZE, tmp_path, cpu, workers=0)
    assert hit and np.array_equal(again, acts) and files[0].stat().st_mtime_ns == stamp
    rev, hit = cached_activations(lite0, "blocks.6.0", photos[::-1], SIZE, tmp_path, cpu, workers=0)
    assert hit and np.array_equal(rev, acts[::-1])
    # A later split point is derived from this cache (no photo decoded) and equals a fresh run.
    derived, hit = cached_activations(lite0, "head", photos, SIZE, tmp_path, cpu, workers=0)
    fresh, _ = cached_activations(lite0, "head", photos, SIZE, None, cpu, workers=0)
    assert not hit and np.allclose(derived, fresh, atol=1e-4)
    # A touched photo is a different key: recomputed, never served stale.
    Path(photos[0]).touch()
    _, hit = cached_activations(lite0, "blocks.6.0", photos, SIZE, tmp_path, cpu, workers=0)
    assert not hit


@pytest.fixture(scope="module")
def subset40(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_intel_subset(tmp_path_factory.mktemp("intel40"), n_train=40, n_test=20)


@pytest.mark.slow
def test_cached_activation_training_beats_the_linear_probe(subset40: Path, tmp_path: Path) -> None:
    """40 photos per class (36 train, 4 validation), 120 test photos, 96 px. Measured here:
    linear probe 0.875, partial (one tail from blocks.5.0 on, 4 epochs) 0.917 test accuracy,
    each with the checkpoint chosen on validation."""
    data = split_data(subset40 / "seg_train", subset40 / "seg_test")
    cache = tmp_path / "cache"
    probe = run_training(
        TrainConfig(epochs=20, image_size=96, workers=0), data, tmp_path / "lp", cache_dir=cache
    )
    cfg = TrainConfig.for_mode(
        "partial", epochs=4, image_size=96, workers=0, unfreeze="blocks.5.0", lr=1e-3, members=1
    )
    partial = run_training(cfg, data, tmp_path / "partial", cache_dir=cache)
    assert partial["selected_by"] == probe["selected_by"] == "validation"
    assert partial["accuracy"] > probe["accuracy"]
    assert partial["timings"]["activations_train_cached"] == 0.0
    # A second run (another validation share) reuses the cached activations.
    again = run_training(
        TrainConfig.for_mode(
            "partial",
            epochs=1,
            image_size=96,
            workers=0,
            unfreeze="blocks.5.0",
            val_fraction=0.2,
            members=1,
        ),
        data,
        tmp_path / "again",
        cache_dir=cache,
    )
    assert again["timings"]["activations_train_cached"] == 1.0
    assert again["timings"]["activations_test_cached"] == 1.0
    # The checkpoint is a whole model: evaluating it on the photos gives the same figures.
    from core.data.split import labelled_split
    from core.vision.runs import load_trained, score_images

    trained = load_trained(tmp_path / "partial")
    paths, labels, _ = labelled_split(subset40 / "seg_test", "test", cache)
    res, _, _ = score_images(trained, paths, labels, workers=0)
    assert res.accuracy == pytest.approx(partial["accuracy"], abs=1 / 120 + 1e-9)
    assert RunFiles(tmp_path / "partial").best.exists()


def test_mirror_choice_follows_validation_only() -> None:
    """ "auto" takes the mirror average when it is more accurate on validation; "none" never
    averages; "mirror" always does. Only validation logits enter the choice."""
    from core.vision.train import EpochOutput, choose_tta, mirror_average

    y = [0, 1, 0, 1]
    plain = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.1], [2.0, 0.0]])  # 2/4 right
    mirror = np.array([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 3.0]])  # averaged: 4/4
    out = EpochOutput(0.1, 0.9, plain, mirror)
    rec, chosen = choose_tta("auto", out, y)
    assert rec == {"tta": "mirror", "val_accuracy_plain": 0.5, "val_accuracy_mirror": 1.0}
    assert np.allclose(chosen.val_logits, mirror_average(plain, mirror))
    # The average is of probabilities: exp(chosen) sums to one per row.
    assert np.allclose(np.exp(chosen.val_logits).sum(1), 1.0, atol=1e-6)
    # Validation says no (mirror worse there): plain.
    out_worse = EpochOutput(0.1, 0.9, mirror, plain)
    rec, chosen = choose_tta("auto", out_worse, [0, 1, 1, 0])
    assert rec["tta"] == "none" and chosen.val_logits is mirror
    assert choose_tta("none", out, y)[0] == {"tta": "none"}
    assert choose_tta("mirror", out_worse, [0, 1, 1, 0])[0]["tta"] == "mirror"
    assert choose_tta("auto", EpochOutput(0.1, 0.9, plain), y)[0] == {"tta": "none"}
    with pytest.raises(ValueError, match="--tta mirror needs --mode partial"):
        TrainConfig(mode="linear-probe", tta="mirror")
    with pytest.raises(ValueError, match="--tta must be one of"):
        TrainConfig.for_mode("partial", tta="flip")


@pytest.mark.slow
def test_mirror_averaged_ensemble_predicts_and_scores_as_trained(
    subset40: Path, tmp_path: Path
) -> None:
    """A partial run of two tails on one frozen trunk that predicts with the mirror average:
    its result says so, its checkpoint loads as the same ensemble, and evaluate/predict on the
    photos give the figures training reported (training read both copies of every image from
    the activation cache; evaluate and predict run the whole network on the photos)."""
    from PIL import Image

    from core.data.split import labelled_split
    from core.vision.predict import predict_images
    from core.vision.runs import load_trained, score_images
    from core.vision.train import mirror_average

    data = split_data(subset40 / "seg_train", subset40 / "seg_test")
    cfg = TrainConfig.for_mode(
        "partial",
        epochs=2,
        image_size=96,
        workers=0,
        unfreeze="blocks.6.0",
        tta="mirror",
        members=2,
    )
    res = run_training(cfg, data, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert res["tta"] == "mirror" and res["members"] == 2
    best = next(r for r in res["epochs"] if r["epoch"] == res["best_epoch"])
    assert best["tta"] == "mirror" and {"val_accuracy_plain", "val_accuracy_mirror"} <= set(best)
    assert not {"accuracy", "accuracy_plain", "accuracy_mirror"} & set(best)  # validation only
    trained = load_trained(tmp_path / "run")
    assert trained.tta == "mirror" and trained.model.members == 2
    # The members were trained apart: their heads differ.
    assert not torch.equal(trained.model.head.weight, trained.model.extra[0][1].weight)
    paths, labels, _ = labelled_split(subset40 / "seg_test", "test", tmp_path / "cache")
    scored, logits, _ = score_images(trained, paths, labels, workers=0)
    assert scored.accuracy == pytest.approx(res["accuracy"], abs=1 / 120 + 1e-9)
    # predict averages the photo's and the mirror image's probabilities too.
    images = [Image.open(p).convert("RGB") for p in paths[:3]]
    preds = predict_images(trained, images)
    x = torch.stack([trained.backbone.preprocess(False, 96)(im) for im in images])
    with torch.inference_mode():
        a = trained.model(x).numpy()
        b = trained.model(x.flip(-1)).numpy()
    want = np.exp(mirror_average(a, b))
    got = np.array([[p.probabilities[c] for c in trained.class_names] for p in preds])
    assert np.allclose(got, want, atol=2e-3)
    assert np.allclose(np.exp(logits[:3]), want, atol=2e-3)
