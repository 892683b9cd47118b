"""A cross-backbone ensemble (partial mode, tails of EfficientNet-Lite0 and Lite2) on a tiny
real Intel subset: it trains one run per backbone at that backbone's own resolution, its
checkpoint reloads as one model, its predictions are the mean of the members' class
probabilities, and each member reads the photo through its own weights' preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.split import SplitData, split_data
from core.vision.backbones import create_backbone
from core.vision.train import RunFiles, TrainConfig, run_training

PAIR = "efficientnet_lite0,efficientnet_lite2"


def _small(intel_small: Path) -> SplitData:
    """6 training photos per class (of 20) and every second test photo (24)."""
    data = split_data(intel_small / "seg_train", intel_small / "seg_test")
    keep = [i for i in range(len(data.train_paths)) if i % 20 < 6]
    return SplitData(
        [data.train_paths[i] for i in keep],
        [data.train_labels[i] for i in keep],
        data.test_paths[::2],
        data.test_labels[::2],
        data.class_names,
    )


@pytest.fixture(scope="module")
def cross_run(intel_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cross")
    data = _small(intel_small)
    cfg = TrainConfig.for_mode(
        "partial", backbone=PAIR, epochs=2, workers=0, unfreeze="blocks.6.0", members=1, tta="none"
    )
    res = run_training(cfg, data, root / "run", cache_dir=root / "cache")
    return {"res": res, "data": data, "out": root / "run", "cache": root / "cache"}


def _probs(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(logits, np.float32)).softmax(1).numpy()


def test_each_backbone_trains_at_its_own_size_and_the_ensemble_averages(cross_run: dict) -> None:
    res, out = cross_run["res"], cross_run["out"]
    groups = res["groups"]
    assert [(g["backbone"], g["image_size"]) for g in groups] == [
        ("efficientnet_lite0", 224),
        ("efficientnet_lite2", 260),
    ]
    assert res["backbone"] == PAIR and res["image_size"] == 260  # the canvas
    assert res["selected_by"] == "validation"
    ens = np.load(RunFiles(out).eval)
    members = [np.load(Path(g["run"]) / "eval.npz") for g in groups]
    # Each backbone's run is an ordinary partial run, on its own activation cache.
    for g, ev in zip(groups, members, strict=True):
        sub = RunFiles(Path(g["run"]))
        assert sub.best.exists() and sub.result.exists()
        assert ev["val_logits"].shape == (res["n_val"], 6)
    # Validation and test predictions: the mean of the members' class probabilities.
    for key in ("val_logits", "logits"):
        want = np.mean([_probs(m[key]) for m in members], 0)
        assert np.allclose(_probs(ens[key]), want, atol=1e-5), key
    y = ens["val_labels"]
    assert res["val_accuracy"] == pytest.approx(float((ens["val_logits"].argmax(1) == y).mean()))
    assert res["accuracy"] == pytest.approx(
        float((ens["logits"].argmax(1) == ens["labels"]).mean())
    )
    # The two backbones disagree somewhere: the mean is not one member in disguise.
    assert not np.allclose(_probs(members[0]["logits"]), _probs(members[1]["logits"]), atol=1e-3)


def test_the_checkpoint_reloads_and_predicts_the_members_mean(cross_run: dict) -> None:
    """evaluate and predict on the photos give what training reported; each member's
    probabilities, recomputed from its own backbone's preprocessing, average to the
    ensemble's prediction (and feeding Lite2 Lite0's preprocessing would not)."""
    from core.vision.predict import predict_images
    from core.vision.runs import load_trained, score_images
    from core.vision.train.cross_model import CrossClassifier
    from core.vision.transforms import eval_transform

    res, data = cross_run["res"], cross_run["data"]
    trained = load_trained(cross_run["out"])
    assert isinstance(trained.model, CrossClassifier) and trained.model.members == 2
    scored, logits, feats = score_images(
        trained, data.test_paths, [data.class_names[i] for i in data.test_labels], workers=0
    )
    assert scored.accuracy == pytest.approx(res["accuracy"], abs=1 / 24 + 1e-9)
    assert feats.shape[1] == 2 * 1280  # the members' features side by side
    images = [Image.open(p).convert("RGB") for p in data.test_paths[:4]]
    got = np.array(
        [[p.probabilities[c] for c in trained.class_names] for p in predict_images(trained, images)]
    )
    own, mirrored, xs = [], [], []
    for i, g in enumerate(res["groups"]):
        assert g["tta"] == "none"
        bb = create_backbone(g["backbone"])
        x = torch.stack([eval_transform(bb, g["image_size"])(im) for im in images])
        with torch.inference_mode():
            own.append(_probs(trained.model.groups[i](x).numpy()))
            mirrored.append(_probs(trained.model.groups[i](x.flip(-1)).numpy()))
        xs.append(x)
    # (predict may run bf16 on a CPU with bf16 kernels: 5e-3; a wrong preprocessing is 10x off)
    assert np.allclose(got, np.mean(own, 0), atol=5e-3)
    assert np.allclose(np.exp(logits[:4]), np.mean(own, 0), atol=5e-3)
    # Lite2 fed Lite0's resolution and crop predicts otherwise: the check above can fail.
    with torch.inference_mode():
        wrong = _probs(trained.model.groups[1](xs[0]).numpy())
    assert not np.allclose(wrong, own[1], atol=5e-3)
    # A member that chose mirror averaging averages its photo and mirror image inside.
    packed = torch.stack([trained.backbone.preprocess(False)(im) for im in images])
    trained.model.mirror = [False, True]
    with torch.inference_mode():
        both = trained.model(packed).exp().numpy()
    assert np.allclose(both, (own[0] + (own[1] + mirrored[1]) / 2) / 2, atol=1e-4)


def test_a_cross_backbone_run_is_checked_before_it_starts() -> None:
    with pytest.raises(ValueError, match="need --mode partial"):
        TrainConfig(mode="linear-probe", backbone=PAIR)
    with pytest.raises(ValueError, match="each backbone once"):
        TrainConfig.for_mode("partial", backbone="efficientnet_lite0,efficientnet_lite0")
    with pytest.raises(ValueError, match="unknown backbone"):
        TrainConfig.for_mode("partial", backbone="efficientnet_lite0,vgg16")
    # Its canvas holds the largest member input; the default command stays one backbone.
    assert TrainConfig.for_mode("partial", backbone=PAIR).image_size == 260
    assert TrainConfig.for_mode("partial").backbone == "efficientnet_lite0"
