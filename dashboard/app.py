"""SceneSeek dashboard: `streamlit run dashboard/app.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# Make `core` importable when started from any folder without an install.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard.common import data_sidebar  # noqa: E402

st.set_page_config(page_title="SceneSeek", page_icon="🏞️", layout="wide")

PAGES = Path(__file__).parent / "views"  # not "pages": Streamlit would also auto-list that folder
pages = [
    st.Page(str(PAGES / "home.py"), title="Home", icon="🏠", default=True),
    st.Page(str(PAGES / "dataset.py"), title="Data set", icon="🗂️"),
    st.Page(str(PAGES / "eigen.py"), title="Eigen-images", icon="🧮"),
    st.Page(str(PAGES / "keywords.py"), title="Keywords", icon="🔤"),
    st.Page(str(PAGES / "train.py"), title="Train a CNN", icon="🧠"),
    st.Page(str(PAGES / "runs.py"), title="Runs & evaluation", icon="📈"),
    st.Page(str(PAGES / "search.py"), title="Search", icon="🔎"),
    st.Page(str(PAGES / "curate.py"), title="Curate", icon="🧹"),
]
nav = st.navigation(pages)
data_sidebar()
nav.run()
