from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import make_intel_subset


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep tests' caches out of the working folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SCENESEEK_CACHE", str(tmp_path_factory.mktemp("cache")))
    # The cache-signing key (core.config.key_file) too: tests never write to the home folder.
    mp.setenv("SCENESEEK_KEY_FILE", str(tmp_path_factory.mktemp("key") / "cache.key"))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def intel_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real subset of the Intel data: 20 train and 8 test images per class."""
    return make_intel_subset(tmp_path_factory.mktemp("intel_small"), n_train=20, n_test=8)


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: $SCENESEEK_SCREENSHOTS to keep them, else the test's tmp_path
    (never the working tree)."""
    env = os.environ.get("SCENESEEK_SCREENSHOTS")
    folder = Path(env).expanduser() if env else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
