"""Cached-activation fine-tuning on small real subsets: the split backbone is the backbone,
the cache holds what the frozen part computes (and its mirror image), is reused and derived,
and training on it beats the linear probe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.split import split_data
from core.vision.activations import (
    SplitPointError,
    activation_identity,
    cached_activations,
    split_trunk,
    trunk_units,
)
from core.vision.backbones import create_backbone
from core.vision.encodings import ACTIVATIONS, EncodingStore
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
    lite0, photos: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.vision.activations as activations

    cpu = torch.device("cpu")
    store = EncodingStore.at(tmp_path)
    acts, hit = cached_activations(lite0, "blocks.6.0", photos, SIZE, tmp_path, cpu, workers=0)
    assert not hit and acts.shape[:2] == (len(photos), 2) and acts.dtype == np.float32
    assert store.encoded(ACTIVATIONS) == len(photos)
    (folder,) = store.identity_folders(ACTIVATIONS)
    assert "blocks.6.0" in folder.name and not list(folder.glob(".tmp-*"))
    # Equal to the frozen part run on the photo and on its mirror image.
    frozen, _ = split_trunk(lite0, "blocks.6.0")
    x = lite0.preprocess(False, SIZE)(__import__("PIL.Image").Image.open(photos[3]).convert("RGB"))
    with torch.inference_mode():
        a = frozen(torch.stack([x, x.flip(-1)])).numpy()
    assert np.allclose(acts[3], a, atol=1e-4)
    # Second call: from the store, nothing written; another order of the same photos too.
    again, hit = cached_activations(lite0, "blocks.6.0", photos, SIZE, tmp_path, cpu, workers=0)
    assert hit and np.array_equal(again, acts) and store.encoded(ACTIVATIONS) == len(photos)
    rev, hit = cached_activations(lite0, "blocks.6.0", photos[::-1], SIZE, tmp_path, cpu, workers=0)
    assert hit and np.array_equal(rev, acts[::-1])
    # A later split point is derived from the stored one with no photo decoded, and equals
    # a fresh run.
    fresh, _ = cached_activations(lite0, "head", photos, SIZE, None, cpu, workers=0)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a photo was decoded")

    monkeypatch.setattr(activations, "_frozen_batches", no_decoding)
    derived, hit = cached_activations(lite0, "head", photos, SIZE, tmp_path, cpu, workers=0)
    assert not hit and np.allclose(derived, fresh, atol=1e-4)
    assert store.encoded(ACTIVATIONS) == 2 * len(photos)
    monkeypatch.undo()
    # A touched photo is the same content: still served from the store.
    Path(photos[0]).touch()
    _, hit = cached_activations(lite0, "blocks.6.0", photos, SIZE, tmp_path, cpu, workers=0)
    assert hit


def test_changed_content_is_recomputed_and_new_photos_append(
    lite0, photos: list[str], tmp_path: Path
) -> None:
    """The store is keyed by the file's bytes: a photo whose content changed under the same
    path is computed again (only it), and a new photo adds entries without rewriting any."""
    cpu = torch.device("cpu")
    mine = []
    for p in photos[:4]:
        dest = tmp_path / "photos" / Path(p).name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy2(p, dest)
        mine.append(str(dest))
    cache = tmp_path / "cache"
    store = EncodingStore.at(cache)
    first, _ = cached_activations(lite0, "blocks.6.0", mine[:3], SIZE, cache, cpu, workers=0)
    (folder,) = store.identity_folders(ACTIVATIONS)
    shards = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*")}
    both, hit = cached_activations(lite0, "blocks.6.0", mine, SIZE, cache, cpu, workers=0)
    assert not hit and store.encoded(ACTIVATIONS) == 4 and np.array_equal(both[:3], first)
    assert all(folder.joinpath(n).stat().st_mtime_ns == t for n, t in shards.items())
    shutil.copy(photos[5], mine[1])  # another photo's bytes under the same name
    changed, hit = cached_activations(lite0, "blocks.6.0", mine, SIZE, cache, cpu, workers=0)
    assert not hit and store.encoded(ACTIVATIONS) == 5
    assert np.array_equal(changed[[0, 2, 3]], both[[0, 2, 3]])
    assert not np.allclose(changed[1], both[1])


def test_killed_write_leaves_the_store_readable(lite0, photos: list[str], tmp_path: Path) -> None:
    """A writer killed mid-shard leaves a hidden temporary folder (ignored, removed by the
    next writer); a damaged shard is set aside and its photos computed again."""
    cpu = torch.device("cpu")
    cache = tmp_path / "cache"
    store = EncodingStore.at(cache)
    acts, _ = cached_activations(lite0, "blocks.6.0", photos[:4], SIZE, cache, cpu, workers=0)
    (folder,) = store.identity_folders(ACTIVATIONS)
    (shard,) = folder.glob("shard-*")
    orphan = folder / ".tmp-999999999-shard-x"  # no such process: a killed writer's
    shutil.copytree(shard, orphan)
    (orphan / "acts.npy").write_bytes((orphan / "acts.npy").read_bytes()[:1000])
    again, hit = cached_activations(lite0, "blocks.6.0", photos[:4], SIZE, cache, cpu, workers=0)
    assert hit and np.array_equal(again, acts)
    (shard / "acts.npy").write_bytes((shard / "acts.npy").read_bytes()[:1000])  # torn
    fixed, hit = cached_activations(lite0, "blocks.6.0", photos[:4], SIZE, cache, cpu, workers=0)
    assert not hit and np.allclose(fixed, acts, atol=1e-6)
    assert not orphan.exists() and list(folder.glob(".damaged-shard-*"))


def test_a_large_collection_is_assembled_memory_mapped(
    lite0, photos: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above IN_MEMORY_BYTES the rows are copied into a memory-mapped file, unlinked at once:
    the collection is never held in RAM, and nothing is left in the cache folder."""
    import core.vision.activations as activations

    cpu = torch.device("cpu")
    cache = tmp_path / "cache"
    small, _ = cached_activations(lite0, "blocks.6.0", photos[:4], SIZE, cache, cpu, workers=0)
    assert not isinstance(small, np.memmap)
    monkeypatch.setattr(activations, "IN_MEMORY_BYTES", 0)
    big, hit = cached_activations(lite0, "blocks.6.0", photos[:4], SIZE, cache, cpu, workers=0)
    assert hit and isinstance(big, np.memmap) and np.array_equal(big, small)
    assert not list(cache.rglob(".view-*"))


def test_cache_cli_lists_and_clears_activations(lite0, photos: list[str], tmp_path: Path) -> None:
    from tests.helpers import cli_json

    cache = tmp_path / "cache"
    cached_activations(lite0, "blocks.6.0", photos[:3], SIZE, cache, torch.device("cpu"))
    kinds = {r["kind"]: r for r in cli_json("cache", "list", "--cache", cache)["kinds"]}
    (ident,) = kinds["activations"]["identities"]
    assert kinds["activations"]["entries"] == ident["entries"] == 3
    assert ident["split"] == "blocks.6.0" and kinds["activations"]["bytes"] > 0
    assert kinds["encodings"]["entries"] == 0  # the outputs are another kind
    cleared = cli_json("cache", "clear", "--kind", "activations", "--cache", cache)
    assert cleared["removed"] == {"activations": 1}
    after = {r["kind"]: r for r in cli_json("cache", "list", "--cache", cache)["kinds"]}
    assert after["activations"]["entries"] == 0
    assert EncodingStore.at(cache).missing(
        activation_identity(lite0, SIZE, "blocks.6.0"), ["x"], ACTIVATIONS
    ) == [0]


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
