"""Figures for the CNN pages: data in, plotly figure out (no computing, no caching)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.palette import colour_map

MARGIN = dict(t=40, b=10, l=10, r=10)
SCORES = {
    "accuracy": "accuracy",
    "macro_precision": "precision",
    "macro_recall": "recall",
    "macro_f1": "F1",
}
VAL_SCORES = {"val_accuracy": "validation accuracy", "val_macro_f1": "validation F1"}
# Per-epoch columns: epochs are scored on validation only (the test set once, at the end).
METRICS = [*VAL_SCORES, "train_loss", "val_loss"]


def training_curves(metrics: Sequence[Mapping], title: str = "") -> go.Figure:
    """Loss (left) and scores (right) per epoch: training and validation (which chooses the
    checkpoint, dashed). Runs written before epochs saw validation only also carry per-epoch
    test figures, drawn when present."""
    df = pd.DataFrame(list(metrics))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "scores"))
    if df.empty:
        return fig
    fig.add_trace(go.Scatter(x=df["epoch"], y=df["train_loss"], name="train loss"), 1, 1)
    if "val_loss" in df:
        fig.add_trace(
            go.Scatter(
                x=df["epoch"], y=df["val_loss"], name="validation loss", line=dict(dash="dash")
            ),
            1,
            1,
        )
    if "test_loss" in df:
        fig.add_trace(go.Scatter(x=df["epoch"], y=df["test_loss"], name="test loss"), 1, 1)
    if "val_accuracy" in df:
        fig.add_trace(
            go.Scatter(
                x=df["epoch"],
                y=df["val_accuracy"],
                name="validation accuracy",
                line=dict(dash="dash"),
            ),
            1,
            2,
        )
    for key, label in SCORES.items():
        if key in df:
            fig.add_trace(go.Scatter(x=df["epoch"], y=df[key], name=f"test {label}"), 1, 2)
    fig.update_xaxes(title_text="epoch", dtick=1 if len(df) <= 20 else None)
    fig.update_layout(height=340, margin=MARGIN, title=title or None)
    return fig


def compare_runs(runs: Mapping[str, Sequence[Mapping]], key: str = "accuracy") -> go.Figure:
    fig = go.Figure()
    for name, metrics in runs.items():
        df = pd.DataFrame(list(metrics))
        if not df.empty and key in df:
            fig.add_trace(go.Scatter(x=df["epoch"], y=df[key], mode="lines+markers", name=name))
    fig.update_layout(
        height=340,
        margin=MARGIN,
        xaxis_title="epoch",
        yaxis_title={**SCORES, **VAL_SCORES}.get(key, key),
    )
    return fig


def confusion_heatmap(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> go.Figure:
    fig = px.imshow(
        np.asarray(matrix),
        x=list(class_names),
        y=list(class_names),
        text_auto=True,
        color_continuous_scale="Blues",
        aspect="auto",
        labels=dict(x="predicted", y="true", color="images"),
    )
    fig.update_layout(height=420, margin=MARGIN)
    return fig


def tsne_scatter(xy: np.ndarray, labels: Sequence[str], hover: Sequence[str]) -> go.Figure:
    df = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "class": list(labels), "file": list(hover)})
    fig = px.scatter(
        df,
        x="x",
        y="y",
        color="class",
        color_discrete_map=colour_map(df["class"]),
        category_orders={"class": sorted(set(df["class"]))},
        hover_data=["file"],
        opacity=0.8,
    )
    fig.update_traces(marker=dict(size=5))
    fig.update_layout(height=480, margin=MARGIN, xaxis_title="", yaxis_title="")
    return fig


def probability_bars(probs: Mapping[str, float], title: str = "") -> go.Figure:
    names = list(probs)
    fig = go.Figure(go.Bar(x=[probs[n] for n in names], y=names, orientation="h"))
    fig.update_layout(
        height=40 + 28 * len(names),
        margin=MARGIN,
        title=title or None,
        xaxis=dict(range=[0, 1], title="probability"),
    )
    return fig


def eigen_vs_cnn(
    cnn: Sequence[Mapping], eigen: Mapping[int, Mapping[str, float]], cnn_name: str
) -> go.Figure:
    """The study's comparison: CNN scores per epoch (validation; runs written before epochs
    saw validation only: test) beside eigen-image scores per k."""
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        subplot_titles=(f"CNN ({cnn_name}) per epoch", "eigen-images per component count"),
    )
    df = pd.DataFrame(list(cnn))
    keys = ("accuracy", "macro_precision", "macro_recall")
    colors = dict(zip(keys, px.colors.qualitative.Plotly, strict=False))
    for key in keys:
        column = f"val_{key}" if f"val_{key}" in df else key
        if column in df:
            fig.add_trace(
                go.Scatter(
                    x=df["epoch"], y=df[column], name=SCORES[key], line=dict(color=colors[key])
                ),
                1,
                1,
            )
        ks = sorted(eigen)
        fig.add_trace(
            go.Scatter(
                x=ks,
                y=[eigen[k][key] for k in ks],
                name=SCORES[key],
                line=dict(color=colors[key]),
                showlegend=False,
            ),
            1,
            2,
        )
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_xaxes(title_text="components k", row=1, col=2)
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(height=360, margin=MARGIN)
    return fig
