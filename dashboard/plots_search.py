"""Figures for the Search page: data in, plotly figure out (no computing, no caching)."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go


def hybrid_differences(vs: Mapping[str, Mapping]) -> go.Figure:
    """The hybrid minus each other mode on the evaluation's headline metric, with its 95%
    bootstrap interval: a bar that crosses zero is no difference these queries can show."""
    modes = list(vs)
    diff = [float(vs[m]["difference"]) for m in modes]
    lo = [d - float(vs[m]["ci95"][0]) for m, d in zip(modes, diff, strict=True)]
    hi = [float(vs[m]["ci95"][1]) - d for m, d in zip(modes, diff, strict=True)]
    metric = next(iter(vs.values()))["metric"] if vs else ""
    fig = go.Figure(
        go.Scatter(
            x=diff,
            y=[f"hybrid - {m}" for m in modes],
            mode="markers",
            marker=dict(size=10),
            error_x=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
            customdata=[(vs[m]["better"], vs[m]["worse"], *vs[m]["ci95"]) for m in modes],
            hovertemplate="%{y}: %{x:+.3f} (95%% interval %{customdata[2]:+.3f} to "
            "%{customdata[3]:+.3f}); ahead on %{customdata[0]} queries, behind on "
            "%{customdata[1]}<extra></extra>",
        )
    )
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    fig.update_layout(
        height=60 + 40 * len(modes),
        margin=dict(t=10, b=40, l=10, r=10),
        xaxis_title=f"difference in {metric} (hybrid ahead to the right)",
        showlegend=False,
    )
    return fig
