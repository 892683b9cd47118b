"""The encoding store (core.vision.encodings): one encoding per photo, shared by training,
indexing and the audit; content-keyed, per encoder identity, safe against killed writers;
and the cache registry's CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.vision.backbones import Backbone, create_backbone
from core.vision.encodings import OUTPUTS, EncodingStore
from core.vision.features import cached_features
from tests.helpers import cli_json, make_intel_subset

SIZE = 64
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return create_backbone("efficientnet_lite0")


@pytest.fixture
def photos(intel_small: Path, tmp_path: Path) -> list[Path]:
    """Six real photos copied into a private folder (tests change them)."""
    src = sorted((intel_small / "seg_test").glob("*/*.jpg"))[::8][:6]
    out = []
    for p in src:
        dest = tmp_path / "photos" / p.parent.name / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
        out.append(dest)
    return out


def _features(bb: Backbone, paths: list[Path], cache: Path, size: int = SIZE):
    return cached_features(bb, paths, size, cache, CPU, batch_size=4, workers=0)


def test_second_call_encodes_nothing_and_a_changed_file_is_encoded_again(
    lite0: Backbone, photos: list[Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    store = EncodingStore.at(cache)
    a, hit_a = _features(lite0, photos, cache)
    assert not hit_a and store.encoded() == len(photos)
    # Another order, a subset, the same files under other names: nothing is encoded.
    copy = tmp_path / "copy.jpg"
    shutil.copy2(photos[0], copy)
    b, hit_b = _features(lite0, [copy, *photos[::-1]], cache)
    assert hit_b and store.encoded() == len(photos)
    assert np.array_equal(b[0], a[0]) and np.array_equal(b[1:], a[::-1])
    # The content changed (another photo's bytes): that file, and only it, is encoded again.
    shutil.copy2(photos[1], photos[0])  # keeps photos[1]'s mtime: the ctime still moves
    c, hit_c = _features(lite0, photos, cache)
    assert hit_c and store.encoded() == len(photos)  # photos[1]'s content was there
    assert np.array_equal(c[0], a[1])
    photos[2].write_bytes(photos[3].read_bytes()[:-100] + photos[4].read_bytes()[-100:])
    d, hit_d = _features(lite0, photos, cache)
    assert not hit_d and store.encoded() == len(photos) + 1
    assert not np.array_equal(d[2], a[2]) and np.array_equal(d[3:], a[3:])


def test_another_preprocessing_or_input_size_has_its_own_entries(
    lite0: Backbone, photos: list[Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    store = EncodingStore.at(cache)
    a, _ = _features(lite0, photos, cache)
    b, hit_b = _features(lite0, photos, cache, size=80)
    assert not hit_b and b.shape == a.shape
    cropped = dataclasses.replace(lite0, crop_pct=0.5)  # a tighter centre crop
    c, hit_c = _features(cropped, photos, cache)
    assert not hit_c and not np.allclose(c, a)
    assert len(store.identity_folders(OUTPUTS)) == 3 and store.encoded() == 3 * len(photos)
    # Each photo was encoded once per identity, never twice under one.
    assert store.passes()["max"] == 3 and store.passes()["photos"] == len(photos)


def test_a_killed_writer_and_a_damaged_shard_leave_the_store_readable(
    lite0: Backbone, photos: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    store = EncodingStore.at(cache)
    a, _ = _features(lite0, photos[:3], cache)
    b, _ = _features(lite0, photos[3:], cache)
    (folder,) = store.identity_folders()
    first, second = sorted(folder.glob("shard-*"))
    # A writer killed mid-shard leaves a hidden temporary folder (process 2**22+7: gone).
    orphan = folder / f".tmp-{2**22 + 7}-shard-x"
    shutil.copytree(first, orphan)
    (orphan / "features.npy").write_bytes(b"half")
    # A shard damaged on disk: its photos are encoded again, with a warning.
    (second / "features.npy").write_bytes((second / "features.npy").read_bytes()[:200])
    with caplog.at_level("WARNING"):
        c, hit = _features(lite0, photos, cache)
    assert not hit and "damaged encoding shard" in caplog.text
    np.testing.assert_allclose(c, np.concatenate([a, b]), atol=1e-5)
    assert not orphan.exists() and store.encoded() == len(photos) + 3
    again, hit_again = _features(lite0, photos, cache)
    assert hit_again and np.array_equal(again, c)


def test_train_index_audit_predict_encode_each_photo_once(tmp_path: Path) -> None:
    """Train a linear probe, index the folder with that run, audit it (the default
    backbone: the run's), predict its test photos: the store's counter moves only while
    training, and the answers are those of encoding the images."""
    from core.curate.audit import run_audit
    from core.data.images import load_rgb
    from core.data.split import split_data
    from core.search import build_index
    from core.search.encoders import create_image_encoder
    from core.vision.predict import predict_files, predict_images
    from core.vision.runs import load_trained
    from core.vision.train import TrainConfig, run_training

    folder = make_intel_subset(tmp_path / "photos", n_train=6, n_test=3)
    cache = tmp_path / "cache"
    store = EncodingStore.at(cache)
    data = split_data(folder / "seg_train", folder / "seg_test")
    n = len(data.train_paths) + len(data.test_paths)
    cfg = TrainConfig(mode="linear-probe", epochs=2, workers=0, tta="none")
    assert cfg.image_size == 224  # the default backbone's own size: the audit's
    run_training(cfg, data, tmp_path / "run", cache_dir=cache)
    distinct = len(set(store.hashes([*data.train_paths, *data.test_paths])))
    assert store.encoded() == distinct  # exact duplicates (the data has some) encoded once
    stats = build_index(
        folder, tmp_path / "index", run_dir=tmp_path / "run", cache_dir=cache, workers=0
    )
    assert stats.encoded == n and store.encoded() == distinct  # rows written, none decoded
    # The run's trunk is the pretrained backbone: indexing runs training's export of it
    # (and the head on its features), so no second export of the same trunk is made.
    exports = [json.loads(p.read_text())["ident"] for p in (cache / "onnx").glob("*.json")]
    assert [e["kind"] for e in exports] == ["backbone"]
    audit = run_audit(folder, cache_dir=cache)
    assert len(audit.vectors) == n and store.encoded() == distinct
    trained = load_trained(tmp_path / "run", "best", "cpu")
    some = data.test_paths[:4]
    got = predict_files(trained, some, cache)
    assert store.encoded() == distinct
    want = [predict_images(trained, [load_rgb(p)])[0] for p in some]
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label and g.imagenet_top5[0][0] == w.imagenet_top5[0][0]
        assert max(abs(g.probabilities[c] - w.probabilities[c]) for c in w.probabilities) < 1e-3
    # The index's encoder on decoded images (an upload): the run's class probabilities
    enc = create_image_encoder(run=tmp_path / "run", device="cpu")
    assert enc.inference is not None and "logits" not in enc.inference.outputs
    up = enc.encode_images([load_rgb(p) for p in some])
    assert up.probs is not None
    for row, w in zip(up.probs, want, strict=True):
        probs = dict(zip(trained.class_names, row, strict=True))
        assert max(abs(probs[c] - w.probabilities[c]) for c in w.probabilities) < 1e-3
        assert max(probs, key=probs.get) == w.label
    assert store.passes() == {"photos": distinct, "encodings": distinct, "max": 1, "mean": 1.0}


def test_index_rows_from_the_store_match_encoding_the_images(
    intel_small: Path, tmp_path: Path
) -> None:
    """Rows built from stored outputs carry the numbers a forward pass gives."""
    from core.search.encoders import create_image_encoder

    paths = sorted(str(p) for p in (intel_small / "seg_test").glob("*/*.jpg"))[:8]
    enc = create_image_encoder(image_size=SIZE, device="cpu")
    direct = enc.encode_images([Image.open(p) for p in paths])
    cache = tmp_path / "cache"
    _features(enc.backbone, [Path(p) for p in paths], cache)
    store = EncodingStore.at(cache)
    ident = enc.store_identity(enc.outputs_inference())
    hashes = store.hashes(paths)
    got = enc.from_outputs({n: store.read(ident, hashes, n) for n in ("features", "imagenet")})
    assert np.abs(got.features - direct.features).max() < 1e-4
    assert np.array_equal(got.top_ids[:, 0], direct.top_ids[:, 0])


def test_cache_cli_lists_and_clears(lite0: Backbone, photos: list[Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _features(lite0, photos, cache)
    listed = cli_json("cache", "list", "--cache", cache)
    kinds = {r["kind"]: r for r in listed["kinds"]}
    assert kinds["encodings"]["entries"] == len(photos) and kinds["encodings"]["bytes"] > 0
    (ident,) = kinds["encodings"]["identities"]
    assert ident["backbone"] == "efficientnet_lite0" and ident["image_size"] == SIZE
    assert kinds["content-hashes"]["entries"] == 1 and kinds["exports"]["entries"] > 0
    cleared = cli_json("cache", "clear", "--kind", "encodings", "--cache", cache)
    assert cleared["removed"] == {"encodings": 1}
    after = {r["kind"]: r for r in cli_json("cache", "list", "--cache", cache)["kinds"]}
    assert after["encodings"]["entries"] == 0 and after["exports"]["entries"] > 0
    everything = cli_json("cache", "clear", "--cache", cache)["removed"]
    assert everything["exports"] > 0 and not any(cache.glob("onnx/*"))


def test_content_hash_refuses_special_files_unread(tmp_path: Path) -> None:
    """The store keys photos by their bytes: /dev/zero would be hashed forever and a FIFO
    would block, so both are refused before a byte is read (issue 22)."""
    from core.vision.encodings import file_sha256

    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(OSError, match="not a regular file"):
            file_sha256(path)
