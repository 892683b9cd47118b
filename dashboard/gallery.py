"""The one image gallery of the dashboard: every grid of photos goes through `gallery`.

Row-major (a new row of st.columns per row, so "most likely first" reads across a row),
paged wherever the list is longer than a page (never cut with "see the CLI"), each tile with
its file name, a "why" that opens in a popover (so it never pushes the grid apart) and an
"Enlarge" button that opens a dialog with the larger image, its file name, path, label and
scores."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from dashboard.common import thumbnail

LARGE_SIDE = 1024


@dataclass(frozen=True)
class Tile:
    """One photo of a gallery. `caption` is the short line under it; `label`, `scores` and
    `why` are shown in the enlarged view (and `why` in its popover)."""

    path: str
    caption: str = ""
    label: str | None = None
    scores: Mapping[str, object] = field(default_factory=dict)
    why: Sequence[str] = ()

    @property
    def name(self) -> str:
        return Path(self.path).name


def page_bounds(n: int, page_size: int, key: str) -> tuple[int, int]:
    """(start, stop) of the page the user chose; draws the page control only when `n` items
    do not fit on one page. An out-of-range remembered page (a shorter new list) is clamped."""
    pages = max(1, -(-n // page_size))
    if pages == 1:
        return 0, n
    page_key = f"{key}-page"
    if st.session_state.get(page_key, 1) > pages:
        st.session_state[page_key] = pages  # set before the widget exists: allowed
    left, right = st.columns([1, 5])
    page = int(left.number_input(f"Page (of {pages})", 1, pages, key=page_key))
    start = (page - 1) * page_size
    stop = min(n, start + page_size)
    right.caption(f"Showing {start + 1}–{stop} of {n}")
    return start, stop


@st.dialog("Image", width="large")
def _enlarged(tile: Tile) -> None:
    st.image(thumbnail(tile.path, LARGE_SIDE), width="stretch")
    st.markdown(f"**{tile.name}**" + (f" · label **{tile.label}**" if tile.label else ""))
    st.caption(f"`{tile.path}`")
    if tile.caption:
        st.markdown(tile.caption)
    if tile.scores:
        st.markdown(" · ".join(f"{k}: {_fmt(v)}" for k, v in tile.scores.items()))
    for line in tile.why:
        st.markdown(f"- {line}")


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _zoom(key: str, i: int) -> None:
    st.session_state[f"{key}-zoom"] = i


def _tile(tile: Tile, i: int, key: str, side: int) -> None:
    st.image(thumbnail(tile.path, side), width="stretch")  # a grey tile when the file is gone
    if tile.caption:
        st.markdown(tile.caption)
    st.caption(tile.name)
    # side by side where the tile is wide enough, "why" wrapped under "Enlarge" where it is
    # not (fixed columns cut the popover's label to "w…" in five-across grids at 1280 px)
    with st.container(horizontal=True, wrap=True, gap="small"):
        st.button("Enlarge", key=f"{key}-zoom-{i}", on_click=_zoom, args=(key, i))
        if tile.why:
            # a popover floats over the page: opening it moves no other tile
            with st.popover("why"):
                for line in tile.why:
                    st.markdown(f"- {line}")


def gallery(
    tiles: Sequence[Tile],
    key: str,
    columns: int = 5,
    page_size: int = 20,
    below: Callable[[int, Tile], None] | None = None,
    side: int = 256,
) -> range:
    """Draw `tiles` row by row, `columns` a row, `page_size` a page; `below(i, tile)` adds
    per-tile controls under tile i (its index in `tiles`). Returns the indices shown."""
    start, stop = page_bounds(len(tiles), page_size, key)
    for row in range(start, stop, columns):
        cols = st.columns(columns)
        for col, i in zip(cols, range(row, min(row + columns, stop)), strict=False):
            with col:
                _tile(tiles[i], i, key, side)
                if below is not None:
                    below(i, tiles[i])
    zoomed = st.session_state.pop(f"{key}-zoom", None)
    if zoomed is not None and 0 <= zoomed < len(tiles):
        _enlarged(tiles[zoomed])  # outside the columns: the dialog is the page's, not a tile's
    return range(start, stop)
