"""Hardening: one display conversion that cannot fail, decoded size limited from the header,
large images decoded reduced (issue 14, "Crashes and resource use")."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import images
from core.data.images import check_image, display_image, open_for_display, size_problem
from tests.hostile import jpeg_bytes, png16, strip_png


def _as_jpeg(im: Image.Image) -> tuple[int, int]:
    """The size a JPEG of `im` decodes back to."""
    buf = io.BytesIO()
    im.save(buf, "JPEG")  # what st.image does with a PIL image: fails on I;16 and friends
    return Image.open(io.BytesIO(buf.getvalue())).size


MODES = {
    "I;16": lambda: Image.fromarray((np.arange(1024).reshape(32, 32) * 60).astype(np.uint16)),
    "I": lambda: Image.fromarray(np.arange(1024, dtype=np.int32).reshape(32, 32) * 1000),
    "F": lambda: Image.fromarray(np.linspace(-5, 5, 1024, dtype=np.float32).reshape(32, 32)),
    "F-nan": lambda: Image.fromarray(np.full((32, 32), np.nan, np.float32)),
    "CMYK": lambda: Image.new("CMYK", (32, 32), (10, 20, 30, 40)),
    "P": lambda: Image.new("P", (32, 32), 3),
    "1": lambda: Image.new("1", (32, 32), 1),
    "LA": lambda: Image.new("LA", (32, 32), (100, 50)),
    "RGBA": lambda: Image.new("RGBA", (32, 32), (1, 2, 3, 0)),
    "YCbCr": lambda: Image.new("YCbCr", (32, 32), (100, 120, 130)),
    "HSV": lambda: Image.new("HSV", (32, 32), (10, 20, 30)),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_display_conversion_accepts_every_mode(mode: str) -> None:
    out = display_image(MODES[mode](), max_side=16)
    assert out.mode == "RGB" and out.size == (16, 16)  # 32x32 reduced, not a placeholder
    assert _as_jpeg(out) == (16, 16)


def test_sixteen_bit_png_is_shown_with_its_contrast(tmp_path: Path) -> None:
    path = png16(tmp_path / "deep.png")
    check = check_image(path)
    assert check.ok and check.note == "converted from I;16"
    shown = open_for_display(path)
    arr = np.asarray(shown)
    assert shown.mode == "RGB" and arr.min() == 0 and arr.max() == 255  # stretched, not clipped
    assert _as_jpeg(shown) == shown.size


def test_missing_or_bad_files_become_placeholders(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    for source in (tmp_path / "gone.jpg", tmp_path / "bad.jpg", b"", tmp_path):
        out = open_for_display(source)
        side = images.PLACEHOLDER_SIZE
        assert out.mode == "RGB" and _as_jpeg(out) == (side, side)
        assert out.getpixel((side - 1, side - 1)) == (225, 225, 225)  # the placeholder's grey


def test_strip_png_is_refused_from_its_header(tmp_path: Path) -> None:
    path = strip_png(tmp_path / "strip.png")
    assert path.stat().st_size < 10_000  # a few KB on disk...
    start = time.perf_counter()
    check = check_image(path)
    assert time.perf_counter() - start < 0.5  # ...and never decoded
    assert (check.reason, check.width, check.height) == ("too-large", 150_000, 8)


def test_size_limits_by_width_height_pixels_and_aspect() -> None:
    assert size_problem(150, 150) is None
    assert size_problem(4000, 300) is None  # a 13:1 panorama is kept
    assert size_problem(images.MAX_SIDE + 1, 2000)[0] == "too-large"
    assert size_problem(9000, 9000)[0] == "decompression-bomb"  # 81 MP > 50 MP
    assert size_problem(8000, 100)[0] == "extreme-aspect"


def test_large_images_are_decoded_reduced(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(images, "LOAD_MAX_SIDE", 256)
    big = tmp_path / "big.jpg"
    Image.new("RGB", (1200, 900), (10, 120, 30)).save(big, quality=85)
    check = check_image(big)
    assert check.ok and (check.width, check.height) == (1200, 900)  # the file's own size
    assert max(check.image.size) <= 256 and "reduced from 1200x900" in check.note
    png = tmp_path / "big.png"
    Image.new("P", (1000, 600), 2).save(png)
    check = check_image(png)
    assert check.ok and max(check.image.size) <= 256 and check.image.mode == "RGB"


def test_truncated_jpeg_is_named_truncated() -> None:
    assert check_image(jpeg_bytes(1, 64)[:300]).reason == "truncated"
