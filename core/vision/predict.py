"""Predict single images with a trained run: class probabilities and ImageNet top-5."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from core.vision.backbones import IMAGENET, Backbone, BackboneWeightsError, create_backbone
from core.vision.features import autocast
from core.vision.runs import TrainedModel


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]  # every class, in the run's class order
    imagenet_top5: list[tuple[str, float]]
    imagenet_note: str = ""

    def to_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities,
                "imagenet_top5": [{"label": n, "probability": p} for n, p in self.imagenet_top5],
                "imagenet_note": self.imagenet_note}  # fmt: skip


def imagenet_reference(trained: TrainedModel) -> tuple[Backbone | None, str]:
    """The backbone whose ImageNet head gives the top-5: the run's own frozen backbone for a
    linear probe; the pristine pretrained one when training changed the features."""
    if trained.config.mode == "linear-probe":
        return trained.backbone, ""
    try:
        bb = create_backbone(trained.config.backbone, trained.config.weights or IMAGENET)
    except BackboneWeightsError as exc:
        return None, f"no ImageNet top-5: {exc}"
    bb.model.to(trained.device, memory_format=torch.channels_last)
    return bb, "ImageNet top-5 from the pretrained backbone (before fine-tuning)"


def predict_images(
    trained: TrainedModel,
    images: list[Image.Image],
    reference: tuple[Backbone | None, str] | None = None,
) -> list[Prediction]:
    ref, note = reference if reference is not None else imagenet_reference(trained)
    tf = trained.backbone.preprocess(False, trained.config.image_size)
    x = torch.stack([tf(im) for im in images]).to(trained.device)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(trained.device, trained.config.amp):
        probs = trained.model(x).float().softmax(1).cpu().numpy()
        inet = None
        if ref is not None:
            # ImageNet head at the weights' own input size, as it was trained.
            tf_in = ref.preprocess(False, ref.default_size)
            xi = torch.stack([tf_in(im) for im in images]).to(trained.device)
            xi = xi.contiguous(memory_format=torch.channels_last)
            inet = ref.model.imagenet_logits(xi).float().softmax(1).cpu().numpy()
    out = []
    for i in range(len(images)):
        top5: list[tuple[str, float]] = []
        if inet is not None and ref is not None:
            idx = np.argsort(-inet[i])[:5]
            top5 = [(ref.imagenet_classes[int(j)], float(inet[i, j])) for j in idx]
        p = {c: float(probs[i, k]) for k, c in enumerate(trained.class_names)}
        out.append(Prediction(max(p, key=p.get), p, top5, note))
    return out
