"""Plotly figures of the Curate page (computing stays in core.curate)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go

from dashboard.palette import colour_map

MARGIN = {"l": 10, "r": 10, "t": 30, "b": 10}


def map_scatter(
    xy: np.ndarray,
    colour: Sequence,
    colour_name: str,
    hover: Sequence[str],
    numeric: bool,
) -> go.Figure:
    """The embedding map; each point's customdata is its position in the collection, which
    is how a lasso/box selection finds its images."""
    data = {
        "x": xy[:, 0],
        "y": xy[:, 1],
        colour_name: list(colour),
        "image": list(hover),
        "row": np.arange(len(xy)),
    }
    names = sorted({str(v) for v in colour}) if not numeric else []
    kwargs = (
        {"color_continuous_scale": "Viridis"}
        if numeric
        else {"color_discrete_map": colour_map(names), "category_orders": {colour_name: names}}
    )
    fig = px.scatter(
        data,
        x="x",
        y="y",
        color=colour_name,
        hover_name="image",
        custom_data=["row"],
        render_mode="webgl",
        **kwargs,
    )
    fig.update_traces(marker={"size": 5, "opacity": 0.75})
    _sized(fig, 560, None, None).update_layout(dragmode="lasso", legend_title=None)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def distance_histogram(distances: Sequence[float], threshold: float) -> go.Figure:
    """Cosine distances of the near-duplicate candidate pairs, with the threshold line."""
    fig = go.Figure(go.Histogram(x=list(distances), nbinsx=40, marker_color="#4c78a8"))
    fig.add_vline(
        x=threshold,
        line_dash="dash",
        line_color="#e45756",
        annotation_text=f"threshold {threshold:.3f}",
    )
    return _sized(fig, 220, "cosine distance of a pair", "pairs")


def issue_counts(pairs: dict[tuple[str, str], int]) -> go.Figure:
    """Given -> suggested class of the flagged images, as a heatmap."""
    given = sorted({g for g, _ in pairs})
    sugg = sorted({s for _, s in pairs})
    z = [[pairs.get((g, s), 0) for s in sugg] for g in given]
    fig = go.Figure(
        go.Heatmap(z=z, x=sugg, y=given, colorscale="Blues", text=z, texttemplate="%{text}")
    )
    return _sized(fig, 280, "suggested", "given")


def _sized(fig: go.Figure, height: int, x_title: str | None, y_title: str | None) -> go.Figure:
    """The page's figure layout: `height`, narrow margins, the axis titles."""
    fig.update_layout(height=height, margin=MARGIN, xaxis_title=x_title, yaxis_title=y_title)
    return fig


def _row_of(customdata: object) -> int | None:
    """The collection position in one point's customdata, in each shape Streamlit passes it
    on: [row], (row,), a bare number, or {"0": row} (a typed-array row as the browser's JSON
    writes it, the shape that crashed `int()` in issue 19). None when there is none."""
    if isinstance(customdata, dict):
        customdata = [customdata[k] for k in sorted(customdata, key=str)]
    if isinstance(customdata, list | tuple):
        customdata = customdata[0] if customdata else None
    if isinstance(customdata, bool) or customdata is None:
        return None
    try:
        return int(customdata)
    except (TypeError, ValueError):
        return None


def selected_rows(event: object, n: int) -> list[int]:
    """Collection positions of the points a lasso/box/click selection on `map_scatter` picked
    (their customdata), in order, without repeats or positions outside 0..n-1. `event` is what
    st.plotly_chart returns (attribute or key access)."""
    sel = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    points = (sel.get("points") if isinstance(sel, dict) else getattr(sel, "points", None)) or []
    rows = []
    for p in points:
        row = _row_of(p.get("customdata")) if isinstance(p, dict) else None
        if row is not None and 0 <= row < n:
            rows.append(row)
    return list(dict.fromkeys(rows))
