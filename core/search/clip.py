"""CLIP as an index encoder: images and text in one space, nothing fitted (open_clip).

`--encoder clip` indexes each image's CLIP image embedding both as the backbone `vector`
(image to image search) and as the `semantic` column; a query is embedded by CLIP's text
tower, so semantic search needs no mapping and no captions. The ImageNet top-5 that the
keyword mode and the explanations use come from CLIP zero-shot ("a photo of a {label}").

Weights, in this order: a file the user names (`--clip-weights FILE`, an open_clip
checkpoint), the Hugging Face cache (open_clip's hub copy of the pretrained tag), a download
when there is a network. Offline without them `ClipWeightsError` says so and names the
offline default (EfficientNet-Lite0 with the MiniLM mapping). `weights="random"` builds the
model with random weights: it tests the code path, it finds nothing.

Published zero-shot figures of the default (ViT-B-32, laion2b_s34b_b79k; open_clip's
docs/openclip_retrieval_results.csv, not measured here): Flickr30k 1k test text-to-image
R@1 0.668, R@5 0.884, R@10 0.931; MSCOCO 5k R@1 0.393, R@10 0.756; ImageNet zero-shot top-1
66.6%.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.io import file_stamp
from core.search.backend import CLIP_PREFIX, Encoded, EncoderSpec

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
RANDOM = "random"
TOP_K_LABELS = 5
OFFLINE_DEFAULT = (
    "the offline default needs no download: --encoder efficientnet_lite0 (the image-to-text "
    "mapping fitted at index time, MiniLM sentences)"
)


class ClipWeightsError(RuntimeError):
    """CLIP weights are not on disk and cannot be downloaded."""


def _open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise ClipWeightsError(
            f"--encoder clip needs the PyPI package open-clip-torch; {OFFLINE_DEFAULT}"
        ) from exc
    return open_clip


def _file_stamp(path: Path) -> str:
    """A short hash of the weights file's [resolved path, bytes, mtime] (core.io.file_stamp)."""
    stamp = ":".join(map(str, file_stamp(path.resolve())))
    return hashlib.sha256(stamp.encode()).hexdigest()[:16]


WEIGHTS_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")


def _weights_path(weights: str) -> Path | None:
    """The file `--clip-weights` names (existing or not), or None for a tag or random."""
    path = Path(weights).expanduser()
    if weights != RANDOM and (path.suffix in WEIGHTS_SUFFIXES or path.exists()):
        return path
    return None


def absolute_weights(weights: str | None) -> str | None:
    """A weights file as an absolute path (what the index records, so a query from another
    working folder finds it); a tag, random or None unchanged."""
    path = _weights_path(weights) if weights else None
    return str(path.resolve()) if path is not None else weights


def resolve_weights(model: str, weights: str | None) -> tuple[Any, str]:
    """(what open_clip's `pretrained` gets, the weights' identity for index.json)."""
    weights = weights or DEFAULT_PRETRAINED
    if weights == RANDOM:
        return None, RANDOM
    path = _weights_path(weights)
    if path is not None:
        if not path.is_file():
            raise ClipWeightsError(f"{weights}: no such CLIP weights file; {OFFLINE_DEFAULT}")
        return str(path), f"file:{path.name}:{_file_stamp(path)}"
    oc = _open_clip()
    if weights not in oc.list_pretrained_tags_by_model(model):
        raise ClipWeightsError(
            f"unknown CLIP weights {weights!r} for {model}; known: "
            f"{', '.join(oc.list_pretrained_tags_by_model(model)) or 'none'}, a file, or random"
        )
    return weights, weights


@dataclass
class ClipModel:
    """An open_clip model with its preprocessing and tokenizer, on one device."""

    model: Any
    preprocess: Any
    tokenizer: Any
    name: str
    weights: str  # identity: pretrained tag, file:<name>:<stamp> or "random"
    device: torch.device
    _label_emb: np.ndarray | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.model.visual.output_dim)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for a in range(0, len(texts), batch_size):
                tok = self.tokenizer(list(texts[a : a + batch_size])).to(self.device)
                e = self.model.encode_text(tok).float()
                out.append(torch.nn.functional.normalize(e, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def encode_image_tensor(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            e = self.model.encode_image(x.to(self.device)).float()
            return torch.nn.functional.normalize(e, dim=1).cpu().numpy().astype(np.float32)

    def label_embeddings(self, labels: Sequence[str]) -> np.ndarray:
        """Zero-shot classifier over `labels` ("a photo of a {label}"), cached on disk."""
        if self._label_emb is not None and len(self._label_emb) == len(labels):
            return self._label_emb
        from core.config import resolve_cache_dir

        key = hashlib.sha256(repr((self.name, self.weights, list(labels))).encode()).hexdigest()
        path = resolve_cache_dir() / "clip" / f"labels-{key[:16]}.npy"
        emb = None
        if self.weights != RANDOM and path.exists():
            try:
                emb = np.load(path)
            except (OSError, ValueError):
                emb = None
        if emb is None or emb.shape[0] != len(labels):
            emb = self.encode_text([f"a photo of a {lab}" for lab in labels])
            if self.weights != RANDOM:
                from core.io import atomic_write

                atomic_write(path, lambda fh: np.save(fh, emb))
        self._label_emb = emb
        return emb


def load_clip(
    model: str = DEFAULT_MODEL, weights: str | None = None, device: str | None = None
) -> ClipModel:
    """open_clip model + preprocessing + tokenizer; see the module doc for where weights come
    from. Raises ClipWeightsError (one clear line) when they cannot be had."""
    from core.vision.device import pick_device

    oc = _open_clip()
    if model not in oc.list_models():
        raise ClipWeightsError(f"unknown CLIP model {model!r}; for example {DEFAULT_MODEL}")
    pretrained, ident = resolve_weights(model, weights)
    dev = pick_device(device)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random weights: the same model in the index and query process
            m, _, preprocess = oc.create_model_and_transforms(
                model, pretrained=pretrained, device=dev, weights_only=True
            )
    except Exception as exc:  # offline and not cached, damaged file, wrong architecture
        if "weights only load failed" in str(exc).lower():  # never torch's unsafe advice
            raise ClipWeightsError(
                f"CLIP weights file {pretrained} refused: it is not a file of tensors only "
                "(Python objects, or not a PyTorch file); loading it could run code from it; "
                f"{OFFLINE_DEFAULT}"
            ) from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        where = (
            f"the file {pretrained}"
            if ident.startswith("file:")
            else f"the Hugging Face cache ({'offline' if offline else 'no download possible'})"
        )
        raise ClipWeightsError(
            f"CLIP {model} weights {weights or DEFAULT_PRETRAINED!r} could not be loaded from "
            f"{where}: {str(exc).splitlines()[0][:160]}. Name a weights file with "
            f"--clip-weights FILE; {OFFLINE_DEFAULT}"
        ) from exc
    m.eval()
    return ClipModel(m, preprocess, oc.get_tokenizer(model), model, ident, dev)


# --- the index-side backend (core.search.backend.EncoderBackend) --------------------------------


class ClipEncoder:
    """Images -> CLIP embeddings (as `vector` and `semantic`) and zero-shot ImageNet top-5."""

    imagenet_note = "ImageNet top-5 by CLIP zero-shot ('a photo of a {label}')"

    def __init__(self, clip: ClipModel, weights_arg: str | None = None) -> None:
        self.clip = clip
        self.weights_arg = weights_arg
        self.image_size = int(getattr(clip.model.visual, "image_size", (224, 224))[0])

    @property
    def feature_dim(self) -> int:
        return int(self.clip.model.visual.output_dim)

    @property
    def semantic_dim(self) -> int | None:
        return self.feature_dim

    @property
    def class_names(self) -> list[str]:
        return []

    @property
    def imagenet_classes(self) -> list[str]:
        from core.resources import imagenet_classes

        return imagenet_classes()

    def identity(self) -> dict[str, Any]:
        return {
            "backbone": CLIP_PREFIX + self.clip.name,
            "weights": self.clip.weights,
            "image_size": self.image_size,
            "run": None,
            "run_epoch": None,
            "class_names": [],
            "clip_weights_arg": self.weights_arg,
        }

    def transform(self) -> Any:
        return self.clip.preprocess

    def spec(self, device: str | None = None) -> EncoderSpec:
        return EncoderSpec(
            CLIP_PREFIX + self.clip.name,
            image_size=self.image_size,  # the blank a Ray decoding task gives a bad file
            weights=self.weights_arg,
            device=device or self.clip.device.type,
        )

    def encode_tensor(self, x: torch.Tensor) -> Encoded:
        emb = self.clip.encode_image_tensor(x)
        labels = self.clip.label_embeddings(self.imagenet_classes)
        scale = float(self.clip.model.logit_scale.exp().item())
        z = scale * (emb @ labels.T)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        top = np.argsort(-p, axis=1)[:, :TOP_K_LABELS]
        return Encoded(
            features=emb,
            top_ids=top.astype(np.int32),
            top_probs=np.take_along_axis(p, top, axis=1).astype(np.float32),
            probs=None,
            ok=np.ones(len(emb), dtype=bool),
            reasons=[None] * len(emb),
            semantic=emb,
        )

    def encode_images(self, images: Sequence[Any]) -> Encoded:
        tf = self.transform()
        return self.encode_tensor(torch.stack([tf(im.convert("RGB")) for im in images]))

    def loader(
        self, paths: Sequence[str | Path], batch_size: int, workers: int | None = None
    ) -> Any:
        from core.search.embed import image_loader

        return image_loader(
            paths, self.transform(), self.image_size, batch_size, workers, self.clip.device
        )


@dataclass
class ClipText:
    """The query side (core.search.backend.TextBackend): CLIP's text tower."""

    clip: ClipModel
    name: str = ""
    dim: int = 0

    def __post_init__(self) -> None:
        self.name = self.name or CLIP_PREFIX + self.clip.name
        self.dim = self.dim or self.clip.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self.clip.encode_text(texts)


def clip_encoder(spec: EncoderSpec) -> ClipEncoder:
    """The index-side CLIP encoder (`--encoder clip`); reached through
    core.search.encoders.create_image_encoder."""
    weights = absolute_weights(spec.weights)
    return ClipEncoder(load_clip(spec.clip_model or DEFAULT_MODEL, weights, spec.device), weights)


def clip_text(spec: EncoderSpec) -> ClipText:
    """The text tower of the CLIP `spec` names; reached through
    core.search.encoders.create_text_encoder."""
    return ClipText(load_clip(spec.clip_model or DEFAULT_MODEL, spec.weights, spec.device))
