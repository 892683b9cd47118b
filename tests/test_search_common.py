"""Shared helpers for the search tests (no tests here): small real subsets and indexes."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import require_shared

IMAGE_SIZE = 96  # small inputs keep the tests fast; the ranking logic does not depend on it
N_PHOTOS = 16


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
