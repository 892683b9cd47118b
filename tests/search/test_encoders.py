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
