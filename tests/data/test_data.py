"""Data layer: layouts, every bad-input case, the manifest cache and duplicates."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import images
from core.data.dataset import DatasetError, find_dataset, scan_class_folder
from core.data.images import check_image, load_rgb
from core.data.manifest import build_manifest
from tests.helpers import require_shared, run_cli


def _jpeg(path: Path, color=(200, 30, 30), size=(32, 32), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format="JPEG")
    return path


def _png(path: Path, im: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")
    return path


# --- single files -------------------------------------------------------------------------


def test_good_rgb_jpeg(tmp_path: Path) -> None:
    c = check_image(_jpeg(tmp_path / "a.jpg"))
    assert c.ok and c.reason is None and c.note is None
    assert (c.width, c.height, c.mode, c.format) == (32, 32, "RGB", "JPEG")
    assert c.image.mode == "RGB"


def test_zero_byte(tmp_path: Path) -> None:
    (tmp_path / "z.jpg").write_bytes(b"")
    assert check_image(tmp_path / "z.jpg").reason == "zero-byte"


def test_text_with_image_extension(tmp_path: Path) -> None:
    (tmp_path / "t.jpg").write_text("this is not a picture\n" * 10)
    assert check_image(tmp_path / "t.jpg").reason == "not-an-image"


def test_truncated_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    c = check_image(tmp_path / "cut.jpg")
    assert not c.ok and c.reason == "truncated"


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    assert check_image(tmp_path / "nope.jpg").reason == "unreadable"


@pytest.mark.parametrize(
    ("mode", "color"),
    [("L", 128), ("RGBA", (10, 20, 30, 0)), ("LA", (50, 255)), ("I;16", 40000), ("1", 1)],
)
def test_non_rgb_png_converted(tmp_path: Path, mode: str, color) -> None:
    path = _png(tmp_path / f"{mode.replace(';', '')}.png", Image.new(mode, (20, 20), color))
    c = check_image(path)
    assert c.ok and c.image.mode == "RGB"
    assert c.note is not None and c.note.startswith("converted from")


def test_transparent_pixels_go_on_white(tmp_path: Path) -> None:
    path = _png(tmp_path / "rgba.png", Image.new("RGBA", (10, 10), (255, 0, 0, 0)))
    assert load_rgb(path).getpixel((5, 5)) == (255, 255, 255)


def test_cmyk_jpeg_converted(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, "JPEG")
    c = check_image(path)
    assert c.ok and c.mode == "CMYK" and c.note == "converted from CMYK"
    r, g, b = c.image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60  # CMYK (0,255,255,0) is red


def test_palette_gif_converted(tmp_path: Path) -> None:
    path = tmp_path / "p.gif"
    Image.new("RGB", (16, 16), (0, 0, 255)).convert("P").save(path, "GIF")
    c = check_image(path)
    assert c.ok and c.note == "converted from P" and c.image.getpixel((1, 1))[2] > 200


def test_too_small(tmp_path: Path) -> None:
    c = check_image(_png(tmp_path / "tiny.png", Image.new("RGB", (3, 40))))
    assert c.reason == "too-small" and c.note == "3x40"


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    # 8000x8000 1-bit PNG: a few kB on disk, 64 megapixels once decoded.
    path = _png(tmp_path / "bomb.png", Image.new("1", (8000, 8000)))
    assert path.stat().st_size < 200_000
    c = check_image(path)
    assert c.reason == "decompression-bomb" and (c.width, c.height) == (8000, 8000)


def test_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    assert check_image(_jpeg(tmp_path / "a.jpg")).reason == "decompression-bomb"


def test_load_rgb_raises_with_reason(tmp_path: Path) -> None:
    (tmp_path / "z.jpg").write_bytes(b"")
    with pytest.raises(images.BadImageError, match="zero-byte"):
        load_rgb(tmp_path / "z.jpg")


# --- layouts ------------------------------------------------------------------------------


def _make_tree(root: Path, splits: dict[str, dict[str, int]]) -> None:
    for split, classes in splits.items():
        for cls, n in classes.items():
            for i in range(n):
                # Distinct colours per class and index, so only deliberate copies are duplicates.
                _jpeg(root / split / cls / f"{i}.jpg", color=(i * 20, sum(map(ord, cls)) % 256, 0))


def test_kaggle_layout_with_pred(tmp_path: Path) -> None:
    _make_tree(tmp_path, {"seg_train": {"sea": 2, "forest": 3}, "seg_test": {"sea": 1}})
    _jpeg(tmp_path / "seg_pred" / "x.jpg")
    ds = find_dataset(tmp_path)
    assert ds.layout == "kaggle" and ds.class_names == ["forest", "sea"]
    assert ds.splits == ["train", "test", "pred"]
    assert ds.counts()["train"] == {"forest": 3, "sea": 2}
    assert [r.label for r in ds.split("pred")] == [None]


def test_kaggle_zip_doubled_folders(tmp_path: Path) -> None:
    _make_tree(tmp_path / "seg_train", {"seg_train": {"sea": 2}})
    _make_tree(tmp_path / "seg_test", {"seg_test": {"sea": 1}})
    ds = find_dataset(tmp_path)
    assert ds.counts() == {"train": {"sea": 2}, "test": {"sea": 1}}


def test_plain_layout(tmp_path: Path) -> None:
    _make_tree(tmp_path, {"train": {"a": 1, "b": 1}, "test": {"a": 1}})
    ds = find_dataset(tmp_path)
    assert ds.layout == "plain" and ds.class_names == ["a", "b"]


def test_class_folders_only(tmp_path: Path) -> None:
    _make_tree(tmp_path, {"x": {"a": 2}})
    ds = scan_class_folder(tmp_path / "x", split="train")
    assert ds.layout == "class-folders" and len(ds.split("train")) == 2


def test_non_image_files_are_reported(tmp_path: Path) -> None:
    _make_tree(tmp_path, {"seg_train": {"sea": 1}})
    (tmp_path / "seg_train" / "sea" / "notes.txt").write_text("hi")
    (tmp_path / "seg_train" / "stray.jpg").write_bytes(b"x")
    ds = find_dataset(tmp_path)
    reasons = {p.name: r for p, r in ds.ignored}
    assert reasons == {
        "notes.txt": "not an image extension (.txt)",
        "stray.jpg": "file outside a class folder",
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "no-images"])
def test_bad_folder_one_clear_message(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "data"
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("x")
    elif kind == "no-images":
        (target / "seg_train" / "sea").mkdir(parents=True)
        (target / "seg_train" / "sea" / "a.txt").write_text("x")
    with pytest.raises(DatasetError) as err:
        find_dataset(target)
    msg = str(err.value)
    assert str(target) in msg and "seg_train/<class>/" in msg and "\n" not in msg


# --- manifest -----------------------------------------------------------------------------


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    root = tmp_path / "messy"
    _make_tree(root, {"seg_train": {"sea": 3, "street": 2}, "seg_test": {"sea": 1}})
    (root / "seg_train" / "sea" / "empty.jpg").write_bytes(b"")
    (root / "seg_train" / "sea" / "text.jpg").write_text("nope")
    _png(root / "seg_train" / "street" / "gray.png", Image.new("L", (32, 32), 90))
    _png(root / "seg_train" / "street" / "odd.png", Image.new("RGB", (32, 20), (1, 2, 3)))
    # The same bytes filed under two classes.
    data = (root / "seg_train" / "sea" / "0.jpg").read_bytes()
    (root / "seg_train" / "street" / "copy_of_sea0.jpg").write_bytes(data)
    return root


MANIFEST_COLUMNS = {"path", "split", "class", "width", "height", "mode", "bytes", "sha256"}


def test_manifest_counts_every_problem(messy: Path, tmp_path: Path) -> None:
    m = build_manifest(find_dataset(messy), tmp_path / "cache")
    assert len(m.df) == 11
    assert set(m.df.columns) >= MANIFEST_COLUMNS
    assert m.reason_counts() == {
        "skipped: zero-byte": 1,
        "skipped: not-an-image": 1,
        "used: converted from L": 1,
        "used: size other than 32x32 (resized at load)": 1,
    }
    assert len(m.usable()) == 9 and len(m.usable("test")) == 1
    paths, labels = m.paths_labels("train")
    assert len(paths) == len(labels) == 8


def test_manifest_duplicates_across_classes(messy: Path, tmp_path: Path) -> None:
    m = build_manifest(find_dataset(messy), tmp_path / "cache")
    cross = m.cross_class_duplicates()
    assert sorted(cross["class"]) == ["sea", "sea", "street"]  # test/sea/0 is identical too
    assert cross["sha256"].nunique() == 1


def test_manifest_cache_reuses_and_invalidates(messy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = build_manifest(find_dataset(messy), cache)
    assert first.inspected == 11
    second = build_manifest(find_dataset(messy), cache)
    assert second.inspected == 0 and second.from_cache == 11
    assert second.df.drop(columns="note").equals(first.df.drop(columns="note"))
    # Change one file: only that one is decoded again.
    target = messy / "seg_train" / "sea" / "empty.jpg"
    _jpeg(target)
    os.utime(target, ns=(1, 1))
    third = build_manifest(find_dataset(messy), cache)
    assert third.inspected == 1
    assert "skipped: zero-byte" not in third.reason_counts()
    # A new file is picked up, a deleted one leaves.
    _jpeg(messy / "seg_test" / "sea" / "new.jpg")
    (messy / "seg_train" / "sea" / "text.jpg").unlink()
    fourth = build_manifest(find_dataset(messy), cache)
    assert fourth.inspected == 1 and len(fourth.df) == 11


def test_manifest_survives_damaged_cache(messy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build_manifest(find_dataset(messy), cache)
    for f in (cache / "manifests").glob("*.parquet"):
        f.write_bytes(b"garbage")
    assert build_manifest(find_dataset(messy), cache).inspected == 11


# --- real data ----------------------------------------------------------------------------


def test_real_intel_data_set(tmp_path: Path) -> None:
    root = require_shared("intel")
    ds = find_dataset(root)
    assert ds.layout == "kaggle"
    assert ds.class_names == ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    assert len(ds.split("train")) == 8741 and len(ds.split("test")) == 1087
    m = build_manifest(ds, tmp_path / "cache")
    assert len(m.usable()) == 9828
    # The README's known case: one file filed under buildings and street.
    cross = m.cross_class_duplicates()
    pair = cross[cross["path"].str.endswith(("buildings/5069.jpg", "street/2764.jpg"))]
    assert pair["sha256"].nunique() == 1 and set(pair["class"]) == {"buildings", "street"}
    # Sizes read again from each file's header, independently of the manifest.
    sizes = Counter(Image.open(p).size for p in m.usable()["path"])
    assert sizes.most_common(1)[0][0] == (150, 150)
    odd = sum(n for size, n in sizes.items() if size != (150, 150))
    assert odd > 0 and len(m.odd_sizes()) == odd and (m.odd_sizes()["width"] == 150).all()


# --- CLI ----------------------------------------------------------------------------------


def test_cli_dataset_json(messy: Path, tmp_path: Path) -> None:
    res = run_cli("dataset", "--data", messy, "--cache", tmp_path / "c", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["layout"] == "kaggle" and out["n_files"] == 11 and out["n_usable"] == 9
    assert out["counts"]["train"] == {"sea": 3, "street": 5}
    assert out["problems"]["skipped: zero-byte"] == 1
    assert len(out["cross_class_duplicates"]) == 1


def test_cli_bad_folder(tmp_path: Path) -> None:
    res = run_cli("dataset", "--data", tmp_path / "none")
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
