"""Home: what SceneSeek is and where to start."""

from __future__ import annotations

import streamlit as st

from core.config import data_dir_source
from dashboard.common import DATA_KEY, current_data_dir

st.title("🏞️ SceneSeek")
st.markdown(
    """
Classify landscape photos and find them by text. Every figure on these pages is computed
from your data; each has a `python -m core …` command that reproduces it.

| Page | What it does |
|---|---|
| **Data set** | class counts, image grid, sizes and modes, skipped files with reasons, duplicates |
| **Eigen-images** | the grayscale PCA classifier: slider for components, confusion matrix, accuracy vs k |
| **Keywords** | caption keywords: TF-IDF, chi-square, PMI, HMM, the category mapping table |
| **Train a CNN** / **Runs & evaluation** | pretrained backbones, linear probe and fine-tuning, comparisons |
| **Search** | find images by a sentence (four ranking modes), more like this, by image |
| **Curate** | likely label mistakes, near-duplicates and train/test leakage, a map, export |
"""
)
st.info(
    f"Data folder: `{current_data_dir()}` ({data_dir_source(st.session_state.get(DATA_KEY))}). "
    "Change it in the sidebar."
)
