"""`--encoder clip`: the whole code path with randomly initialised weights (shapes, index,
query, evaluation), and the clear errors when weights cannot be had. Random weights find
nothing, so these tests check plumbing, never retrieval quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.resources import queries_csv
from core.search import clip
from core.search.encoders import create_image_encoder, create_text_encoder
from core.search.store import load_rows
from tests.helpers import cli_json, flickr_subset, index_json, run_cli

TINY = "sceneseek-tiny-clip"  # ViT-B-32's layout at toy size: a test of the path, in seconds
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    import open_clip

    folder = tmp_path_factory.mktemp("clip_config")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder)
    return TINY


def _images(intel_small: Path, n: int = 4):
    from PIL import Image

    files = sorted((intel_small / "seg_test" / "sea").glob("*.jpg"))[:n]
    return [Image.open(f).convert("RGB") for f in files]


def test_random_clip_encodes_images_and_text_into_one_space(tiny: str, intel_small: Path) -> None:
    enc = create_image_encoder(backbone=f"clip:{tiny}", weights=clip.RANDOM, device="cpu")
    assert enc.feature_dim == enc.semantic_dim == 32 and enc.class_names == []
    e = enc.encode_images(_images(intel_small))
    assert e.features.shape == e.semantic.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(e.semantic, axis=1), 1, atol=1e-5)
    assert e.top_ids.shape == e.top_probs.shape == (4, clip.TOP_K_LABELS)
    assert ((e.top_ids >= 0) & (e.top_ids < 1000)).all()
    # zero-shot: the ImageNet labels whose "a photo of a {label}" embeddings are nearest
    near = e.semantic @ enc.clip.label_embeddings(enc.imagenet_classes).T
    np.testing.assert_array_equal(e.top_ids, np.argsort(-near, axis=1)[:, : clip.TOP_K_LABELS])
    assert (np.diff(e.top_probs, axis=1) <= 1e-7).all() and (e.top_probs.sum(1) <= 1 + 1e-5).all()
    text = clip.ClipText(enc.clip)
    t = text.encode(["a sandy beach", "snow on a mountain"])
    assert t.shape == (2, 32) and text.encode([]).shape == (0, 32)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    # seeded: a second process (the query side) builds the same random model
    again = create_image_encoder(enc.spec()).encode_images(_images(intel_small))
    np.testing.assert_allclose(again.semantic, e.semantic, atol=1e-5)
    assert enc.identity()["backbone"] == f"clip:{tiny}" and enc.identity()["weights"] == "random"
    spec = enc.spec("cpu")
    assert create_image_encoder(spec).identity() == enc.identity()


def test_weights_that_cannot_be_had_give_one_clear_error(tiny: str, tmp_path: Path) -> None:
    with pytest.raises(
        clip.ClipWeightsError, match=r"no such CLIP weights file.*efficientnet_lite0"
    ):
        clip.load_clip("ViT-B-32", str(tmp_path / "missing.bin"))
    with pytest.raises(clip.ClipWeightsError, match="unknown CLIP weights 'nope'"):
        clip.load_clip("ViT-B-32", "nope")
    with pytest.raises(clip.ClipWeightsError, match="unknown CLIP model"):
        clip.load_clip("ViT-Q-99")
    bad = tmp_path / "garbage.bin"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(
        clip.ClipWeightsError, match=r"(could not be loaded|refused).*efficientnet_lite0"
    ):
        clip.load_clip(tiny, str(bad))


@pytest.mark.slow
def test_offline_without_cached_weights_names_the_offline_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(clip.ClipWeightsError) as err:
        clip.load_clip("ViT-B-32")
    msg = str(err.value)
    assert "laion2b_s34b_b79k" in msg and "offline" in msg and "efficientnet_lite0" in msg
    assert "\n" not in msg


@pytest.mark.slow
def test_clip_index_search_and_evaluation_end_to_end(
    tiny: str, intel_small: Path, tmp_path: Path
) -> None:
    index = tmp_path / "idx"
    images, captions = flickr_subset(tmp_path / "flickr", n=12)
    clip_args = ("--encoder", "clip", "--clip-model", tiny, "--clip-weights", "random")
    d = index_json(intel_small, index, *clip_args)
    assert d["rows"] == 168
    # an update keeps the encoder without being told again
    index_json(images, index, "--captions", captions)
    meta = json.loads((index / "index.json").read_text())
    assert meta["encoder"]["backbone"] == f"clip:{tiny}"
    assert meta["semantic"]["source"] == "encoder" and meta["semantic"]["dim"] == 32
    other = ("--backbone", "efficientnet_lite0", "--encoder", "efficientnet_lite0")
    r = run_cli("index", "--images", images, "--index", index, "--workers", 0, *other)
    assert r.exit_code != 0 and "clip" in r.output
    d = cli_json("search", "--index", index, "waves on a beach", "--k", 5, "--mode", "semantic")
    res = d["results"]
    assert len(res) == 5 and all(-1.0 <= x["score"] <= 1.0 for x in res)
    # the scores are the top cosines of CLIP's text vector with the stored image vectors
    query = create_text_encoder(meta, "cpu").encode(["waves on a beach"])[0]
    cosines = np.sort(np.array(load_rows(index, ["semantic"])["semantic"].to_pylist()) @ query)
    np.testing.assert_allclose([x["score"] for x in res], cosines[::-1][:5], atol=1e-4)
    ev = cli_json(
        "evaluate-retrieval", "--index", index, "--captions", captions, "--modes", "semantic"
    )
    assert ev["pool"] == 180 and ev["pool_kind"] == "all" and ev["n_queries"] == 60
    m = ev["modes"]["semantic"]
    assert {"R@1", "R@5", "R@10", "median_rank", "MRR"} <= set(m)
    ev = cli_json(
        "evaluate-retrieval", "--index", index, "--queries", queries_csv(), "--modes", "semantic"
    )
    assert ev["pool"] == 48


def _save_random(tiny: str, dest: Path) -> tuple[Path, clip.ClipModel]:
    """A tiny CLIP with weights of its own (the seeded random ones, shifted) written as an
    open_clip checkpoint, and the model."""
    import torch

    model = clip.load_clip(tiny, clip.RANDOM, "cpu")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.model.state_dict(), dest)
    return dest, model


@pytest.mark.slow
def test_weights_from_a_file_the_user_names(
    tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--clip-weights FILE`: the index is built with the file's weights, and a query from
    another working folder finds the same file (the index records its absolute path)."""
    weights, model = _save_random(tiny, tmp_path / "w" / "tiny.pt")
    enc = create_image_encoder(backbone=f"clip:{tiny}", weights=str(weights), device="cpu")
    assert enc.clip.weights.startswith("file:tiny.pt:")
    want = model.encode_text(["a sandy beach"])
    np.testing.assert_allclose(enc.clip.encode_text(["a sandy beach"]), want, atol=1e-5)
    seeded = clip.load_clip(tiny, clip.RANDOM, "cpu").encode_text(["a sandy beach"])
    assert not np.allclose(seeded, want, atol=1e-3)  # the file's weights, not the seeded ones
    index = tmp_path / "idx"
    images, _ = flickr_subset(tmp_path / "flickr", n=4)
    with monkeypatch.context() as m:  # a relative weights path, as a user types it
        m.chdir(weights.parent)
        clip_args = ("--encoder", "clip", "--clip-model", tiny, "--clip-weights", weights.name)
        d = index_json(images, index, *clip_args)
    assert d["rows"] == 4
    meta = json.loads((index / "index.json").read_text())
    assert meta["encoder"]["weights"].startswith("file:tiny.pt:")
    assert Path(meta["encoder"]["clip_weights_arg"]) == weights.resolve()
    text = create_text_encoder(meta, "cpu")  # the query side, from this folder
    np.testing.assert_allclose(text.encode(["a sandy beach"]), want, atol=1e-5)
    d = cli_json("search", "--index", index, "a sandy beach", "--k", 2, "--mode", "semantic")
    assert len(d["results"]) == 2


@pytest.mark.slow
def test_weights_from_the_hugging_face_cache_offline(
    tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pretrained tag whose weights sit in the Hugging Face cache loads with the hub
    offline (no network is tried), and is the checkpoint that was cached."""
    import huggingface_hub.constants as hf
    from open_clip import pretrained

    repo, commit = "sceneseek-test/tiny-clip", "0" * 40
    snap = tmp_path / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    _, model = _save_random(tiny, snap / "open_clip_pytorch_model.bin")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text(commit)
    monkeypatch.setitem(
        pretrained._PRETRAINED, tiny, {"cached": pretrained._pcfg(hf_hub=f"{repo}/")}
    )
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = clip.load_clip(tiny, "cached", "cpu")
    assert got.weights == "cached"
    texts = ["snow on a mountain", "a busy street"]
    np.testing.assert_allclose(got.encode_text(texts), model.encode_text(texts), atol=1e-5)
    (snap / "open_clip_pytorch_model.bin").unlink()  # not cached: the offline error
    with pytest.raises(clip.ClipWeightsError, match=r"offline.*efficientnet_lite0"):
        clip.load_clip(tiny, "cached", "cpu")
