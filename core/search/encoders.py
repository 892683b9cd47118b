"""The one way to get an encoder, in the style of open_clip's `create_model_and_transforms`:
the identity that index.json stores (or an `EncoderSpec`) goes in, a ready encoder with its
matching preprocessing (`transform()`) comes out.

    image = create_image_encoder(EncoderSpec.from_identity(meta["encoder"]))
    image = create_image_encoder(image_size=64, device="cpu")     # the default backbone
    text = create_text_encoder(meta)                               # the index's query side

Image encoders: a timm backbone or a trained run (core.search.embed.ImageEncoder), or an
open_clip model (core.search.clip.ClipEncoder, backbone "clip:<model>"). Text encoders: CLIP's
text tower when the index's semantic column is the encoder's own space, else the MiniLM
sentence encoder (core.search.sentence), as light as available for queries.

Model code is imported only when an encoder is made: a text query process that finds the
ONNX export never imports torch.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from core.search.backend import (
    CLIP_PREFIX,
    DEFAULT_BACKBONE,
    EncoderBackend,
    EncoderSpec,
    TextBackend,
    is_clip,
)

if TYPE_CHECKING:
    from core.search.clip import ClipEncoder
    from core.search.embed import ImageEncoder

__all__ = [
    "DEFAULT_BACKBONE",
    "EncoderBackend",
    "EncoderSpec",
    "TextBackend",
    "create_image_encoder",
    "create_text_encoder",
    "spec_for_index",
]


def create_image_encoder(
    spec: EncoderSpec | dict[str, Any] | None = None, device: str | None = None, **fields: Any
) -> ImageEncoder | ClipEncoder:
    """An image encoder from a spec, or from an index's encoder identity (a dict); `device`
    and `fields` (EncoderSpec's: backbone, run, image_size, weights, amp) override it."""
    if isinstance(spec, dict):
        spec = EncoderSpec.from_identity(spec)
    spec = spec or EncoderSpec()
    if device is not None:
        fields["device"] = device
    if fields:
        spec = dataclasses.replace(spec, **fields)
    if spec.is_clip:
        from core.search.clip import clip_encoder

        return clip_encoder(spec)
    from core.search.embed import backbone_encoder

    return backbone_encoder(spec)


def create_text_encoder(
    meta: dict[str, Any], device: str | None = None, light: bool = True
) -> TextBackend:
    """The text encoder of an index's semantic space (`meta`: its index.json). `light`
    (queries): MiniLM on ONNX Runtime when exported, else on torch; False gives
    sentence-transformers, what the export is checked against (indexing embeds with the
    export itself: core.search.sentence.index_text_encoder)."""
    if (meta.get("semantic") or {}).get("source") == "encoder":
        ident = meta.get("encoder", {})
        if not is_clip(ident):
            raise ValueError("this index was not built with --encoder clip")
        from core.search.clip import clip_text

        return clip_text(EncoderSpec.from_identity(ident, device))
    from core.search.sentence import TextEncoder, light_text_encoder

    return light_text_encoder() if light else TextEncoder.load(device)


def spec_for_index(
    encoder: str | None, model: str | None, weights: str | None, meta: dict[str, Any]
) -> EncoderSpec | None:
    """`python -m core index`: the CLIP spec when `--encoder clip` is asked for, or when the
    index was built with CLIP (an update keeps its model and weights); else None (the
    backbone or run options decide)."""
    from core.search.clip import DEFAULT_MODEL

    old = meta.get("encoder", {})
    if encoder not in (None, "clip"):
        if is_clip(old):
            raise ValueError(
                f"the index was built with {old['backbone']}, not {encoder!r}; "
                "use another --index folder or --encoder clip"
            )
        return None
    if encoder is None and not is_clip(old):
        return None
    if is_clip(old):
        prior = EncoderSpec.from_identity(old)
        model = model or prior.clip_model
        weights = weights or prior.weights
    return EncoderSpec(CLIP_PREFIX + (model or DEFAULT_MODEL), weights=weights)
