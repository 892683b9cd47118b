"""Cached-activation fine-tuning on small real subsets: the split backbone is the backbone,
the cache holds what the frozen part computes (and its mirror image), is reused and derived,
and training on it beats the linear probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.vision.activations import (
    SplitPointError,
    cached_activations,
    split_trunk,
    trunk_units,
)
from core.vision.backbones import create_backbone
from core.vision.split import split_data
from core.vision.train import RunFiles, TrainConfig, run_training
from tests.helpers import make_intel_subset

SIZE = 64


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet_lite0")


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
    linear probe 0.875, partial (blocks.5.0 on, 4 epochs) 0.917 test accuracy, each with the
    checkpoint chosen on validation."""
    data = split_data(subset40 / "seg_train", subset40 / "seg_test")
    cache = tmp_path / "cache"
    probe = run_training(
        TrainConfig(epochs=20, image_size=96, workers=0), data, tmp_path / "lp", cache_dir=cache
    )
    cfg = TrainConfig.for_mode(
        "partial", epochs=4, image_size=96, workers=0, unfreeze="blocks.5.0", lr=1e-3
    )
    partial = run_training(cfg, data, tmp_path / "partial", cache_dir=cache)
    assert partial["selected_by"] == probe["selected_by"] == "validation"
    assert partial["accuracy"] > probe["accuracy"]
    assert partial["timings"]["activations_train_cached"] == 0.0
    # A second run (another validation share) reuses the cached activations.
    again = run_training(
        TrainConfig.for_mode(
            "partial", epochs=1, image_size=96, workers=0, unfreeze="blocks.5.0", val_fraction=0.2
        ),
        data,
        tmp_path / "again",
        cache_dir=cache,
    )
    assert again["timings"]["activations_train_cached"] == 1.0
    assert again["timings"]["activations_test_cached"] == 1.0
    # The checkpoint is a whole model: evaluating it on the photos gives the same figures.
    from core.vision.runs import load_trained, score_images
    from core.vision.split import labelled_split

    trained = load_trained(tmp_path / "partial")
    paths, labels, _ = labelled_split(subset40 / "seg_test", "test", cache)
    res, _, _ = score_images(trained, paths, labels, workers=0)
    assert res.accuracy == pytest.approx(partial["accuracy"], abs=1 / 120 + 1e-9)
    assert RunFiles(tmp_path / "partial").best.exists()
