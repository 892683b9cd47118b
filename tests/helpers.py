"""Test helpers: locating the shared real data and cutting small real subsets of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = REPO / "dashboard" / "views"  # AppTest.from_file resolves relative to the caller


def shared_data_dir() -> Path:
    env = os.environ.get("SCENESEEK_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


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
