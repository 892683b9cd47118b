"""Figures for the keywords page (plotting only; the numbers come from core.text)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

# p-values reach 1e-300: in full decimals they overflow their cell, so they are shown in
# scientific notation (1.2e-37); the column stays numeric, so it still sorts.
P_VALUE_COLUMNS = {"p_value": st.column_config.NumberColumn("p_value", format="%.1e")}


def category_bar(counts: dict[str, int], n_uncategorised: int | None = None) -> go.Figure:
    df = pd.DataFrame({"category": list(counts), "captions": list(counts.values())})
    fig = px.bar(df, x="category", y="captions", text="captions", color="category")
    title = "Captions per category (a caption may carry several)"
    if n_uncategorised is not None:
        title += f" · {n_uncategorised} with none"
    fig.update_layout(height=360, margin=dict(t=40, b=20), showlegend=False, title=title)
    return fig


def stage_bar(seconds: dict[str, float]) -> go.Figure:
    df = pd.DataFrame({"stage": list(seconds), "seconds": list(seconds.values())})
    fig = px.bar(df, x="seconds", y="stage", orientation="h", text="seconds")
    fig.update_traces(texttemplate="%{text:.2f}s")
    fig.update_layout(height=320, margin=dict(t=20, b=20), yaxis=dict(autorange="reversed"))
    return fig


def method_bar(methods: dict[str, dict]) -> go.Figure:
    rows = [
        {"method": name, "metric": metric, "value": m[metric]}
        for name, m in methods.items()
        for metric in ("precision", "recall", "f1")
        if metric in m
    ]
    fig = px.bar(pd.DataFrame(rows), x="method", y="value", color="metric", barmode="group")
    fig.update_layout(height=340, margin=dict(t=20, b=20), yaxis=dict(range=[0, 1]))
    return fig


def wordcloud_array(freqs: dict[str, float], width: int = 640, height: int = 320) -> np.ndarray:
    """An RGB word-cloud image from {word: weight}."""
    from wordcloud import WordCloud

    wc = WordCloud(width=width, height=height, background_color="white", random_state=0)
    return wc.generate_from_frequencies({w: float(v) for w, v in freqs.items() if v > 0}).to_array()


def highlight(text: str, tagged: set[str], table_words: set[str]) -> str:
    """Markdown with tagged words highlighted: green = table word, orange = HMM only."""

    def repl(m: re.Match[str]) -> str:
        w = m.group(0)
        low = w.lower()
        if low in table_words:
            return f":green-background[**{w}**]"
        if low in tagged:
            return f":orange-background[**{w}**]"
        return w

    return re.sub(r"[A-Za-z]+", repl, text)
