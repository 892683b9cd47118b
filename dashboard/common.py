"""Shared dashboard helpers: the data-folder sidebar, cached loaders (data set, manifest,
thumbnails, the search engine) and the one progress bar (`progress`).

Only this layer caches (st.cache_resource / st.cache_data); core stays pure. Folders and
settings come from core.config. Pages call `current_data_dir()` so each page also runs on
its own (AppTest)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
from PIL import Image

from core.config import data_dir_source, resolve_cache_dir, resolve_data_dir
from core.data.dataset import Dataset, DatasetError, find_dataset
from core.data.images import open_for_display
from core.data.manifest import Manifest, build_manifest
from dashboard.jobs import Rate

if TYPE_CHECKING:
    from core.search.engine import SearchEngine

DATA_KEY = "data_dir"


def current_data_dir() -> Path:
    """The data folder chosen in the sidebar, else $SCENESEEK_DATA, else ./data."""
    chosen = st.session_state.get(DATA_KEY)
    return resolve_data_dir(chosen or None)


def cache_dir() -> Path:
    """The cache folder (core.config: $SCENESEEK_CACHE, else ./.sceneseek)."""
    return resolve_cache_dir()


THUMB_SIDE = 384


@st.cache_data(show_spinner=False, max_entries=2048)
def _thumbnail(path: str, stamp: str, max_side: int) -> Image.Image:
    return open_for_display(path, max_side)


def thumbnail(path: str | Path, max_side: int = THUMB_SIDE) -> Image.Image:
    """Every image a page shows comes through here: 8-bit RGB whatever the file's mode
    (16-bit PNG, CMYK, alpha...), reduced to `max_side`, or a placeholder saying why it
    cannot be shown (a file moved or deleted since it was listed). Never raises."""
    try:
        st_ = os.stat(path)
        stamp = f"{st_.st_size}:{st_.st_mtime_ns}"
    except (OSError, ValueError):
        stamp = "missing"
    return _thumbnail(str(path), stamp, max_side)


@st.cache_data(show_spinner=False, ttl=60)
def load_dataset(root: str) -> Dataset:
    return find_dataset(root)


class Progress:
    """One st.progress bar behind core's callbacks, the app's only progress bar.

    `bar(done, total)` fits a `progress=` argument, `bar.stage(name, done, total)` a
    `stage=` one, `bar.labelled(name)` gives a `progress=` callback with its own label.
    Text reads "label… done/total", then, once a few items are measured, the rate and the
    time left ("· 12/s · about 40 s left"). Used as a context manager it clears itself on
    exit. Work that should outlive the page runs as a background job (dashboard.jobs)."""

    def __init__(self, label: str, clock: Callable[[], float] | None = None) -> None:
        self.label = label
        self._rate = Rate(clock) if clock else Rate()
        self._bar = st.progress(0.0, text=f"{label}…")

    def __call__(self, done: int, total: int) -> None:
        self.stage(self.label, done, total)

    def stage(self, name: str, done: int, total: int) -> None:
        self._rate.update(name, done, total)
        text = f"{name}… {done}/{total}{self._rate.text()}"
        self._bar.progress(min(1.0, done / max(1, total)), text=text)

    def labelled(self, name: str) -> Callable[[int, int], None]:
        return partial(self.stage, name)

    def note(self, text: str, fraction: float = 1.0) -> None:
        """A step with no count (e.g. "Fitting 150 components…")."""
        self._bar.progress(fraction, text=text)

    def clear(self) -> None:
        self._bar.empty()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()


def progress(label: str) -> Progress:
    """A progress bar labelled `label`; see `Progress`."""
    return Progress(label)


@st.cache_resource(show_spinner=False)
def _manifest_cached(root: str, cache: str, stamp: float) -> Manifest:
    ds = find_dataset(root)
    with progress("Checking images") as bar:
        return build_manifest(ds, cache, progress=bar)


def folder_stamp(root: str | Path) -> float:
    """Latest mtime of a data folder and its split/class folders: changes when a class
    folder gains or loses a file, so cached loaders keyed by it rebuild."""
    root = Path(root)
    return max((p.stat().st_mtime for p in [root, *root.glob("*/*")] if p.exists()), default=0)


def load_manifest(root: str | Path) -> Manifest:
    """The validated manifest of a data set; rebuilt when the folder changes."""
    return _manifest_cached(str(root), str(cache_dir()), folder_stamp(root))


def index_stamp(index: str | Path) -> str:
    """Changes whenever the search index is rewritten: key cached loaders with it (no leading
    underscore: Streamlit does not hash those). Raises SearchIndexError without an index."""
    from core.search.store import meta_path, read_meta

    meta = read_meta(index)
    return f"{meta_path(index).stat().st_mtime_ns}:{meta.get('table_version')}"


@st.cache_resource(show_spinner=False, max_entries=2)
def _engine(index: str, stamp: str) -> SearchEngine:
    from core.search.engine import SearchEngine

    return SearchEngine.load(index)


def load_engine(index: str | Path) -> SearchEngine:
    """The search engine over `index`, loaded once per process and again when the index is
    rewritten (its stamp changes). Raises SearchIndexError without an index."""
    # The first load takes seconds (models): the spinner counts them (it shows after 0.5 s,
    # so a cached engine flashes nothing).
    with st.spinner("Loading the index and models…", show_time=True):
        return _engine(str(index), index_stamp(index))


def data_sidebar() -> Dataset | None:
    """Sidebar: choose the data folder and show what was found there."""
    with st.sidebar:
        st.markdown("### Data")
        default = str(current_data_dir())
        value = st.text_input(
            "Data folder",
            value=default,
            help="A folder with seg_train/ and seg_test/ class folders (the Kaggle Intel "
            "layout) or train/ and test/. Default: $SCENESEEK_DATA, then ./data.",
        )
        if value != default:
            st.session_state[DATA_KEY] = value
        st.caption(
            f"Using `{current_data_dir()}` ({data_dir_source(st.session_state.get(DATA_KEY))})"
        )
        try:
            ds = load_dataset(str(current_data_dir()))
        except DatasetError as exc:
            st.warning(str(exc))
            return None
        counts = ds.counts()
        st.caption(
            f"{ds.layout} layout · {len(ds.class_names)} classes · "
            + " · ".join(f"{s}: {sum(c.values())}" for s, c in counts.items())
        )
        return ds


def require_dataset() -> Dataset:
    """The current data set, or a clear message and stop."""
    try:
        return load_dataset(str(current_data_dir()))
    except DatasetError as exc:
        st.error(f"No data set found. {exc}")
        st.info(
            "Point the sidebar at your data folder, or set SCENESEEK_DATA. The README says "
            "where to download the Intel Image Classification data set."
        )
        st.stop()
        raise  # unreachable; st.stop raises


def page_link(page: str, label: str, icon: str | None = None) -> None:
    """st.page_link to `page` (relative to dashboard/app.py); where the page runs on its own
    (AppTest of one file, no navigation) the label is shown as plain text instead."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitAPIException:
        st.markdown(f"{icon or ''} {label} (`{page}`)")
