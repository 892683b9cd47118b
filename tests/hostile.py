"""Generated hostile inputs for the hardening tests (nothing here is committed as a file)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png16(path: Path, size: int = 48) -> Path:
    """A 16-bit grayscale PNG (mode I;16): it used to crash the app's image display."""
    arr = (np.arange(size * size).reshape(size, size) * 20).astype(np.uint16)
    Image.fromarray(arr).save(path)
    return path


def strip_png(path: Path, width: int = 150_000, height: int = 8) -> Path:
    """A few-KB PNG of 150000x8 pixels: under the pixel limit, far over any side limit."""
    Image.new("L", (width, height), 128).save(path, optimize=True)
    return path


def symlink_loop(folder: Path, name: str = "loop.jpg") -> Path:
    """`name` -> `name`.b -> `name`: opening it fails with ELOOP."""
    a, b = folder / name, folder / f"{name}.b"
    os.symlink(b.name, a)
    os.symlink(a.name, b)
    return a


def make_hostile_tree(root: Path) -> dict[str, Path]:
    """A data folder (train/ and test/ class folders plus an extra/ folder) holding one of
    each hostile file beside a few good JPEGs, and loose hostile text files. Returns named
    paths."""
    paths: dict[str, Path] = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("forest", "sea"):
            d = root / "data" / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"good{i}.jpg").write_bytes(jpeg_bytes(hash((split, cls, i)) % 1000))
    bad = root / "data" / "train" / "forest"
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(jpeg_bytes(7, 64)[:300])
    (bad / "notimage.png").write_bytes(b"hello, I am text")
    paths["png16"] = png16(bad / "deep16.png")
    paths["strip"] = strip_png(bad / "strip.png")
    paths["loop"] = symlink_loop(bad)
    paths["devzero"] = bad / "devzero.jpg"  # reading it never ends: never read at all
    os.symlink("/dev/zero", paths["devzero"])
    paths["fifo"] = bad / "fifo.jpg"  # opening it for reading blocks until a writer comes
    os.mkfifo(paths["fifo"])
    (root / "data" / "extra").mkdir()
    (root / "data" / "extra" / "x.jpg").write_bytes(jpeg_bytes(3))
    paths["data"] = root / "data"
    paths["train"] = root / "data" / "train"
    paths["test"] = root / "data" / "test"
    paths["good"] = root / "data" / "test" / "sea" / "good0.jpg"

    paths["latin1"] = root / "latin1.txt"
    paths["latin1"].write_bytes("château près du lac\nun café au bord\n".encode("latin-1"))
    paths["wrong_header"] = root / "wrong.csv"
    paths["wrong_header"].write_text(
        "filename,text\n" + "".join(f"img{i}.jpg,a dog on a beach {i}\n" for i in range(5)),
        encoding="utf-8",
    )
    paths["garbage_json"] = root / "garbage.json"
    paths["garbage_json"].write_bytes(b'{"categories": {"sea": ["wa\xff\xfe')
    paths["empty"] = root / "empty.txt"
    paths["empty"].write_bytes(b"")
    paths["empty_dir"] = root / "emptydir"
    paths["empty_dir"].mkdir()
    paths["a_file"] = root / "afile.txt"
    paths["a_file"].write_text("not a folder\n", encoding="utf-8")
    paths["loop_top"] = symlink_loop(root, "toploop.jpg")
    paths.update(hostile_reviews(root, paths["good"]))
    return paths


def hostile_reviews(root: Path, image: Path) -> dict[str, Path]:
    """Review sidecars (core.data.review) that are JSON but wrong: a label that is a number, a
    list or an object, decisions that are a list, an action that is a number. Named
    review_<what>."""
    decision = {"action": "relabel", "label": "sea", "given": None, "suggested": None}
    bad = {
        "label_int": {**decision, "label": 5},
        "label_list": {**decision, "label": ["sea", "forest"]},
        "label_object": {**decision, "label": {"name": "sea"}},
        "action_int": {**decision, "action": 3},
        "given_list": {**decision, "given": ["x"]},
    }
    out = {}
    for what, d in bad.items():
        out[f"review_{what}"] = root / f"review_{what}.json"
        out[f"review_{what}"].write_text(
            json.dumps({"version": 1, "root": str(root), "decisions": {str(image): d}}),
            encoding="utf-8",
        )
    out["review_list"] = root / "review_list.json"
    out["review_list"].write_text(json.dumps({"decisions": [decision]}), encoding="utf-8")
    return out
