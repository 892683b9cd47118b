"""What the index needs from an encoder: two small protocols that every backend implements.

`EncoderBackend` turns images into what the table stores (backbone vector, ImageNet top-5,
run probabilities, and for encoders with their own image-text space such as CLIP the
semantic vector itself). Both indexing engines use it: the local engine in this process, the
Ray engine through `spec()`, a picklable recipe that loads the same backend in an actor.
Neither engine imports the other, and neither knows which model is behind the protocol.

`TextBackend` turns query text into the semantic column's space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class EncoderSpec(Protocol):
    """A picklable recipe for the same encoder on another process or node."""

    image_size: int  # input size: decoding workers give undecodable files a blank of it

    def load(self) -> EncoderBackend: ...


@runtime_checkable
class EncoderBackend(Protocol):
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

    imagenet_note: str

    def identity(self) -> dict[str, Any]:
        """What the stored vectors depend on; a different identity means re-encoding."""
        ...

    def transform(self) -> Callable[[Any], Any]:
        """PIL image -> model input tensor (runs in decoding workers and Ray tasks)."""
        ...

    def encode_tensor(self, x: Any) -> Any:  # -> core.search.embed.Encoded
        ...

    def encode_images(self, images: Sequence[Any]) -> Any:  # -> core.search.embed.Encoded
        ...

    def loader(self, paths: Sequence[str], batch_size: int, workers: int) -> Any: ...

    def spec(self, device: str | None = None) -> EncoderSpec: ...


@runtime_checkable
class TextBackend(Protocol):
    """Query text -> unit vectors in the semantic column's space."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...
