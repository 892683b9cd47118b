"""The one encoder factory: the identity an index stores goes in, the same encoder comes out."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.search.backend import EncoderSpec
from core.search.encoders import create_image_encoder, create_text_encoder, spec_for_index
from tests.helpers import IMAGE_SIZE


def test_a_stored_identity_gives_back_the_same_encoder(intel_small: Path) -> None:
    enc = create_image_encoder(image_size=IMAGE_SIZE, device="cpu")
    ident = enc.identity()
    assert ident["backbone"] == "efficientnet_lite0" and ident["image_size"] == IMAGE_SIZE
    spec = EncoderSpec.from_identity(ident, "cpu")
    assert spec == enc.spec() and not spec.is_clip
    assert pickle.loads(pickle.dumps(spec)) == spec  # what a Ray actor receives
    again = create_image_encoder(ident, device="cpu")  # index.json's entry as it is
    assert again.identity() == ident
    files = sorted((intel_small / "seg_test" / "forest").glob("*.jpg"))[:3]
    images = [Image.open(f).convert("RGB") for f in files]
    a, b = enc.encode_images(images), again.encode_images(images)
    np.testing.assert_allclose(a.features, b.features, atol=1e-5)
    np.testing.assert_array_equal(a.top_ids, b.top_ids)
    assert a.features.shape == (3, enc.feature_dim) and a.semantic is None
    # the matching preprocessing comes with it: the input size the identity names
    assert tuple(enc.transform()(images[0]).shape[-2:]) == (IMAGE_SIZE, IMAGE_SIZE)


def test_text_encoder_follows_the_semantic_space() -> None:
    from core.search.sentence import TEXT_DIM, TextEncoder

    meta = {"semantic": {"source": "mapping"}, "encoder": {"backbone": "efficientnet_lite0"}}
    full = create_text_encoder(meta, "cpu", light=False)
    assert isinstance(full, TextEncoder) and full.dim == TEXT_DIM
    light = create_text_encoder(meta)  # ONNX when exported, else the same on torch
    texts = ["snow on a glacier", "a busy street"]
    np.testing.assert_allclose(light.encode(texts), full.encode(texts), atol=1e-4)
    wrong = {"semantic": {"source": "encoder"}, "encoder": {"backbone": "efficientnet_lite0"}}
    with pytest.raises(ValueError, match="not built with --encoder clip"):
        create_text_encoder(wrong)


def test_index_command_keeps_the_clip_an_index_was_built_with() -> None:
    built = {"encoder": {"backbone": "clip:ViT-B-16", "clip_weights_arg": "/w/x.pt"}}
    assert spec_for_index(None, None, None, built) == EncoderSpec(
        "clip:ViT-B-16", weights="/w/x.pt"
    )
    assert spec_for_index("clip", None, "random", built).weights == "random"
    with pytest.raises(ValueError, match="built with clip:ViT-B-16"):
        spec_for_index("efficientnet_lite0", None, None, built)
    plain = {"encoder": {"backbone": "efficientnet_lite0"}}
    assert spec_for_index(None, None, None, plain) is None
    assert spec_for_index("clip", None, None, plain) == EncoderSpec("clip:ViT-B-32")


def test_index_time_sentence_encoder_is_the_checked_onnx_export() -> None:
    """Indexing embeds texts with the ONNX export its queries use (on every core), sorted
    into batches by length: each text's vector is what sentence-transformers gives it, in
    the order asked, whatever else shares its batch."""
    from core.search.sentence import OnnxTextEncoder, TextEncoder, index_text_encoder

    enc = index_text_encoder()
    assert isinstance(enc, OnnxTextEncoder)
    texts = [
        "a long sentence about a mountain lake at dawn, mist over the water and pines",
        "snow",
        "a busy street",
        "tench: freshwater dace-like game fish of Europe and western Asia",
        "snow",
    ]
    got = enc.encode(texts, batch_size=2)
    want = TextEncoder.load("cpu").encode(texts)
    np.testing.assert_allclose(got, want, atol=1e-4)
    alone = np.concatenate([enc.encode([t]) for t in texts])
    np.testing.assert_allclose(got, alone, atol=1e-5)
    assert enc.encode([]).shape == (0, enc.dim)


def test_derive_encodes_each_distinct_text_once() -> None:
    """The derive step's text encoder (MemoText) passes each new text to the model once
    and gives back the model's vector for every text, repeats included, in order."""
    from core.search.derive import MemoText

    seen: list[list[str]] = []

    class Counting:
        name, dim = "fake", 3

        def encode(self, texts):
            seen.append(list(texts))
            return np.array([[len(t), t.count("a"), 1.0] for t in texts], np.float32)

    memo = MemoText(Counting())
    a = memo.encode(["sea", "a beach", "sea"])
    b = memo.encode(["a beach", "forest", "forest"])
    assert memo.encode([]).shape == (0, 3)
    assert seen == [["sea", "a beach"], ["forest"]]
    np.testing.assert_array_equal(a, Counting().encode(["sea", "a beach", "sea"]))
    np.testing.assert_array_equal(b, Counting().encode(["a beach", "forest", "forest"]))
