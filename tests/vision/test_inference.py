"""Inference backends: the ONNX Runtime export agrees with PyTorch on real photos, is exported
once per key and reused, and PyTorch takes over (saying why) when onnxruntime is missing or
the export's check fails. The fast eval transform gives torchvision's numbers."""

from __future__ import annotations

import builtins
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.vision import inference as inf
from core.vision import quantize
from core.vision.backbones import Backbone
from core.vision.features import cached_features, feature_ident
from core.vision.inference import check_photos, eval_transform, load_inference
from core.vision.transforms import torchvision_transform

SIZE = 224  # the ImageNet head's own size, so its top-1 classes mean something
pytestmark = pytest.mark.slow  # exports and compiles models (once per key, then cached)


@pytest.fixture(autouse=True)
def _fresh_loads() -> None:
    """load_inference keeps what it loaded per backbone; each test starts from the disk cache."""
    inf._ATTACHED.clear()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def ort_lite0(lite0: Backbone, cache: Path) -> inf.Inference:
    return load_inference(lite0, SIZE, "cpu", "onnxruntime", "fp32", cache_dir=cache)


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `import <module>` fail as if the package were not installed."""
    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if any(name == m or name.startswith(m + ".") for m in modules):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for m in modules:
        monkeypatch.delitem(sys.modules, m, raising=False)
    monkeypatch.setattr(builtins, "__import__", fake)


@pytest.fixture(scope="module")
def photos(intel_small: Path) -> list[Image.Image]:
    """Real photos: Intel test images of every class (150 px, some not square) and two larger
    non-square photos."""
    paths = sorted((intel_small / "seg_test").glob("*/*.jpg"))[::4]
    return [Image.open(p).convert("RGB") for p in paths] + check_photos()


def _torch_fp32(backbone: Backbone, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        f = backbone.model(x)
        return f.numpy(), backbone.model.imagenet_head(f).numpy()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fast_transform_matches_torchvision(lite0: Backbone, photos: list[Image.Image]) -> None:
    assert {im.size for im in photos} >= {(150, 150), (640, 427)}
    for size in (SIZE, 150, 96):
        slow, fast = torchvision_transform(lite0, False, size), eval_transform(lite0, size)
        assert isinstance(fast, inf.EvalTransform)
        assert isinstance(lite0.preprocess(False, size), inf.EvalTransform)  # the one transform
        for im in photos:
            a, b = slow(im), fast(im)
            assert b.shape == a.shape == (3, size, size) and b.dtype == torch.float32
            diff = (a - b).abs()
            # Float rounding of PIL's filter weights moves a few pixel values by one 8-bit level.
            assert float(diff.max()) <= 2 * 2 / 255 + 1e-6
            assert float((diff > 1e-5).float().mean()) < 0.01
    gray = Image.new("L", (300, 200), 128)  # any mode is converted
    assert eval_transform(lite0, 64)(gray).shape == (3, 64, 64)


def test_export_matches_pytorch_on_real_photos(
    lite0: Backbone, ort_lite0: inf.Inference, photos: list[Image.Image]
) -> None:
    assert ort_lite0.backend == "onnxruntime" and ort_lite0.precision == "fp32"
    assert ort_lite0.path is not None and ort_lite0.path.is_file()
    assert "checked against PyTorch" in ort_lite0.reason and ort_lite0.numerics() == "ort-fp32"
    x = torch.stack([ort_lite0.transform(im) for im in photos])
    got = ort_lite0.run(x)
    feats, logits = _torch_fp32(lite0, x)
    assert got["features"].shape == (len(photos), 1280) and got["features"].dtype == np.float32
    assert _cos(feats, got["features"]).min() >= 0.999
    assert np.array_equal(logits.argmax(1), got["imagenet"].argmax(1))
    # Batch size is free (dynamic axis): one image gives the same numbers as in a batch.
    one = ort_lite0.run(x[:1].numpy())
    assert np.allclose(one["features"][0], got["features"][0], atol=1e-4)
    assert ort_lite0.run(np.zeros((0, 3, SIZE, SIZE), np.float32))["features"].shape[0] == 0
    # The export's own record: checked on real photos, remembered beside the file.
    meta = json.loads(ort_lite0.path.with_suffix(".json").read_text())
    assert meta["ok"] and min(meta["check"]["cosine"]) >= 0.999
    assert meta["check"]["imagenet_top1_same"] is True


def test_second_load_reuses_the_export(
    lite0: Backbone, ort_lite0: inf.Inference, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(inf, "export_onnx", no_export)
    monkeypatch.setattr(inf, "_reference", no_export)  # nor re-checked
    again = load_inference(lite0, SIZE, "cpu", "onnxruntime", "fp32", cache_dir=cache)
    assert again.backend == "onnxruntime" and again.path == ort_lite0.path
    assert again is not ort_lite0  # loaded from the disk cache, not kept in memory
    # In one process the same backbone and settings give the same loaded object.
    assert load_inference(lite0, SIZE, "cpu", "onnxruntime", "fp32", cache_dir=cache) is again
    assert len(list((cache / "onnx").glob("*.onnx"))) == 1


def test_fallback_when_onnxruntime_is_missing(
    lite0: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hide(monkeypatch, "onnxruntime", "openvino")
    got = load_inference(lite0, 64, "cpu", cache_dir=tmp_path)
    assert got.backend == "torch" and "onnxruntime is not installed" in got.reason
    assert not (tmp_path / "onnx").exists()
    x = torch.stack([got.transform(im) for im in check_photos()])
    assert got.run(x)["features"].shape == (2, 1280)
    # Feature caching still works, under the PyTorch key that existed before this backend.
    feats, hit = cached_features(lite0, [], 64, tmp_path, torch.device("cpu"), workers=0)
    assert feats.shape[0] == 0 and not hit


def test_fallback_when_the_check_fails_is_remembered(
    lite0: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(inf, "PARITY_COSINE", 1.5)  # no export can pass this
    with caplog.at_level("WARNING"):
        got = load_inference(lite0, 64, "cpu", "onnxruntime", "fp32", cache_dir=tmp_path)
    assert got.backend == "torch" and "cosine" in got.reason
    assert "running PyTorch instead" in caplog.text
    (meta,) = (tmp_path / "onnx").glob("*.json")
    assert json.loads(meta.read_text())["ok"] is False

    def no_export(*args, **kwargs):
        raise AssertionError("a failed export is not retried")

    monkeypatch.setattr(inf, "export_onnx", no_export)
    inf._ATTACHED.clear()
    again = load_inference(lite0, 64, "cpu", "onnxruntime", "fp32", cache_dir=tmp_path)
    assert again.backend == "torch" and "remembered" in again.reason


def test_explicit_torch_and_bad_arguments(lite0: Backbone, tmp_path: Path) -> None:
    got = load_inference(lite0, 64, "cpu", backend="torch", cache_dir=tmp_path)
    assert got.backend == "torch" and got.numerics().startswith("torch-")
    with pytest.raises(ValueError, match="onnxruntime"):
        load_inference(lite0, 64, "cpu", backend="tensorrt", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="int8"):
        load_inference(lite0, 64, "cpu", precision="fp8", cache_dir=tmp_path)


def test_session_threads_follow_the_cores_without_spinning(
    ort_lite0: inf.Inference, photos: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.vision.device import inference_threads

    opts = ort_lite0.runner.session.get_session_options()
    assert opts.intra_op_num_threads == inference_threads()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # a one-CPU Ray worker
    one = inf.OrtRunner(ort_lite0.path, ort_lite0.outputs)
    assert one.session.get_session_options().intra_op_num_threads == 1
    x = torch.stack([ort_lite0.transform(im) for im in photos[:4]])
    assert np.allclose(one(x)["features"], ort_lite0.run(x)["features"], atol=1e-4)


def test_feature_cache_keys(lite0: Backbone) -> None:
    # The PyTorch path keeps the key it always had (caches made before ONNX Runtime stay valid).
    old = {"version": 1, "backbone": "efficientnet_lite0", "image_size": 96, "amp": True}
    torch_key = feature_ident(lite0, 96, True, "torch-amp")
    assert {k: v for k, v in torch_key.items() if k != "weights"} == old
    assert feature_ident(lite0, 96, True, "ort-fp32")["numerics"] == "ort-fp32"


def test_cached_features_run_on_onnxruntime(
    lite0: Backbone, ort_lite0: inf.Inference, cache: Path, intel_small: Path
) -> None:
    paths = sorted((intel_small / "seg_test").glob("*/*.jpg"))[:5]
    dev = torch.device("cpu")
    kw = {"workers": 0, "backend": "onnxruntime", "precision": "fp32"}
    a, hit_a = cached_features(lite0, paths, SIZE, cache, dev, **kw)
    b, hit_b = cached_features(lite0, paths, SIZE, cache, dev, **kw)
    assert (hit_a, hit_b) == (False, True) and np.array_equal(a, b)
    x = torch.stack([lite0.preprocess(False, SIZE)(Image.open(p).convert("RGB")) for p in paths])
    assert _cos(_torch_fp32(lite0, x)[0], a).min() >= 0.999
    t, hit_t = cached_features(lite0, paths, SIZE, cache, dev, workers=0, backend="torch")
    assert not hit_t and _cos(t, a).min() >= 0.99  # bf16 autocast: close, another key


needs_openvino = pytest.mark.skipif(
    inf.openvino_missing() is not None, reason=f"OpenVINO bf16: {inf.openvino_missing()}"
)


@needs_openvino
def test_openvino_bf16_stays_close_to_fp32(
    lite0: Backbone, ort_lite0: inf.Inference, cache: Path, photos: list[Image.Image]
) -> None:
    ov = load_inference(lite0, SIZE, "cpu", "openvino", "bf16", cache_dir=cache)
    assert (ov.backend, ov.precision, ov.numerics()) == ("openvino", "bf16", "ov-bf16")
    assert ov.path == ort_lite0.path  # the same export, compiled by OpenVINO
    x = torch.stack([ov.transform(im) for im in photos])
    feats, logits = _torch_fp32(lite0, x)
    got = ov.run(x)
    cos = _cos(feats, got["features"])
    # bf16 rounds activations to 8 significant bits: measured on 57 Intel test photos, cosine
    # mean 0.999, min 0.9955, ImageNet top-1 the same for 96%.
    assert cos.mean() >= 0.998 and cos.min() >= 0.99
    assert np.mean(logits.argmax(1) == got["imagenet"].argmax(1)) >= 0.8
    # Batch composition does not change the numbers (the Ray and local engines batch apart).
    one = np.concatenate([ov.run(x[i : i + 1])["features"] for i in range(3)])
    assert np.allclose(one, got["features"][:3], atol=1e-5)


@needs_openvino
def test_auto_is_onnxruntime_and_openvino_only_when_asked(
    lite0: Backbone, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quantize, "_checks", dict)  # no int8 check: auto is fp32
    auto = load_inference(lite0, SIZE, "cpu", cache_dir=cache)
    assert (auto.backend, auto.precision) == ("onnxruntime", "fp32")
    assert f"{inf.AUTO_FP32}: int8 not checked" in auto.reason  # the log says why not int8
    assert inf.planned_numerics("cpu", "auto", "auto", True) == "ort-fp32"
    assert inf.planned_numerics("cpu", "auto", "auto", False) == "ort-fp32"
    assert inf.planned_numerics("cpu", "openvino", "auto", True) == "ov-bf16"
    ov = load_inference(lite0, SIZE, "cpu", "openvino", cache_dir=cache)
    assert (ov.backend, ov.precision) == ("openvino", "bf16")
    _hide(monkeypatch, "openvino")
    inf._ATTACHED.clear()
    got = load_inference(lite0, SIZE, "cpu", "openvino", cache_dir=cache)
    assert (got.backend, got.precision) == ("onnxruntime", "fp32")
    assert "openvino is not installed" in got.reason


def _check_row(cosine: float = 0.995, points: float = 0.1) -> dict:
    ident = {k: v for k, v in quantize.int8_ident(None).items() if k != "reduce_range"}
    return {
        "ident": ident,
        "validation_images": 600,
        "cosine_mean": cosine,
        "cosine_p01": 0.97,
        "cosine_min": 0.91,
        "points": points,
    }


def test_int8_verdict_follows_the_validation_check(monkeypatch: pytest.MonkeyPatch) -> None:
    key = quantize.check_key("efficientnet_lite0", 224)
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: True)
    ok, why = quantize.int8_verdict("efficientnet_lite0", 224, {key: _check_row()})
    assert ok and "cosine mean 0.9950" in why and "+0.10 points" in why
    for row, words in (
        (_check_row(cosine=0.985), "fails"),  # mean cosine under 0.99
        (_check_row(points=-0.25), "fails"),  # more than 0.2 points worse
        ({**_check_row(), "ident": {"calibration": "other"}}, "another quantisation"),
    ):
        ok, why = quantize.int8_verdict("efficientnet_lite0", 224, {key: row})
        assert not ok and words in why
    # "Within 0.2 points" either way: a probe that gains 0.8 points sees other features.
    assert not quantize.int8_verdict("efficientnet_lite0", 224, {key: _check_row(points=0.8)})[0]
    assert not quantize.int8_verdict("efficientnet_lite0", 96, {key: _check_row()})[0]
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: False)
    ok, why = quantize.int8_verdict("efficientnet_lite0", 224, {key: _check_row()})
    assert not ok and "no VNNI" in why
    # The shipped record (benchmarks/int8_check.py --write) agrees with the rule it states.
    for row in quantize._checks().values():
        assert quantize.judge(row) == row["passes"]
        assert row["cosine_min"] <= row["cosine_p01"] <= row["cosine_mean"] <= 1


@pytest.mark.skipif(not inf.cpu_has_vnni(), reason="int8 is checked on CPUs with VNNI")
def test_auto_runs_the_checked_int8_where_it_passed(
    lite0: Backbone,
    ort_lite0: inf.Inference,
    cache: Path,
    intel_small: Path,
    photos: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = {quantize.check_key(lite0.name, SIZE): _check_row()}
    monkeypatch.setattr(quantize, "_checks", lambda: table)
    monkeypatch.delenv("SCENESEEK_PRECISION", raising=False)
    auto = load_inference(lite0, SIZE, "cpu", cache_dir=cache)
    assert (auto.backend, auto.precision) == ("onnxruntime", "int8")
    assert auto.numerics() == f"ort-int8-{quantize.DEFAULT_CALIBRATION}"
    assert "precision auto is int8: int8 passes the check" in auto.reason
    assert inf.planned_numerics("cpu", "auto", "auto", True, lite0.name, SIZE) == auto.numerics()
    # auto's int8 is the checked model: a caller's calibration photos do not change it
    calib = sorted((intel_small / "seg_train").glob("*/*.jpg"))[:8]
    inf._ATTACHED.clear()
    assert load_inference(lite0, SIZE, "cpu", cache_dir=cache, calibration=calib).path == auto.path
    x = torch.stack([auto.transform(im) for im in photos])
    got = auto.run(x)["features"]
    cos = _cos(ort_lite0.run(x)["features"], got)
    assert cos.mean() >= 0.98  # the 0.99 criterion is on 600 validation photos (the check)
    one = np.concatenate([auto.run(x[i : i + 1])["features"] for i in range(3)])
    assert np.allclose(one, got[:3], atol=1e-4)  # batches of any size give the same numbers
    # The encoding store finds int8 features by the planned numerics, without a model.
    files = sorted((intel_small / "seg_test").glob("*/*.jpg"))[::9][:6]
    first, hit = cached_features(lite0, files, SIZE, cache, torch.device("cpu"))
    want = auto.run(torch.stack([auto.transform(Image.open(f).convert("RGB")) for f in files]))
    assert not hit and np.allclose(first, want["features"], atol=1e-4)
    monkeypatch.setattr(inf, "load_inference", None)  # a hit must not load the model
    again, hit = cached_features(lite0, files, SIZE, cache, torch.device("cpu"))
    assert hit and np.array_equal(again, first)
    monkeypatch.undo()
    monkeypatch.setattr(quantize, "_checks", lambda: table)
    # Full precision asked for (training), $SCENESEEK_PRECISION, or a failed check: fp32.
    inf._ATTACHED.clear()
    full = load_inference(lite0, SIZE, "cpu", amp=False, cache_dir=cache)
    assert full.precision == "fp32" and "full precision asked for" in full.reason
    monkeypatch.setenv("SCENESEEK_PRECISION", "fp32")
    assert load_inference(lite0, SIZE, "cpu", cache_dir=cache).precision == "fp32"
    monkeypatch.delenv("SCENESEEK_PRECISION")
    table[quantize.check_key(lite0.name, SIZE)] = _check_row(cosine=0.98)
    inf._ATTACHED.clear()
    failed = load_inference(lite0, SIZE, "cpu", cache_dir=cache)
    assert failed.precision == "fp32" and "int8 fails the check" in failed.reason


def test_int8_is_calibrated_on_real_photos(
    lite0: Backbone,
    ort_lite0: inf.Inference,
    cache: Path,
    intel_small: Path,
    photos: list[Image.Image],
) -> None:
    calib = sorted((intel_small / "seg_train").glob("*/*.jpg"))[::5][:16]
    q = load_inference(
        lite0, SIZE, "cpu", "onnxruntime", "int8", cache_dir=cache, calibration=calib
    )
    assert (q.backend, q.numerics()) == ("onnxruntime", "ort-int8")
    assert q.path is not None and q.path != ort_lite0.path and "int8" in q.path.name
    x = torch.stack([q.transform(im) for im in photos])
    cos = _cos(ort_lite0.run(x)["features"], q.run(x)["features"])
    assert cos.mean() >= 0.97  # measured 0.99 with 100 photos; its probe cost is benchmarked
    with pytest.raises(ValueError, match="calibration"):
        inf.quantize_int8(ort_lite0.path, cache / "x.onnx", q.transform, calib[:3])


def _run(lite0: Backbone, tmp_path: Path, mode: str, name: str) -> object:
    from core.vision.runs import TrainedModel
    from core.vision.train import SceneClassifier, TrainConfig

    torch.manual_seed(0)
    model = SceneClassifier(lite0, 6).eval()
    ckpt = tmp_path / name / "checkpoint_best.pt"
    ckpt.parent.mkdir()
    torch.save(model.head.state_dict(), ckpt)
    cfg = TrainConfig(mode=mode, image_size=96, workers=0)
    return TrainedModel(
        model, lite0, [f"c{i}" for i in range(6)], cfg, 3, torch.device("cpu"), ckpt
    )


def test_a_runs_head_is_exported_with_it(
    lite0: Backbone, tmp_path: Path, photos: list[Image.Image]
) -> None:
    trained = _run(lite0, tmp_path, "linear-probe", "probe")
    got = inf.load_run_inference(
        trained, backend="onnxruntime", precision="fp32", cache_dir=tmp_path
    )
    assert got.backend == "onnxruntime" and got.outputs == ("features", "logits", "imagenet")
    x = torch.stack([got.transform(im) for im in photos])
    out = got.run(x)
    with torch.inference_mode():
        feats, logits = trained.model.forward_with_features(x)
    assert _cos(feats.numpy(), out["features"]).min() >= 0.999
    assert np.allclose(logits.numpy(), out["logits"], atol=1e-3)
    assert out["imagenet"].shape == (len(photos), 1000)
    # The same checkpoint under another path is the same export; a changed one is a new one.
    n = len(list((tmp_path / "onnx").glob("*.onnx")))
    moved = tmp_path / "moved"
    (trained.checkpoint.parent).rename(moved)
    trained.checkpoint = moved / "checkpoint_best.pt"
    assert (
        inf.load_run_inference(
            trained, backend="onnxruntime", precision="fp32", cache_dir=tmp_path
        ).path
        == got.path
    )
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == n
    fine = _run(lite0, tmp_path, "fine-tune", "fine")  # trunk changed: no ImageNet output
    assert inf.load_run_inference(fine, backend="torch").outputs == ("features", "logits")
