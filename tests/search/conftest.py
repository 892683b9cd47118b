"""Fixtures the search tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import IMAGE_SIZE


@pytest.fixture(scope="session")
def encoder():
    """The default backbone at the search tests' small input size, on the CPU (loaded once)."""
    from core.search.encoders import create_image_encoder

    return create_image_encoder(image_size=IMAGE_SIZE, device="cpu")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    """A Ray instance in this process on the machine's 2 cores, stopped even on failure."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def folder(intel_small: Path, tmp_path: Path) -> Path:
    """A private copy of the forest and sea test photos of the real Intel subset, 16 photos
    in two class folders (tests add to it and change it). Files with a folder of their own
    (Ray, table) define their own."""
    out = tmp_path / "imgs"
    for c in ("forest", "sea"):
        shutil.copytree(intel_small / "seg_test" / c, out / c)
    return out
