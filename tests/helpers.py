"""Test helpers: locating the shared real data, cutting small real subsets of it, and small
search indexes over those."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.config import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
PAGES = REPO / "dashboard" / "views"  # AppTest.from_file resolves relative to the caller
IMAGE_SIZE = 96  # search tests: small inputs keep them fast; ranking does not depend on it
N_PHOTOS = 16


def require_shared(*parts: str) -> Path:
    """Path under the shared data folder, or skip the test when it is absent."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing in CI: {path}")
        pytest.skip(f"shared data not present: {path}")
    return path


def make_intel_subset(dest: Path, n_train: int, n_test: int) -> Path:
    """Copy the first n images (in sorted order, spread over the folder) per class and split
    of the real Intel data into dest/seg_train and dest/seg_test."""
    src = require_shared("intel")
    for split, n in (("seg_train", n_train), ("seg_test", n_test)):
        for class_dir in sorted((src / split).iterdir()):
            files = sorted(class_dir.glob("*.jpg"))
            step = max(1, len(files) // n)
            out = dest / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for f in files[::step][:n]:
                shutil.copy2(f, out / f.name)
    return dest


def gray_splits(root: Path, size: int) -> dict[str, tuple]:
    """{"train"|"test": (gray pixels, labels)} of an Intel-layout folder, as the library
    loads them (usable files of seg_<split>/<class>/, decoded at size x size)."""
    from core.data.split import labelled_split
    from core.vision.gray import load_gray_images

    out = {}
    for split in ("train", "test"):
        paths, labels, _ = labelled_split(root / f"seg_{split}", split)
        out[split] = (load_gray_images(paths, size).pixels, np.array(labels))
    return out


def flickr_subset(dest: Path, n: int = N_PHOTOS) -> tuple[Path, Path]:
    """(Images folder, captions.txt) with the first n shared Flickr8k photos and their
    captions; no split lists are copied, so the mapping holds out a fixed hash-based share."""
    src = require_shared("flickr8k")
    names = sorted(p.name for p in (src / "Images").glob("*.jpg"))[:n]
    images = dest / "Images"
    images.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(src / "Images" / name, images / name)
    wanted = set(names)
    lines = (src / "captions.txt").read_text(encoding="utf-8").splitlines()
    keep = [ln for ln in lines[1:] if ln.split(",", 1)[0] in wanted]
    captions = dest / "captions.txt"
    captions.write_text("image,caption\n" + "\n".join(keep) + "\n", encoding="utf-8")
    return images, captions


def build_small(intel: Path, flickr: tuple[Path, Path] | None, index: Path) -> Path:
    """An index of the Intel subset (and the Flickr photos with captions when given)."""
    from core.search import build_index

    build_index(intel, index, image_size=IMAGE_SIZE, workers=0, batch_size=32)
    if flickr is not None:
        build_index(flickr[0], index, captions_file=flickr[1], workers=0, batch_size=32)
    return index


def run_cli(*args: object, env: dict[str, str] | None = None):
    """`python -m core ARGS` in this process (typer's CliRunner), with `env` set for the run;
    the click Result."""
    from typer.testing import CliRunner

    from core.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def cli_json(*args: object) -> dict:
    """`python -m core ARGS --json`: asserts that it succeeded, returns its one JSON object."""
    r = run_cli(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def index_json(images: Path, index: Path, *extra: object) -> dict:
    """`python -m core index --images IMAGES --index INDEX --workers 0 EXTRA --json`."""
    return cli_json("index", "--images", images, "--index", index, "--workers", 0, *extra)


def strict_loads(text: str) -> object:
    """json.loads that refuses NaN/Infinity (what a strict parser, e.g. jq or JS, does)."""

    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)
