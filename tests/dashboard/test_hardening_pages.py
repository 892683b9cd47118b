"""Pages never crash on an image the data layer accepts: a 16-bit PNG used to stop the Data
set and Eigen-images pages with `cannot write mode I;16 as JPEG` (issue 14)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.data.images import check_image
from tests.helpers import PAGES
from tests.hostile import png16, strip_png, symlink_loop


@pytest.fixture(scope="module")
def odd_data(intel_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of real photos plus images in every awkward mode, in train and test."""
    root = tmp_path_factory.mktemp("odd_data")
    for split, src in (("train", "seg_train"), ("test", "seg_test")):
        for c in ("forest", "sea"):
            shutil.copytree(intel_small / src / c, root / split / c)
        d = root / split / "forest"
        png16(d / "aaa_deep16.png", size=150)  # sorts first: on the first grid page
        Image.fromarray(np.full((150, 150), 0.5, np.float32)).save(d / "aab_float.tif")
        Image.new("CMYK", (150, 150), (0, 80, 160, 10)).save(d / "aac_cmyk.jpg")
        Image.new("LA", (150, 150), (90, 120)).save(d / "aad_alpha.png")
        strip_png(d / "aae_strip.png")
        symlink_loop(d, "aaf_loop.jpg")
    return root


def test_dataset_page_shows_every_mode(odd_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(odd_data))
    at = AppTest.from_file(str(PAGES / "dataset.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    at.selectbox(key="grid_class").set_value("forest").run()
    assert not at.exception, at.exception
    # The first grid page: every usable forest training image, the odd modes among them.
    usable = [p for p in (odd_data / "train" / "forest").iterdir() if check_image(p).ok]
    assert len(usable) == 24  # 20 photos + 16-bit PNG, float TIFF, CMYK, grey+alpha
    assert len(at.get("imgs")) + len(at.get("image")) == len(usable)


def test_eigen_page_gallery_shows_every_mode(
    odd_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(odd_data))
    at = AppTest.from_file(str(PAGES / "eigen.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    assert any("test 20" in c.value for c in at.caption)  # 8+8 photos + 4 odd ones usable
