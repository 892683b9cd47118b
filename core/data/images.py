"""Safe image decoding. Nothing here raises on bad input: every problem becomes a reason.

Reasons for skipping (the file is unusable):
  zero-byte, not-an-image, truncated, unreadable, decompression-bomb, too-small
Notes for conversions (the file is used after fixing):
  converted from <mode>, exif-rotated, size WxH (resized at load)
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Refuse anything above this many pixels before decoding (a 150x150 data set never gets
# near it; a crafted PNG that decodes to gigabytes does).
MAX_PIXELS = 50_000_000
MIN_SIDE = 8
ImageFile.LOAD_TRUNCATED_IMAGES = False

SKIP_REASONS = (
    "zero-byte",
    "not-an-image",
    "truncated",
    "unreadable",
    "decompression-bomb",
    "too-small",
)


@dataclass
class ImageCheck:
    """What decoding a file found. `image` is RGB when the file is usable."""

    image: Image.Image | None
    reason: str | None = None  # why it was skipped
    note: str | None = None  # what was converted
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""

    @property
    def ok(self) -> bool:
        return self.image is not None


def to_rgb(im: Image.Image) -> tuple[Image.Image, str | None]:
    """Convert any PIL mode to RGB; transparent pixels go on white. Returns (image, note)."""
    if im.mode == "RGB":
        return im, None
    src = im.mode
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg, f"converted from {src}"
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits rather than clip.
        arr = im.convert("I")
        lo, hi = arr.getextrema()
        scale = 255.0 / max(1, hi - lo)
        im8 = arr.point(lambda v: (v - lo) * scale).convert("L")
        return im8.convert("RGB"), f"converted from {src}"
    return im.convert("RGB"), f"converted from {src}"


def check_image(source: str | Path | bytes, *, keep: bool = True) -> ImageCheck:
    """Decode fully (to catch truncation) and convert to RGB; never raises for bad data.

    `source` is a path or the file's bytes. With keep=False the decoded image is dropped
    after checking (cheap manifest building)."""
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        return ImageCheck(None, reason="unreadable", note=str(exc.strerror or exc))
    if len(data) == 0:
        return ImageCheck(None, reason="zero-byte")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            fmt = im.format or ""
            mode = im.mode
            if w * h > MAX_PIXELS:
                return ImageCheck(
                    None,
                    reason="decompression-bomb",
                    note=f"{w}x{h} pixels",
                    width=w,
                    height=h,
                    mode=mode,
                    format=fmt,
                )
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageCheck(None, reason="decompression-bomb", note=str(exc)[:120])
    except UnidentifiedImageError:
        return ImageCheck(None, reason="not-an-image")
    except OSError as exc:
        msg = str(exc)
        reason = "truncated" if "truncated" in msg or "broken data" in msg else "unreadable"
        return ImageCheck(None, reason=reason, note=msg[:120])
    except Exception as exc:  # PIL raises assorted errors on hostile files
        return ImageCheck(None, reason="unreadable", note=f"{type(exc).__name__}: {exc}"[:120])
    if min(w, h) < MIN_SIDE:
        return ImageCheck(
            None, reason="too-small", note=f"{w}x{h}", width=w, height=h, mode=mode, format=fmt
        )
    notes = []
    try:
        rotated = ImageOps.exif_transpose(im)
    except Exception:
        rotated = im
    if rotated is not None and rotated.size != im.size:
        notes.append("exif-rotated")
        im = rotated
    rgb, conv = to_rgb(im)
    if conv:
        notes.append(conv)
    return ImageCheck(
        rgb if keep else _CHECKED,
        note="; ".join(notes) or None,
        width=w,
        height=h,
        mode=mode,
        format=fmt,
    )


# Placeholder so ImageCheck.ok stays True when the decoded pixels are not kept.
_CHECKED = Image.new("RGB", (1, 1))


def load_rgb(path: str | Path) -> Image.Image:
    """Load a usable image as RGB or raise BadImageError with the reason."""
    check = check_image(path)
    if check.image is None:
        raise BadImageError(Path(path), check.reason, check.note)
    return check.image


class BadImageError(ValueError):
    def __init__(self, path: Path | None, reason: str | None, note: str | None = None):
        self.path = path
        self.reason = reason or "unreadable"
        self.note = note
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{self.reason}" + (f" ({note})" if note else ""))
