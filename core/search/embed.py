"""Images -> what the index stores: backbone features, ImageNet top-5 and, with a trained run,
the landscape-category probabilities, from one forward pass per batch.

Decoding runs ahead of the encoder in threads (core.vision.features.make_loader); a file that cannot be decoded comes back flagged (never
an exception that would kill a worker), so one bad image never stops an indexing run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from core.search.backend import DEFAULT_BACKBONE, Encoded, EncoderSpec
from core.search.uri import read_path_bytes
from core.vision.features import ThreadLoader, decode_or_flag, make_loader

if TYPE_CHECKING:
    from core.vision.backbones import Backbone
    from core.vision.inference import Inference
    from core.vision.runs import TrainedModel

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BACKBONE",
    "Encoded",
    "ImageEncoder",
    "backbone_encoder",
    "concat",
    "decode",
    "encode_loader",
    "image_loader",
    "iter_encoded",
    "rows_from",
    "stored_batches",
]

TOP_K_LABELS = 5


def decode(path: str, transform: Any, size: int) -> tuple[torch.Tensor, bool, str]:
    """(input tensor, ok, reason) for one local path or URI; never raises for bad data, so
    one bad file cannot kill a worker (a Ray task here; `image_loader` does the same in the
    local engine's DataLoader workers)."""
    return decode_or_flag(path, transform, size, read_path_bytes)


def image_loader(
    paths: Sequence[str | Path],
    transform: Any,
    size: int,
    batch_size: int,
    workers: int | None,
    device: torch.device,
) -> DataLoader | ThreadLoader:
    """Batches of (tensor, ok, reason) in file order for both index encoders (backbone and
    CLIP): core.vision.features.make_loader with undecodable files flagged, not raised."""
    return make_loader(
        paths,
        None,
        transform,
        batch_size,
        workers=workers,
        device=device,
        unreadable_side=size,
        read=read_path_bytes,
    )


@dataclass
class ImageEncoder:
    """A backbone (and optionally a trained run's head) ready to encode images."""

    backbone: Backbone
    device: torch.device
    image_size: int
    amp: bool = True
    run: TrainedModel | None = None
    run_dir: str | None = None
    imagenet_ref: Backbone | None = None  # the backbone whose ImageNet head gives the top-5
    imagenet_note: str = ""
    # core.vision.inference.Inference (ONNX Runtime on CPUs, PyTorch on CUDA) with its matching
    # transform; None: the PyTorch modules above run directly.
    inference: Inference | None = None
    imagenet_inference: Inference | None = None  # the same for imagenet_ref

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.feature_dim)

    @property
    def semantic_dim(self) -> int | None:
        """None: the semantic column comes from the mapping fitted at index time."""
        return None

    @property
    def class_names(self) -> list[str]:
        return list(self.run.class_names) if self.run is not None else []

    @property
    def imagenet_classes(self) -> list[str]:
        return list(self.backbone.imagenet_classes)

    def identity(self) -> dict[str, Any]:
        """What the stored vectors depend on: a different identity means re-encoding."""
        return {
            "backbone": self.backbone.name,
            "weights": self.backbone.weights,
            "image_size": self.image_size,
            "run": self.run_dir,
            "run_epoch": getattr(self.run, "epoch", None),
            "class_names": self.class_names,
        }

    def transform(self) -> Any:
        if self.inference is not None:
            return self.inference.transform
        return self.backbone.preprocess(False, self.image_size)

    def spec(self, device: str | None = None) -> EncoderSpec:
        """How a Ray actor loads this same encoder (on `device`, default this one's)."""
        return EncoderSpec(
            self.backbone.name,
            self.run_dir,
            int(self.image_size),
            amp=bool(self.amp),
            device=device or self.device.type,
        )

    def _forward(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        from core.vision.device import autocast

        if self.inference is not None:
            return self._run_inference(x)
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.amp):
            if self.run is not None:
                feats, logits = self.run.model.forward_with_features(x)
                probs = logits.float().softmax(1).cpu().numpy()
            else:
                feats, probs = self.backbone.model(x), None
            if self.imagenet_ref is None:
                inet = self.backbone.model.imagenet_head(feats)
            else:  # a fine-tuned run: top-5 from the pretrained weights
                inet = self.imagenet_ref.model.imagenet_logits(self._ref_input(x))
            feats = torch.nn.functional.normalize(feats.float(), dim=1).cpu().numpy()
            inet = inet.float().softmax(1).cpu().numpy()
        return feats, inet, probs

    def _ref_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the ImageNet reference reads: the run's input, or for a cross-backbone
        ensemble (core.vision.train.cross_model) its first member's part of the canvas."""
        cut = getattr(self.run.model, "member_input", None) if self.run is not None else None
        return cut(torch.as_tensor(x), 0) if cut is not None else x

    def _run_inference(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        from core.vision.inference import softmax_np

        out = self.inference.run(x)
        if self.imagenet_inference is not None:  # a fine-tuned run: the pretrained top-5
            inet = self.imagenet_inference.run(self._ref_input(x))["imagenet"]
        elif "imagenet" in out:
            inet = out["imagenet"]
        else:
            with torch.inference_mode():
                head = self.backbone.model.imagenet_head.float().cpu()
                inet = head(torch.from_numpy(out["features"])).numpy()
        feats = out["features"] / np.maximum(
            np.linalg.norm(out["features"], axis=1, keepdims=True), 1e-12
        )
        probs = softmax_np(out["logits"]) if "logits" in out else self._head_probs(out["features"])
        return feats.astype(np.float32), softmax_np(inet), probs

    def _head_probs(self, raw: np.ndarray) -> np.ndarray | None:
        """The run's class probabilities from raw backbone features (a linear probe's head
        over its frozen trunk); None without a run."""
        from core.vision.inference import softmax_np

        if self.run is None:
            return None
        with torch.inference_mode():
            head = self.run.model.head.float().cpu().eval()
            return softmax_np(head(torch.from_numpy(np.asarray(raw, np.float32))).numpy())

    def encode_tensor(self, x: torch.Tensor) -> Encoded:
        feats, inet, probs = self._forward(x)
        top = np.argsort(-inet, axis=1)[:, :TOP_K_LABELS]
        return Encoded(
            features=feats.astype(np.float32),
            top_ids=top.astype(np.int32),
            top_probs=np.take_along_axis(inet, top, axis=1).astype(np.float32),
            probs=None if probs is None else probs.astype(np.float32),
            ok=np.ones(len(feats), dtype=bool),
            reasons=[None] * len(feats),
        )

    def encode_images(self, images: Sequence[Image.Image]) -> Encoded:
        """Encode decoded PIL images (an upload, a query image)."""
        tf = self.transform()
        return self.encode_tensor(torch.stack([tf(im.convert("RGB")) for im in images]))

    def outputs_inference(self) -> Inference | None:
        """The pretrained backbone whose stored outputs (core.vision.encodings) this encoder's
        rows derive from: a plain backbone, or a linear-probe run (its frozen trunk; the
        run's head maps the stored features to class probabilities). None for a run that
        changed the trunk (partial, fine-tune: its own model encodes) or no session."""
        if self.inference is None or "logits" in self.inference.outputs:
            return None  # a run's own model: its trunk is not the pretrained one
        # A plain backbone, or a linear probe, which runs its trunk's export (backbone_encoder).
        return self.inference

    def store_identity(self, inference: Inference) -> dict[str, Any]:
        from core.vision.encodings import encoder_identity

        return encoder_identity(self.backbone, self.image_size, inference.numerics(), self.amp)

    def from_outputs(self, outputs: dict[str, np.ndarray]) -> Encoded:
        """Rows from stored backbone outputs ("features", "imagenet" logits): what
        `encode_tensor` gives for the same images, with no image decoded."""

        raw = np.asarray(outputs["features"], np.float32)
        if "imagenet" in outputs:
            inet = outputs["imagenet"]
        else:
            with torch.inference_mode():
                head = self.backbone.model.imagenet_head.float().cpu()
                inet = head(torch.from_numpy(raw)).numpy()
        return rows_from(raw, inet, self._head_probs(raw))

    def loader(
        self, paths: Sequence[str | Path], batch_size: int, workers: int | None = None
    ) -> DataLoader | ThreadLoader:
        return image_loader(
            paths, self.transform(), self.image_size, batch_size, workers, self.device
        )


def rows_from(raw: np.ndarray, inet_logits: np.ndarray, probs: np.ndarray | None) -> Encoded:
    """Rows from pooled features, ImageNet logits and class probabilities (all decoded)."""
    from core.vision.inference import softmax_np

    raw = np.asarray(raw, np.float32)
    feats = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    inet = softmax_np(np.asarray(inet_logits, np.float32))
    top = np.argsort(-inet, axis=1)[:, :TOP_K_LABELS]
    return Encoded(
        features=feats.astype(np.float32),
        top_ids=top.astype(np.int32),
        top_probs=np.take_along_axis(inet, top, axis=1).astype(np.float32),
        probs=probs,
        ok=np.ones(len(feats), dtype=bool),
        reasons=[None] * len(feats),
    )


def concat(parts: Sequence[Encoded]) -> Encoded:
    probs = [p.probs for p in parts if p.probs is not None]
    sem = [p.semantic for p in parts if p.semantic is not None]
    return Encoded(
        features=np.concatenate([p.features for p in parts]),
        top_ids=np.concatenate([p.top_ids for p in parts]),
        top_probs=np.concatenate([p.top_probs for p in parts]),
        probs=np.concatenate(probs) if len(probs) == len(parts) and probs else None,
        ok=np.concatenate([p.ok for p in parts]),
        reasons=[r for p in parts for r in p.reasons],
        semantic=np.concatenate(sem) if len(sem) == len(parts) and sem else None,
    )


def iter_encoded(encoder: ImageEncoder, loader: DataLoader | ThreadLoader) -> Iterator[Encoded]:
    """Encoded batches in file order, as the workers decode them."""
    for x, ok, reason in loader:
        enc = encoder.encode_tensor(x)
        enc.ok = ok.numpy().astype(bool)
        enc.reasons = [r or None for r in reason]
        yield enc


def encode_loader(encoder: ImageEncoder, loader: DataLoader | ThreadLoader) -> Encoded:
    return concat(list(iter_encoded(encoder, loader)))


def stored_batches(
    encoder: ImageEncoder,
    cache_dir: str | Path,
    paths: Sequence[str],
    hashes: Sequence[str],
    batch_size: int,
    workers: int | None,
    encode_missing: bool = True,
    chunk: int = 512,
) -> tuple[Iterator[tuple[list[int], Encoded]], list[int]]:
    """(batches of (positions, Encoded), positions still to encode) for an encoder whose rows
    derive from stored backbone outputs (core.vision.encodings) (a partial run's:
    core.search.partial_rows.activation_batches): photos the store holds are read, not
    decoded; with `encode_missing` the rest are encoded here and added to the store (the
    returned list is then empty). Without a store identity nothing is read: every
    position comes back."""
    from core.vision.encodings import EncodingStore

    inference = encoder.outputs_inference()
    if inference is None:
        return iter(()), list(range(len(paths)))
    store = EncodingStore.at(cache_dir)
    ident = encoder.store_identity(inference)
    todo = store.missing(ident, hashes)
    absent = set(todo)
    hits = [i for i in range(len(paths)) if i not in absent]

    def run() -> Iterator[tuple[list[int], Encoded]]:
        from core.vision.features import stored_outputs

        late: list[int] = []  # in a shard found damaged while reading: encoded below
        for k in range(0, len(hits), chunk):
            pos = hits[k : k + chunk]
            try:
                outs = {
                    n: store.read(ident, [hashes[i] for i in pos], n) for n in inference.outputs
                }
            except KeyError:
                if not encode_missing:
                    raise
                late += pos
                continue
            enc = encoder.from_outputs(outs)
            enc.stored = True
            yield pos, enc
        rest = sorted(todo + late)
        if not encode_missing or not rest:
            return
        batches = stored_outputs(
            store,
            ident,
            inference,
            [paths[i] for i in rest],
            [hashes[i] for i in rest],
            batch_size,
            workers,
            encoder.device,
            unreadable_side=encoder.image_size,
            read=read_path_bytes,
        )
        for pos, out, ok, reasons in batches:
            enc = encoder.from_outputs(out)
            enc.ok = ok
            enc.reasons = [r or None for r in reasons]
            yield [rest[j] for j in pos], enc

    return run(), [] if encode_missing else todo


def _ref_size(trained: Any, size: int) -> int:
    """The ImageNet reference's input size: the run's, or a cross-backbone ensemble's first
    member's (the part of the canvas the reference reads)."""
    sizes = getattr(trained.model, "sizes", None)
    return int(sizes[0]) if sizes else size


def backbone_encoder(spec: EncoderSpec) -> ImageEncoder:
    """A backbone by name, or a trained run's backbone and head (the run decides the backbone).
    Reached through core.search.encoders.create_image_encoder."""
    from core.vision.device import pick_device

    run_dir, image_size, amp = spec.run, spec.image_size, spec.amp
    dev = pick_device(spec.device)
    if run_dir is not None:
        from core.vision.predict import imagenet_reference
        from core.vision.runs import load_trained

        trained = load_trained(run_dir, "best" if _has_best(run_dir) else "last", str(dev))
        ref, note = imagenet_reference(trained)
        from core.vision.inference import load_inference, load_run_inference

        own = ref is trained.backbone
        size = int(image_size or trained.config.image_size)
        # A linear probe's trunk is the pretrained backbone: its export (the one training
        # encoded with, already in the cache) runs it and the head maps the features to
        # classes, so no second export of the same trunk with a head attached.
        probe = trained.config.mode == "linear-probe" and own
        inference = (
            load_inference(trained.backbone, size, dev, amp=amp)
            if probe
            else load_run_inference(trained, size, amp=amp)
        )
        return ImageEncoder(
            backbone=trained.backbone,
            device=dev,
            image_size=size,
            amp=amp,
            run=trained,
            run_dir=str(Path(run_dir).resolve()),
            imagenet_ref=None if own else ref,
            imagenet_note=note,
            inference=inference,
            imagenet_inference=None
            if own or ref is None
            else load_inference(ref, _ref_size(trained, size), dev, amp=amp),
        )
    from core.vision.backbones import create_backbone
    from core.vision.inference import load_inference

    bb = create_backbone(spec.backbone)
    bb.model.to(dev, memory_format=torch.channels_last)
    size = int(image_size or bb.default_size)
    return ImageEncoder(bb, dev, size, amp, inference=load_inference(bb, size, dev, amp=amp))


def _has_best(run_dir: str | Path) -> bool:
    from core.vision.train import RunFiles

    return RunFiles(Path(run_dir)).best.exists()
