"""Shared dashboard helpers: the data-folder sidebar and cached loaders.

Only this layer caches (st.cache_resource / st.cache_data); core stays pure.
Pages call `current_data_dir()` so each page also runs on its own (AppTest)."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st
from PIL import Image

from core.config import data_dir_source, resolve_cache_dir, resolve_data_dir
from core.data.dataset import Dataset, DatasetError, find_dataset
from core.data.images import open_for_display
from core.data.manifest import Manifest, build_manifest

DATA_KEY = "data_dir"


def current_data_dir() -> Path:
    """The data folder chosen in the sidebar, else $SCENESEEK_DATA, else ./data."""
    chosen = st.session_state.get(DATA_KEY)
    return resolve_data_dir(chosen or None)


def cache_dir() -> Path:
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


@st.cache_resource(show_spinner=False)
def _manifest_cached(root: str, cache: str, stamp: float) -> Manifest:
    ds = find_dataset(root)
    bar = st.progress(0.0, text="Checking images…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(1, total), text=f"Checking images… {done}/{total}")

    manifest = build_manifest(ds, cache, progress=progress)
    bar.empty()
    return manifest


def load_manifest(root: str | Path) -> Manifest:
    """The validated manifest of a data set; rebuilt when the folder changes."""
    root = Path(root)
    stamp = max((p.stat().st_mtime for p in [root, *root.glob("*/*")] if p.exists()), default=0)
    return _manifest_cached(str(root), str(cache_dir()), stamp)


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
