"""Figures for the Eigen-images page: data in, plotly figure (or image tiles) out; no
computing, no caching."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from core.vision.eigen import EigenImageClassifier, eigen_images
from dashboard.palette import colour_map

MARGIN = dict(t=30, b=10, l=10, r=10)


def _share_curve(fig: go.Figure, x_title: str, y_title: str, **layout: Any) -> go.Figure:
    """The layout of a curve over k whose y axis is a share (shown in %)."""
    fig.update_layout(
        height=340,
        margin=MARGIN,
        xaxis_title=x_title,
        yaxis_title=y_title,
        yaxis_tickformat=".0%",
        **layout,
    )
    return fig


def confusion_heatmap(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> go.Figure:
    cm = np.asarray(matrix)
    fig = px.imshow(
        cm,
        x=list(class_names),
        y=list(class_names),
        text_auto=True,
        color_continuous_scale="Greens",
        labels=dict(x="predicted", y="true", color="images"),
        aspect="auto",
    )
    fig.update_layout(height=420, margin=MARGIN)
    return fig


def accuracy_curve(accuracy: Mapping[int, float], k: int) -> go.Figure:
    ks = list(accuracy)
    fig = go.Figure(go.Scatter(x=ks, y=[accuracy[i] for i in ks], mode="lines", name="accuracy"))
    if k in accuracy:
        fig.add_trace(
            go.Scatter(x=[k], y=[accuracy[k]], mode="markers", marker=dict(size=11), name=f"k={k}")
        )
    return _share_curve(fig, "principal components k", "test accuracy", showlegend=False)


def explained_variance_curve(ratio: np.ndarray, k: int) -> go.Figure:
    cumulative = np.cumsum(ratio)
    ks = np.arange(1, len(ratio) + 1)
    fig = go.Figure(go.Scatter(x=ks, y=cumulative, mode="lines", name="cumulative"))
    fig.add_trace(go.Bar(x=ks, y=ratio, name="per component", opacity=0.5))
    if 1 <= k <= len(ratio):
        fig.add_vline(x=k, line_dash="dot", annotation_text=f"k={k}: {cumulative[k - 1]:.1%}")
    return _share_curve(
        fig, "principal components", "share of pixel variance", legend=dict(orientation="h", y=1.1)
    )


def projection_scatter(
    coords: np.ndarray, labels: Sequence[str], max_points: int | None = None
) -> go.Figure:
    """Points coloured by class; with `max_points`, a seeded sample of that many at most."""
    if max_points is not None and len(coords) > max_points:
        pick = np.random.default_rng(0).choice(len(coords), max_points, replace=False)
        coords, labels = coords[pick], [labels[i] for i in pick]
    df = pd.DataFrame({"PC1": coords[:, 0], "PC2": coords[:, 1], "class": list(labels)})
    fig = px.scatter(
        df,
        x="PC1",
        y="PC2",
        color="class",
        color_discrete_map=colour_map(df["class"]),
        category_orders={"class": sorted(set(df["class"]))},
        opacity=0.6,
        render_mode="webgl",
    )
    fig.update_traces(marker=dict(size=4))
    fig.update_layout(height=420, margin=MARGIN)
    return fig


def distance_bars(mean_distance: Mapping[str, float]) -> go.Figure:
    df = pd.DataFrame({"class": list(mean_distance), "distance": list(mean_distance.values())})
    fig = px.bar(df, x="class", y="distance", text_auto=".2f")
    fig.update_layout(
        height=340, margin=MARGIN, yaxis_title="mean Euclidean distance", xaxis_title=""
    )
    return fig


def eigen_tiles(
    model: EigenImageClassifier, side: int, n: int = 16
) -> list[tuple[np.ndarray, str]]:
    """(image, caption) tiles for st.image: the mean image, then the first n eigen-images with
    the share of pixel variance each keeps."""
    faces = eigen_images(model, n)
    ratio = model.explained_variance_ratio_
    tiles = [(np.clip(model.mean_.reshape(side, side), 0, 1), "mean")]
    return tiles + [(face, f"PC{i + 1} · {ratio[i]:.1%}") for i, face in enumerate(faces)]
