"""The dashboard's one gallery (row-major, paged), the one class palette, and the curate map
selection as Streamlit really sends it (issue 19), on real photos of the shared data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import require_shared


def _gallery_script() -> None:
    import os

    import streamlit as st

    from dashboard.gallery import Tile, gallery

    paths = sorted(os.environ["GALLERY_PHOTOS"].split(os.pathsep))
    tiles = [Tile(p, caption=f"**{i + 1}.** tile") for i, p in enumerate(paths)]
    shown = gallery(tiles, "g", columns=3, page_size=5)
    st.write(f"shown {shown.start}-{shown.stop}")


@pytest.fixture
def photos(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    folder = require_shared("intel", "seg_test", "glacier")
    paths = [str(p) for p in sorted(folder.glob("*.jpg"))[:13]]
    monkeypatch.setenv("GALLERY_PHOTOS", ":".join(paths))
    return paths


def test_gallery_pages_and_fills_rows_first(photos: list[str]) -> None:
    at = AppTest.from_function(_gallery_script).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 5  # one page of 13, never a silent cut
    assert "shown 0-5" in [m.value for m in at.markdown]
    # two rows of three columns: ranks 1-3 in the first row, 4-5 in the second
    blocks = at.main.children
    rows = [b for b in blocks.values() if b.type == "flex_container"]
    firsts = [[m.value for m in row.get("markdown") if "tile" in m.value] for row in rows]
    assert [f for f in firsts if f] == [["**1.** tile", "**2.** tile", "**3.** tile"],
                                        ["**4.** tile", "**5.** tile"]]  # fmt: skip
    # the last page holds the rest; the file name is under each tile
    at.number_input(key="g-page").set_value(3).run()
    assert len(at.get("image")) == 3
    assert "shown 10-13" in [m.value for m in at.markdown]
    assert Path(photos[-1]).name in [c.value for c in at.caption]


def test_palette_is_fixed_per_class_name() -> None:
    from dashboard.palette import class_colour, colour_map

    names = ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    colours = [class_colour(n) for n in names]
    assert len(set(colours)) == 6  # the six Intel classes never share a colour
    # the same name, the same colour, whatever else a figure holds and in what order
    assert colour_map(["sea", "forest"])["sea"] == colour_map(names[::-1])["sea"]
    assert class_colour("Sea ") == class_colour("sea")
    assert class_colour("lakes") == class_colour("lakes")


def test_pca_and_tsne_plots_colour_a_class_alike() -> None:
    from dashboard import plots_cnn, plots_eigen

    rng = np.random.default_rng(0)
    xy = rng.normal(size=(40, 2))
    a = plots_eigen.projection_scatter(xy, ["sea"] * 20 + ["forest"] * 20)
    b = plots_cnn.tsne_scatter(xy, ["forest"] * 30 + ["street"] * 10, ["f"] * 40)

    def colours(fig) -> dict[str, str]:
        return {t.name: t.marker.color for t in fig.data}

    assert colours(a)["forest"] == colours(b)["forest"]
    assert colours(a)["sea"] != colours(b)["street"]


def test_map_selection_in_the_shape_the_browser_sends() -> None:
    """What Streamlit passes on for a lasso over map_scatter: the figure's customdata as the
    browser holds it. Issue 19: a typed-array row arrives as {"0": row} and int() raised."""
    from dashboard.plots_curate import map_scatter, selected_rows

    xy = np.random.default_rng(1).normal(size=(30, 2))
    fig = map_scatter(xy, ["sea", "forest", "glacier"] * 10, "class", ["p"] * 30, False)
    # plotly ships each trace's customdata as a typed array (base64), which the browser's
    # JSON of a selected point writes as {"0": row}: the shape that crashed int()
    shipped = json.loads(pio.to_json(fig))["data"][0]["customdata"]
    assert isinstance(shipped, dict) and "bdata" in shipped
    event = {
        "selection": {
            "points": [
                {"curve_number": 0, "point_index": 1, "customdata": {"0": 3}},
                {"curve_number": 1, "point_index": 0, "customdata": [4]},
                {"curve_number": 2, "point_index": 0, "customdata": 5},
                {"curve_number": 2, "point_index": 1, "customdata": {"0": 3}},  # a repeat
                {"curve_number": 2, "point_index": 2, "customdata": {"0": 99}},  # out of range
                {"curve_number": 2, "point_index": 3},  # no customdata
            ],
            "point_indices": [1, 0, 0, 1, 2, 3],
            "box": [],
            "lasso": [{"x": [0, 1, 1], "y": [0, 0, 1]}],
        }
    }
    assert selected_rows(event, 30) == [3, 4, 5]
    assert selected_rows({"selection": {"points": []}}, 30) == []
    assert selected_rows(None, 30) == []
