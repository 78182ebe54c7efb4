"""Plotly figures for the pages: training curves, results, predictions, diagrams.

Figures are built from plain dicts without a Plotly template: templates make a
figure several times slower to build, and the live chart is rebuilt a few times
per second while training shares the same CPU. Streamlit's own chart theme
styles them instead, and the font sizes are chosen for a projector.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.curves import Curves, ema

ORANGE = "#EE4C2C"  # PyTorch's colour: training
BLUE = "#1f6fd1"  # held-out (test) data
GREY = "#8a8f98"
FONT = dict(size=16)
PALETTE = ["#EE4C2C", "#1f6fd1", "#2a9d5c", "#9b5de5", "#f4a100", "#00a6a6", "#d6336c", "#5c677d"]


def _base_layout(height: int, **extra: Any) -> dict[str, Any]:
    return {"height": height, "font": FONT, "margin": dict(l=10, r=10, t=50, b=10), "hovermode": "x unified",
            "legend": dict(orientation="h", yanchor="bottom", y=1.04, xanchor="left", x=0), **extra}


def _title(text: str, x: float, y: float) -> dict[str, Any]:
    return dict(text=f"<b>{text}</b>", x=x, y=y, xref="paper", yref="paper", xanchor="left", yanchor="bottom",
                showarrow=False, font=dict(size=17))


def _col(frame: pd.DataFrame, name: str) -> list:
    return frame[name].tolist() if name in frame else []


def training_figure(curves: Curves, smoothing: float = 0.6, epochs: int | None = None) -> go.Figure:
    """Loss and accuracy on top (large), learning rate and throughput below, all against epochs."""
    steps, per_epoch = curves.steps_frame(), curves.epochs_frame()
    x = _col(steps, "progress")
    ex = _col(per_epoch, "epoch")
    extent = max((x[-1] if x else 0), (ex[-1] if ex else 0))
    # A short run is drawn on its whole planned axis (you see how far along it is); a long
    # one would be a sliver at the left, so its axis grows with it.
    planned = epochs or 0
    x_max = planned if 0 < planned <= 20 else min(planned or float("inf"), max(1.0, extent * 1.2))
    x_range = [0, max(x_max, extent, 1)]
    axis = dict(range=x_range, title=None, zeroline=False)
    bottom = {**axis, "title": "epoch"}
    top_row, low_row = [0.36, 0.92], [0, 0.22]
    fig = go.Figure(layout=_base_layout(
        640,
        xaxis=dict(domain=[0, 0.47], anchor="y", **axis),
        yaxis=dict(domain=top_row, title="loss", rangemode="tozero"),
        xaxis2=dict(domain=[0.53, 1], anchor="y2", **axis),
        yaxis2=dict(domain=top_row, anchor="x2", title="accuracy", range=[0, 1.02], tickformat=".0%"),
        xaxis3=dict(domain=[0, 0.47], anchor="y3", **bottom),
        yaxis3=dict(domain=low_row, anchor="x3", title="lr", exponentformat="e"),
        xaxis4=dict(domain=[0.53, 1], anchor="y4", **bottom),
        yaxis4=dict(domain=low_row, anchor="x4", title="img/s", rangemode="tozero"),
        annotations=[_title("Loss", 0, 0.93), _title("Accuracy", 0.53, 0.93), _title("Learning rate", 0, 0.23),
                     _title("Images / second", 0.53, 0.23)],
    ))
    steps_line = dict(x=x, mode="lines")
    epoch_line = dict(x=ex, mode="lines+markers", marker=dict(size=9))
    loss, acc = _col(steps, "loss"), _col(steps, "acc")
    # Loss: every step faintly, the smoothed trend boldly, and the test loss once per epoch.
    fig.add_scatter(**steps_line, y=loss, name="train loss (per step)", line=dict(color=ORANGE, width=1), opacity=0.3,
                    showlegend=False, hoverinfo="skip", xaxis="x", yaxis="y")
    fig.add_scatter(**steps_line, y=ema(loss, smoothing) if smoothing else loss, name="train",
                    line=dict(color=ORANGE, width=3), xaxis="x", yaxis="y", legendgroup="train")
    fig.add_scatter(**epoch_line, y=_col(per_epoch, "test_loss"), name="test", line=dict(color=BLUE, width=3),
                    xaxis="x", yaxis="y", legendgroup="test")
    fig.add_scatter(**steps_line, y=ema(acc, smoothing) if smoothing else acc, name="train (per step)",
                    line=dict(color=ORANGE, width=1.5), opacity=0.45, showlegend=False, xaxis="x2", yaxis="y2",
                    legendgroup="train")
    fig.add_scatter(**epoch_line, y=_col(per_epoch, "train_acc"), name="train", showlegend=False,
                    line=dict(color=ORANGE, width=3), xaxis="x2", yaxis="y2", legendgroup="train")
    fig.add_scatter(**epoch_line, y=_col(per_epoch, "test_acc"), name="test", showlegend=False,
                    line=dict(color=BLUE, width=3), xaxis="x2", yaxis="y2", legendgroup="test")
    fig.add_scatter(**steps_line, y=_col(steps, "lr"), name="lr", showlegend=False, line=dict(color=GREY, width=2.5),
                    xaxis="x3", yaxis="y3")
    fig.add_scatter(**steps_line, y=_col(steps, "img_per_s"), name="img/s", showlegend=False,
                    line=dict(color=GREY, width=2), xaxis="x4", yaxis="y4")
    return fig


def per_class_figure(classes: Sequence[str], accuracy: Sequence[float]) -> go.Figure:
    order = np.argsort(accuracy)
    fig = go.Figure(layout=_base_layout(max(260, 34 * len(classes) + 60), hovermode="closest",
                                        xaxis=dict(range=[0, 1], tickformat=".0%", title="test accuracy"),
                                        yaxis=dict(automargin=True)))
    fig.add_bar(x=[accuracy[i] for i in order], y=[classes[i] for i in order], orientation="h", marker_color=BLUE,
                text=[f"{accuracy[i]:.0%}" for i in order], textposition="auto", hovertemplate="%{y}: %{x:.1%}<extra></extra>")
    return fig


def confusion_figure(classes: Sequence[str], matrix: Sequence[Sequence[int]], selectable: bool = False) -> go.Figure:
    """Rows are the true class, columns the prediction; cells show counts and row percentages.

    With `selectable`, an invisible marker sits on every cell: Plotly selects scatter points, not
    heatmap cells, so a click on a cell selects its marker (customdata: true, predicted, count),
    which then outlines the cell.
    """
    counts = np.asarray(matrix, dtype=float)
    n = len(classes)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    text = [[f"{counts[i, j]:.0f}<br>{'<1%' if share[i, j] < 0.01 else f'{share[i, j]:.0%}'}" if counts[i, j] else ""
             for j in range(n)] for i in range(n)]
    fig = go.Figure(layout=_base_layout(max(380, (52 if n <= 12 else 40) * n + 140), hovermode="closest",
                                        xaxis=dict(title="predicted", side="bottom", tickangle=-40),
                                        yaxis=dict(title="true", autorange="reversed", automargin=True)))
    hover = "true %{y}, predicted %{x}: %{customdata:.0f} images (%{z:.1%})<extra></extra>"
    fig.add_heatmap(z=share, x=list(classes), y=list(classes), text=text, texttemplate="%{text}" if n <= 20 else None,
                    textfont=dict(size=12 if n <= 12 else 10), customdata=counts, colorscale="Blues", zmin=0, zmax=1,
                    showscale=False, hovertemplate=hover, hoverinfo="skip" if selectable else None)
    if selectable:
        cells = [(i, j) for i in range(n) for j in range(n)]
        side = max(8, min(40, 480 // max(n, 1)))
        fig.add_scatter(x=[classes[j] for _, j in cells], y=[classes[i] for i, _ in cells], mode="markers",
                        customdata=[[i, j, int(counts[i, j]), share[i, j]] for i, j in cells], showlegend=False,
                        marker=dict(symbol="square-open", size=side, opacity=0, color=ORANGE, line=dict(width=3)),
                        selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=0)),
                        hovertemplate="true %{y}, predicted %{x}: %{customdata[2]} images (%{customdata[3]:.1%})"
                                      "<br>click to see them<extra></extra>")
        fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


def topk_figure(top: Sequence[dict[str, Any]]) -> go.Figure:
    labels = [t["label"] for t in top][::-1]
    probs = [t["prob"] for t in top][::-1]
    colors = [GREY] * (len(top) - 1) + [ORANGE] if top else []
    fig = go.Figure(layout=_base_layout(max(200, 44 * len(top) + 50), hovermode="closest",
                                        margin=dict(l=10, r=10, t=10, b=10),
                                        xaxis=dict(range=[0, 1], tickformat=".0%"), yaxis=dict(automargin=True)))
    fig.add_bar(x=probs, y=labels, orientation="h", marker_color=colors, text=[f"{p:.1%}" for p in probs],
                textposition="auto", hovertemplate="%{y}: %{x:.2%}<extra></extra>")
    return fig


def compare_figure(series: dict[str, Curves], smoothing: float = 0.6) -> go.Figure:
    """Several runs on one chart: smoothed training loss per step (left), test accuracy per epoch (right)."""
    fig = go.Figure(layout=_base_layout(
        480, hovermode="closest",
        xaxis=dict(domain=[0, 0.47], title="epoch", anchor="y"), yaxis=dict(title="train loss", rangemode="tozero"),
        xaxis2=dict(domain=[0.53, 1], title="epoch", anchor="y2"), yaxis2=dict(title="test accuracy", tickformat=".0%", anchor="x2"),
        legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
        annotations=[_title("Training loss", 0, 1.0), _title("Test accuracy", 0.53, 1.0)]))
    for i, (name, curves) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        steps, per_epoch = curves.steps_frame(), curves.epochs_frame()
        fig.add_scatter(x=_col(steps, "progress"), mode="lines", y=ema(_col(steps, "loss"), smoothing), name=name,
                        legendgroup=name, line=dict(color=color, width=2.5), xaxis="x", yaxis="y")
        fig.add_scatter(x=_col(per_epoch, "epoch"), y=_col(per_epoch, "test_acc"), name=name, legendgroup=name, showlegend=False,
                        mode="lines+markers", line=dict(color=color, width=2.5), xaxis="x2", yaxis="y2")
    return fig


def architecture_figure(layers: pd.DataFrame, input_shape: Sequence[int]) -> go.Figure:
    """The stack left to right: one block per layer, its height growing with the tensor's
    spatial size and its colour by layer type, with the output shape under each block."""
    rows = [("Input", "input", " x ".join(str(d) for d in input_shape))] + \
        [(str(r["name"]), str(r["type"]), str(r["output_shape"])) for _, r in layers.iterrows()]
    colors = {"Conv2d": ORANGE, "Linear": BLUE, "MaxPool2d": "#2a9d5c", "AvgPool2d": "#2a9d5c",
              "AdaptiveAvgPool2d": "#2a9d5c", "BatchNorm2d": "#9b5de5", "ReLU": "#f4a100", "GELU": "#f4a100",
              "Dropout": GREY, "Flatten": "#00a6a6", "input": "#5c677d"}
    sizes = [_spatial(shape) for _, _, shape in rows]
    biggest = max(sizes) or 1
    fig = go.Figure(layout=_base_layout(
        360, hovermode="closest", showlegend=False, margin=dict(l=10, r=10, t=10, b=10),
        xaxis=dict(visible=False, range=[-0.7, len(rows) - 0.3]), yaxis=dict(visible=False, range=[-1.9, 1.45])))
    shapes, xs, hover = [], [], []
    for i, ((name, kind, shape), size) in enumerate(zip(rows, sizes)):
        half = 0.25 + 0.75 * math.sqrt(size / biggest)
        color = colors.get(kind, "#5c677d")
        shapes.append(dict(type="rect", x0=i - 0.38, x1=i + 0.38, y0=-half, y1=half, line=dict(color=color, width=2),
                           fillcolor=color, opacity=0.85, layer="below"))
        if i:
            shapes.append(dict(type="line", x0=i - 0.62, x1=i - 0.38, y0=0, y1=0, line=dict(color=GREY, width=2)))
        xs.append(i)
        hover.append(f"{name}: {kind}<br>output {shape}")
    fig.update_layout(shapes=shapes)
    small = len(rows) > 14
    fig.add_scatter(x=xs, y=[1.3] * len(rows), mode="text", text=[kind if kind != "input" else "input" for _, kind, _ in rows],
                    textfont=dict(size=11 if small else 14), hoverinfo="skip", textposition="middle center")
    fig.add_scatter(x=xs, y=[-1.35] * len(rows), mode="text", text=[shape.replace(" x ", "×") for _, _, shape in rows],
                    textfont=dict(size=10 if small else 13, color="#31333f"), hoverinfo="skip")
    fig.add_scatter(x=xs, y=[0] * len(rows), mode="markers", marker=dict(size=30, opacity=0), hovertext=hover,
                    hoverinfo="text")
    if len(rows) > 1:
        fig.add_annotation(x=len(rows) - 1, y=-1.75, text="numbers under each block: its output shape (channels×height×width)",
                           showarrow=False, xanchor="right", font=dict(size=12, color=GREY))
    return fig


def _spatial(shape: str) -> float:
    dims = [int(d) for d in shape.split(" x ") if d.strip().isdigit()]
    if len(dims) >= 3:
        return float(dims[-1] * dims[-2])
    return 1.0 if dims else 0.0


def regression_figure(x: Sequence[float], y: Sequence[float], w: float, b: float,
                      best: tuple[float, float] | None = None) -> go.Figure:
    lo, hi = float(min(x)), float(max(x))
    fig = go.Figure(layout=_base_layout(400, hovermode="closest", margin=dict(l=10, r=10, t=40, b=10),
                                        xaxis=dict(title="x", range=[lo - 0.2, hi + 0.2]),
                                        yaxis=dict(title="y", range=[min(y) - 1, max(y) + 1])))
    fig.add_scatter(x=list(x), y=list(y), mode="markers", name="data: y = 2x + 3 + noise",
                    marker=dict(color=GREY, size=8, opacity=0.7))
    if best is not None:
        fig.add_scatter(x=[lo, hi], y=[best[0] * lo + best[1], best[0] * hi + best[1]], mode="lines",
                        name="best possible line", line=dict(color=BLUE, width=2, dash="dash"))
    fig.add_scatter(x=[lo, hi], y=[w * lo + b, w * hi + b], mode="lines", name=f"model: y = {w:.2f}x + {b:.2f}",
                    line=dict(color=ORANGE, width=4))
    return fig


def loss_figure(steps: Sequence[int], losses: Sequence[float], total_steps: int) -> go.Figure:
    finite = [v for v in losses if math.isfinite(v)] or [1.0]
    fig = go.Figure(layout=_base_layout(300, hovermode="closest", margin=dict(l=10, r=10, t=20, b=10), showlegend=False,
                                        xaxis=dict(title="step", range=[0, max(total_steps, 1)]),
                                        yaxis=dict(title="MSE loss (log scale)", type="log",
                                                   range=[math.log10(max(min(finite), 1e-3)) - 0.2,
                                                          math.log10(max(max(finite), 1e-3)) + 0.2])))
    fig.add_scatter(x=list(steps), y=list(losses), mode="lines", line=dict(color=ORANGE, width=3), name="loss")
    return fig
