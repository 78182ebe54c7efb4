"""The lessons' small Plotly figures (the First steps charts, animated, are Vega-Lite: studio.charts)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from core.lessons.loop import GradStep
from studio.charts import BLUE, FONT, GREY, ORANGE


def _layout(height: int, **extra) -> dict:
    return {"height": height, "font": FONT, "margin": dict(l=10, r=10, t=40, b=10), "hovermode": "x unified", **extra}


def first_losses_chart(losses: Sequence[float], uniform: float) -> go.Figure:
    """A fresh network's first training losses against the loss of a uniform guess."""
    steps = list(range(1, len(losses) + 1))
    fig = go.Figure(
        layout=_layout(
            300,
            xaxis=dict(title="step", range=[0.5, len(losses) + 0.5]),
            yaxis=dict(title="cross-entropy loss", rangemode="tozero"),
            legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        )
    )
    fig.add_scatter(x=steps, y=list(losses), mode="lines+markers", name="the run's loss", line=dict(color=ORANGE, width=3))
    fig.add_scatter(
        x=[0.5, len(losses) + 0.5],
        y=[uniform, uniform],
        mode="lines",
        name=f"ln 10 = {uniform:.3f}: a uniform guess",
        line=dict(color=BLUE, dash="dash", width=2),
    )
    return fig


def gradients_chart(rows: Sequence[GradStep]) -> go.Figure:
    """Per step: w's own gradient, and what w.grad holds when optimizer.step() reads it."""
    steps = [r.step for r in rows]
    fig = go.Figure(
        layout=_layout(
            300,
            xaxis=dict(title="step", dtick=1),
            yaxis=dict(title="gradient of w", zeroline=True, zerolinecolor=GREY),
            legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        )
    )
    fig.add_bar(x=steps, y=[r.fresh_w for r in rows], name="this step's own gradient", marker_color=BLUE)
    fig.add_scatter(
        x=steps, y=[r.grad_w for r in rows], mode="lines+markers", name="w.grad at optimizer.step()", line=dict(color=ORANGE, width=3)
    )
    return fig
