"""A partial run's index reads the activations its training stored (core.search.partial_rows):
indexing the folder the run was trained on encodes nothing, its rows are the run's own
(the tail on stored activations equals the whole model on the photo), and a new photo is
encoded once, its activations added to the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from core.data.split import split_data
from core.search.store import build_index, load_rows
from core.vision.encodings import ACTIVATIONS, OUTPUTS, EncodingStore
from core.vision.train import TrainConfig, run_training
from tests.helpers import make_intel_subset, require_shared

SIZE = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(photo folder, partial run, cache): 6 classes x (4 train + 2 test) real Intel photos,
    one epoch of a blocks.6.0 tail trained on the stored activations."""
    root = tmp_path_factory.mktemp("partial_index")
    folder = make_intel_subset(root / "photos", n_train=4, n_test=2)
    cache = root / "cache"
    cfg = TrainConfig.for_mode(
        "partial", epochs=1, image_size=SIZE, workers=0, unfreeze="blocks.6.0", members=1
    )
    data = split_data(folder / "seg_train", folder / "seg_test")
    run_training(cfg, data, root / "run", cache_dir=cache)
    return folder, root / "run", cache


def _sorted(index: Path) -> pa.Table:
    t = load_rows(index)
    return t.take(pa.compute.sort_indices(t, [("path", "ascending")]))


def test_partial_index_of_the_trained_folder_encodes_nothing(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    folder, run, cache = trained
    store = EncodingStore.at(cache)
    acts_before, outs_before = store.encoded(ACTIVATIONS), store.encoded(OUTPUTS)
    assert acts_before == 36  # 24 train + 12 test photos, each computed once in training
    stats = build_index(folder, tmp_path / "idx", run_dir=run, cache_dir=cache, workers=0)
    assert stats.encoded == 36 and not stats.skipped
    assert store.encoded(ACTIVATIONS) == acts_before and store.encoded(OUTPUTS) == outs_before
    # The rows equal the run's own model on the photos (the full pass a store miss makes).
    from core.search.encoders import create_image_encoder

    rows = _sorted(tmp_path / "idx")
    enc = create_image_encoder(run=str(run), device="cpu")
    paths = rows["path"].to_pylist()[::6]
    full = enc.encode_images([__import__("PIL.Image").Image.open(p) for p in paths])
    got = {k: np.array(rows[k].to_pylist())[::6] for k in ("vector", "probs", "top_ids")}
    np.testing.assert_allclose(got["vector"], full.features, atol=2e-3)
    np.testing.assert_allclose(got["probs"], full.probs, atol=2e-3)
    assert (got["top_ids"][:, 0] == full.top_ids[:, 0]).mean() >= 0.8
    assert rows["category"].to_pylist()[::6] == [
        enc.class_names[int(np.argmax(p))] for p in full.probs
    ]


def test_partial_index_encodes_a_new_photo_once_and_flags_a_bad_file(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    folder, run, cache = trained
    mine = tmp_path / "photos"
    shutil.copytree(folder, mine)
    have = {p.name for p in folder.glob("*/*/*.jpg")}
    sea = sorted((require_shared("intel") / "seg_train" / "sea").glob("*.jpg"))
    extra = next(p for p in sea if p.name not in have)
    shutil.copy2(extra, mine / "seg_test" / "sea" / "new.jpg")
    (mine / "seg_test" / "sea" / "bad.jpg").write_text("not an image")
    store = EncodingStore.at(cache)
    before = store.encoded(ACTIVATIONS)
    stats = build_index(mine, tmp_path / "idx", run_dir=run, cache_dir=cache, workers=0)
    assert stats.encoded == 37 and [Path(s["path"]).name for s in stats.skipped] == ["bad.jpg"]
    assert store.encoded(ACTIVATIONS) == before + 1  # the new photo only, both views
    # Its stored activations are what training would read: the frozen part of the photo.
    from core.vision.activations import cached_activations
    from core.vision.backbones import create_backbone

    bb = create_backbone("efficientnet_lite0")  # the pretrained backbone the run started from
    cpu = torch.device("cpu")
    new = [str(mine / "seg_test" / "sea" / "new.jpg")]
    acts, hit = cached_activations(bb, "blocks.6.0", new, SIZE, cache, cpu, workers=0)
    fresh, _ = cached_activations(bb, "blocks.6.0", [str(extra)], SIZE, None, cpu, workers=0)
    assert hit and np.allclose(acts, fresh, atol=1e-4)


@pytest.mark.slow
@pytest.mark.ray
def test_ray_index_of_a_partial_run_writes_its_activations_back(
    trained: tuple[Path, Path, Path], local_ray, tmp_path: Path
) -> None:
    """On an empty store the Ray actors run the frozen part once per photo and return its
    activations, which the driver stores: a local index afterwards encodes nothing, and both
    give the rows the training store gives."""
    from core.search.ray_engine import RayOptions

    folder, run, trained_cache = trained
    cache = tmp_path / "cache"
    store = EncodingStore.at(cache)
    stats = build_index(
        folder,
        tmp_path / "ray",
        run_dir=run,
        cache_dir=cache,
        engine="ray",
        batch_size=8,
        ray_options=RayOptions(workers=1),
    )
    assert stats.encoded == 36 and store.encoded(ACTIVATIONS) == 36
    local = build_index(folder, tmp_path / "local", run_dir=run, cache_dir=cache, workers=0)
    assert local.encoded == 36 and store.encoded(ACTIVATIONS) == 36
    ref = build_index(folder, tmp_path / "ref", run_dir=run, cache_dir=trained_cache, workers=0)
    assert ref.encoded == 36
    want = _sorted(tmp_path / "ref")
    for name in ("ray", "local"):
        got = _sorted(tmp_path / name)
        assert got["category"].to_pylist() == want["category"].to_pylist(), name
        for col in ("vector", "probs"):
            a, b = np.array(want[col].to_pylist()), np.array(got[col].to_pylist())
            np.testing.assert_allclose(b, a, atol=1e-4, err_msg=f"{name} {col}")
