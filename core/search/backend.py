"""What search needs from an encoder: the recipe that names one (`EncoderSpec`), what an image
encoder returns (`Encoded`) and two small protocols that every backend implements.

`EncoderBackend` turns images into what the table stores (backbone vector, ImageNet top-5,
run probabilities, and for encoders with their own image-text space such as CLIP the
semantic vector itself). Both indexing engines use it: the local engine in this process, the
Ray engine through `spec()`, the picklable `EncoderSpec` that core.search.encoders turns into
the same backend in an actor. Neither engine imports the other, and neither knows which model
is behind the protocol.

`TextBackend` turns query text into the semantic column's space.

This module imports no model code (numpy only), so every backend and both engines can import
it without a circle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

DEFAULT_BACKBONE = "efficientnet_lite0"
CLIP_PREFIX = "clip:"  # an identity's backbone "clip:<model>": an open_clip model


@dataclass
class Encoded:
    """Per image: L2-normalised features, ImageNet top-5 and optional run probabilities."""

    features: np.ndarray  # (n, d) float32, unit length
    top_ids: np.ndarray  # (n, 5) int
    top_probs: np.ndarray  # (n, 5) float32
    probs: np.ndarray | None  # (n, n classes) from the run, or None
    ok: np.ndarray  # (n,) bool: False where the file could not be decoded
    reasons: list[str | None] = field(default_factory=list)
    # (n, D) unit vectors in the encoder's own image-text space (CLIP); None for backbones
    # whose semantic vectors come from the mapping fitted at index time.
    semantic: np.ndarray | None = None
    # Read from the encoding store (core.vision.encodings), not decoded: a build counts these
    # apart, so the rate of the photos it decodes is not inflated by the fast reads.
    stored: bool = False


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder, picklable: what core.search.encoders.create_image_encoder builds from,
    in this process or in a Ray actor. `from_identity` reads it back from the identity that
    index.json stores, so queries load the encoder the index was built with."""

    backbone: str = DEFAULT_BACKBONE  # a timm backbone name, or "clip:<open_clip model>"
    run: str | None = None  # a trained run's folder (it decides the backbone)
    image_size: int | None = None  # None: the backbone's (or run's) own
    weights: str | None = None  # CLIP: a pretrained tag, a weights file or "random"
    amp: bool = True
    device: str | None = None  # None: the best available

    @property
    def is_clip(self) -> bool:
        return self.backbone.startswith(CLIP_PREFIX)

    @property
    def clip_model(self) -> str:
        return self.backbone[len(CLIP_PREFIX) :]

    @classmethod
    def from_identity(cls, identity: dict, device: str | None = None) -> EncoderSpec:
        """The spec of an index's `encoder` entry (an `EncoderBackend.identity()`)."""
        backbone = str(identity.get("backbone") or DEFAULT_BACKBONE)
        if backbone.startswith(CLIP_PREFIX):
            # the argument the index was built with, not its stamped identity
            return cls(backbone, weights=identity.get("clip_weights_arg"), device=device)
        return cls(backbone, identity.get("run"), identity.get("image_size"), device=device)


def is_clip(identity: dict) -> bool:
    """Whether an index's encoder identity names a CLIP model."""
    return str(identity.get("backbone", "")).startswith(CLIP_PREFIX)


@runtime_checkable
class EncoderBackend(Protocol):
    image_size: int  # input size: decoding workers give undecodable files a blank of it
    imagenet_note: str

    @property
    def feature_dim(self) -> int:
        """Dimension of the backbone `vector` column."""
        ...

    @property
    def semantic_dim(self) -> int | None:
        """Dimension of the encoder's own image-text space (CLIP: 512); None when a mapping
        into the sentence space is fitted at index time."""
        ...

    @property
    def class_names(self) -> list[str]: ...

    @property
    def imagenet_classes(self) -> list[str]: ...

    def identity(self) -> dict[str, Any]:
        """What the stored vectors depend on; a different identity means re-encoding."""
        ...

    def transform(self) -> Callable[[Any], Any]:
        """PIL image -> model input tensor (runs in decoding workers and Ray tasks)."""
        ...

    def encode_tensor(self, x: Any) -> Encoded: ...

    def encode_images(self, images: Sequence[Any]) -> Encoded: ...

    def loader(self, paths: Sequence[str], batch_size: int, workers: int) -> Any: ...

    def spec(self, device: str | None = None) -> EncoderSpec: ...


@runtime_checkable
class TextBackend(Protocol):
    """Query text -> unit vectors in the semantic column's space."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...
