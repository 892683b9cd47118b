"""Predict single images with a trained run: class probabilities and ImageNet top-5."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.data.images import BadImageError
from core.vision.backbones import IMAGENET, Backbone, BackboneWeightsError, create_backbone
from core.vision.runs import TrainedModel
from core.vision.train import mirror_average


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]  # every class, in the run's class order
    imagenet_top5: list[tuple[str, float]]
    imagenet_note: str = ""

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "imagenet_top5": [{"label": n, "probability": p} for n, p in self.imagenet_top5],
            "imagenet_note": self.imagenet_note,
        }


def imagenet_reference(trained: TrainedModel) -> tuple[Backbone | None, str]:
    """The backbone whose ImageNet head gives the top-5: the run's own frozen backbone for a
    linear probe; the pristine pretrained one when training changed the features."""
    if trained.config.mode == "linear-probe":
        return trained.backbone, ""
    try:
        # A cross-backbone ensemble: its first backbone's ImageNet head.
        first = trained.config.backbone.split(",")[0]
        bb = create_backbone(first, trained.config.weights or IMAGENET)
    except BackboneWeightsError as exc:
        return None, f"no ImageNet top-5: {exc}"
    bb.model.to(trained.device, memory_format=torch.channels_last)
    return bb, "ImageNet top-5 from the pretrained backbone (before fine-tuning)"


def predict_images(
    trained: TrainedModel,
    images: list[Image.Image],
    reference: tuple[Backbone | None, str] | None = None,
) -> list[Prediction]:
    from core.vision.inference import attached, load_inference, load_run_inference, softmax_np

    ref, note = reference if reference is not None else imagenet_reference(trained)
    # OpenVINO / ONNX Runtime on CPUs, PyTorch on CUDA (core.vision.inference); loaded once.
    run_inf = attached(trained, lambda: load_run_inference(trained))
    batch = torch.stack([run_inf.transform(im) for im in images])
    logits = run_inf.run(batch)["logits"]
    if trained.tta == "mirror":  # the average validation chose for this checkpoint
        logits = mirror_average(logits, run_inf.run(batch.flip(-1))["logits"])
    probs = softmax_np(logits)
    inet = None
    if ref is not None:
        # ImageNet head at the weights' own input size, as it was trained.
        size = ref.default_size
        ref_inf = attached(
            ref, lambda: load_inference(ref, size, trained.device, amp=trained.config.amp)
        )
        inet = softmax_np(
            ref_inf.run(torch.stack([ref_inf.transform(im) for im in images]))["imagenet"]
        )
    out = []
    for i in range(len(images)):
        top5: list[tuple[str, float]] = []
        if inet is not None and ref is not None:
            idx = np.argsort(-inet[i])[:5]
            top5 = [(ref.imagenet_classes[int(j)], float(inet[i, j])) for j in idx]
        p = {c: float(probs[i, k]) for k, c in enumerate(trained.class_names)}
        out.append(Prediction(max(p, key=p.get), p, top5, note))
    return out


def predict_files(
    trained: TrainedModel,
    paths: Sequence[str | Path],
    cache_dir: str | Path | None = None,
    reference: tuple[Backbone | None, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Prediction | BadImageError]:
    """Predictions for image files, in order (a BadImageError in place of a file that cannot
    be decoded). A linear probe whose predictions need no mirror average reads its frozen
    backbone's outputs from the encoding store (core.vision.encodings) and encodes only the
    files it lacks: a photo the run trained or indexed on is not decoded again."""
    from core.data.images import load_rgb
    from core.vision.features import cached_outputs

    ref, note = reference if reference is not None else imagenet_reference(trained)
    size = trained.config.image_size
    stored = (
        cache_dir is not None
        and trained.config.mode == "linear-probe"
        and trained.tta != "mirror"
        and ref is trained.backbone
        and size == ref.default_size  # the ImageNet top-5 is taken at the weights' own size
    )
    if stored and paths:
        try:
            outs, _ = cached_outputs(
                trained.backbone,
                paths,
                size,
                cache_dir,
                trained.device,
                amp=trained.config.amp,
                workers=0 if len(paths) < 64 else None,  # worker start-up outweighs a few files
                progress=progress,
                names=("features", "imagenet"),
            )
            return _from_outputs(trained, outs, note)
        except (BadImageError, RuntimeError, OSError):  # a worker re-raises it as RuntimeError
            pass  # one by one below: every readable file still gets its prediction
    out: list[Prediction | BadImageError] = []
    for i, path in enumerate(paths):
        try:
            out.append(predict_images(trained, [load_rgb(path)], (ref, note))[0])
        except BadImageError as exc:
            out.append(exc)
        if progress:
            progress(i + 1, len(paths))
    return out


def _from_outputs(
    trained: TrainedModel, outs: dict[str, np.ndarray], note: str
) -> list[Prediction | BadImageError]:
    from core.vision.inference import softmax_np

    with torch.inference_mode():
        head = trained.model.head.float().cpu().eval()
        probs = softmax_np(head(torch.from_numpy(outs["features"])).numpy())
    inet = softmax_np(outs["imagenet"])
    names = trained.backbone.imagenet_classes
    out: list[Prediction | BadImageError] = []
    for i in range(len(probs)):
        idx = np.argsort(-inet[i])[:5]
        top5 = [(names[int(j)], float(inet[i, j])) for j in idx]
        p = {c: float(probs[i, k]) for k, c in enumerate(trained.class_names)}
        out.append(Prediction(max(p, key=p.get), p, top5, note))
    return out
