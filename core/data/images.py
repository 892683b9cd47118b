"""Safe image decoding. Nothing here raises on bad input: every problem becomes a reason.

Reasons for skipping (the file is unusable):
  zero-byte, not-an-image, truncated, unreadable, decompression-bomb, too-large,
  extreme-aspect, too-small
Notes for conversions (the file is used after fixing):
  converted from <mode>, exif-rotated, reduced from WxH, size WxH (resized at load)

Limits are checked from the header, before any pixel is decoded: total pixels (a crafted
PNG that decodes to gigabytes), each side, and the aspect ratio (a 150000x8 strip is only
1.2 MP, but resizing its short side to a model's input makes it gigabytes). Large images are
decoded reduced (JPEG `draft`, then `reduce`) to at most LOAD_MAX_SIDE on the long side.

`display_image` is the one conversion every image shown in the app goes through: any mode
the decoder accepts (16-bit, float, CMYK, palette, alpha) becomes 8-bit RGB, and it never
raises.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFile, ImageOps, UnidentifiedImageError

from core.io import read_regular

log = logging.getLogger(__name__)

# Refuse anything above this many pixels before decoding (a 150x150 data set never gets
# near it; a crafted PNG that decodes to gigabytes does).
MAX_PIXELS = 50_000_000
MAX_SIDE = 20_000  # width and height each (a 50 MP photo is about 8700x5800)
MAX_ASPECT = 20.0  # long side / short side; panoramas up to 20:1 are kept
LOAD_MAX_SIDE = 4096  # decode larger images reduced to about this long side
MIN_SIDE = 8
ImageFile.LOAD_TRUNCATED_IMAGES = False

SKIP_REASONS = (
    "zero-byte",
    "not-an-image",
    "truncated",
    "unreadable",
    "decompression-bomb",
    "too-large",
    "extreme-aspect",
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
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        # 16/32-bit or float grayscale: stretch the used range to 8 bits rather than clip.
        arr = im.convert("F")
        lo, hi = arr.getextrema()
        lo = lo if math.isfinite(lo) else 0.0
        hi = hi if math.isfinite(hi) else lo + 1.0
        scale = 255.0 / max(1e-12, hi - lo) if hi > lo else 0.0
        im8 = arr.point(lambda v: (v - lo) * scale).convert("L")
        return im8.convert("RGB"), f"converted from {src}"
    return im.convert("RGB"), f"converted from {src}"


def size_problem(w: int, h: int) -> tuple[str, str] | None:
    """(reason, note) when a w x h image must not be decoded, from its header alone."""
    if w * h > MAX_PIXELS:
        return "decompression-bomb", f"{w}x{h} pixels (limit {MAX_PIXELS:,})"
    if max(w, h) > MAX_SIDE:
        return "too-large", f"{w}x{h} (a side over {MAX_SIDE:,} pixels)"
    if min(w, h) >= 1 and max(w, h) / min(w, h) > MAX_ASPECT:
        return "extreme-aspect", f"{w}x{h} (aspect ratio over {MAX_ASPECT:g}:1)"
    return None


def _reduce_factor(w: int, h: int, max_side: int) -> int:
    return max(1, math.ceil(max(w, h) / max_side))


def _decode_reduced(im: Image.Image, max_side: int) -> Image.Image:
    """Load `im` at about `max_side` on its long side: JPEGs decode at 1/2..1/8 scale
    (`draft`), anything still larger is reduced by an integer factor after loading."""
    w, h = im.size
    factor = _reduce_factor(w, h, max_side)
    if factor > 1 and im.format == "JPEG":
        im.draft(None, (math.ceil(w / factor), math.ceil(h / factor)))
    im.load()
    factor = _reduce_factor(*im.size, max_side)
    if factor > 1:
        try:
            im = im.reduce(factor)
        except ValueError:  # modes reduce() does not take (P, 1, I;16): convert first
            im = to_rgb(im)[0].reduce(factor)
    return im


def check_image(source: str | Path | bytes, *, keep: bool = True) -> ImageCheck:
    """Decode fully (to catch truncation) and convert to RGB; never raises for bad data.

    `source` is a path or the file's bytes. With keep=False the decoded image is dropped
    after checking (cheap manifest building)."""
    try:
        # Only a regular file of bounded size: a /dev/zero link named z.jpg is refused unread.
        data = source if isinstance(source, bytes) else read_regular(source)
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
            problem = size_problem(w, h)
            if problem is not None:
                return ImageCheck(
                    None,
                    reason=problem[0],
                    note=problem[1],
                    width=w,
                    height=h,
                    mode=mode,
                    format=fmt,
                )
            im = _decode_reduced(im, LOAD_MAX_SIDE)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageCheck(None, reason="decompression-bomb", note=str(exc)[:120])
    except UnidentifiedImageError:
        return ImageCheck(None, reason="not-an-image")
    except OSError as exc:
        msg = str(exc)
        low = msg.lower()
        reason = "truncated" if "truncated" in low or "broken data" in low else "unreadable"
        return ImageCheck(None, reason=reason, note=msg[:120])
    except Exception as exc:  # PIL raises assorted errors on hostile files
        return ImageCheck(None, reason="unreadable", note=f"{type(exc).__name__}: {exc}"[:120])
    if min(w, h) < MIN_SIDE:
        return ImageCheck(
            None, reason="too-small", note=f"{w}x{h}", width=w, height=h, mode=mode, format=fmt
        )
    notes = []
    if im.size != (w, h):
        notes.append(f"reduced from {w}x{h}")
    try:
        rotated = ImageOps.exif_transpose(im)
    except Exception:
        rotated = im
    if rotated is not None and rotated.size != im.size:
        notes.append("exif-rotated")
        im = rotated
    try:
        rgb, conv = to_rgb(im)
    except Exception as exc:  # a mode PIL decodes but cannot convert
        return ImageCheck(None, reason="unreadable", note=f"mode {mode}: {exc}"[:120])
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


# --- display ------------------------------------------------------------------------------------

PLACEHOLDER_SIZE = 256


def placeholder(text: str, size: int = PLACEHOLDER_SIZE) -> Image.Image:
    """A grey tile with a short message, shown where an image cannot be."""
    im = Image.new("RGB", (size, size), (225, 225, 225))
    draw = ImageDraw.Draw(im)
    words, lines, line = text.split(), [], ""
    for word in words:  # wrap at about 28 characters
        if len(line) + len(word) + 1 > 28 and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    for i, ln in enumerate(lines[:8]):
        draw.text((10, 10 + 16 * i), ln, fill=(80, 80, 80))
    return im


def display_image(im: Image.Image, max_side: int | None = None) -> Image.Image:
    """Any decoded image as 8-bit RGB (at most `max_side` on the long side): what every image
    the app shows goes through. Never raises: an image that cannot be converted becomes a
    placeholder saying so."""
    try:
        w, h = im.size
        problem = size_problem(w, h)
        if problem is not None:
            return placeholder(f"not shown: {problem[0]} ({problem[1]})")
        rgb = to_rgb(im)[0]
        if max_side and max(rgb.size) > max_side:
            rgb = rgb.copy()
            rgb.thumbnail((max_side, max_side))
        return rgb
    except Exception as exc:  # display must never crash a page
        log.warning("cannot display an image of mode %s: %s", getattr(im, "mode", "?"), exc)
        return placeholder(f"cannot display this image ({type(exc).__name__})")


def open_for_display(source: str | Path | bytes, max_side: int | None = 512) -> Image.Image:
    """A file (or its bytes) as an 8-bit RGB image to show, or a placeholder naming why it
    cannot be shown (missing file, not an image, truncated...). Never raises."""
    if not isinstance(source, bytes) and not Path(source).exists():
        return placeholder("file not found (moved or deleted since it was indexed)")
    check = check_image(source)
    if check.image is None:
        return placeholder(
            f"cannot show: {check.reason}" + (f" ({check.note})" if check.note else "")
        )
    return display_image(check.image, max_side)
