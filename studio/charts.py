"""Plotly figures for the pages: training curves, results, predictions, diagrams.

Figures are built from plain dicts without a Plotly template: templates make a
figure several times slower to build, and the live chart is rebuilt a few times
per second while training shares the same CPU. Streamlit's own chart theme
styles them instead, and the font sizes are chosen for a projector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.serving import runs
from core.training.curves import Curves, ema

ORANGE = "#EE4C2C"  # PyTorch's colour: training
BLUE = "#1f6fd1"  # held-out (test) data
GREY = "#8a8f98"
FONT = dict(size=16)
PALETTE = ["#EE4C2C", "#1f6fd1", "#2a9d5c", "#9b5de5", "#f4a100", "#00a6a6", "#d6336c", "#5c677d"]


# Plotly's toolbar (the modebar) shows over a figure's top-right corner while the mouse is on it: a legend there
# loses its first entries under it. Every figure with a legend places it with legend_clear_of_toolbar.
TOOLBAR_PX = 40  # the toolbar's row at the top of a figure, in pixels


def legend_clear_of_toolbar(layout: dict[str, Any], *, right: bool = False) -> dict[str, Any]:
    """`layout` with its legend where the toolbar cannot cover it: in a row over the plot's top-left corner, or
    (`right`) in a column beside the plot that starts below the toolbar's row (a top margin of TOOLBAR_PX)."""
    if right:
        legend = dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.02)
        margin = {**layout.get("margin", {}), "t": max(layout.get("margin", {}).get("t", 0), TOOLBAR_PX)}
        return {**layout, "legend": {**layout.get("legend", {}), **legend}, "margin": margin}
    legend = dict(orientation="h", yanchor="bottom", y=1.04, xanchor="left", x=0)
    return {**layout, "legend": {**layout.get("legend", {}), **legend}}


def _base_layout(height: int, **extra: Any) -> dict[str, Any]:
    layout = {"height": height, "font": FONT, "margin": dict(l=10, r=10, t=50, b=10), "hovermode": "x unified"}
    return {**legend_clear_of_toolbar(layout), **extra}


def _title(text: str, x: float, y: float) -> dict[str, Any]:
    return dict(
        text=f"<b>{text}</b>", x=x, y=y, xref="paper", yref="paper", xanchor="left", yanchor="bottom", showarrow=False, font=dict(size=17)
    )


def _share_bars(fig: go.Figure, labels: Sequence[str], shares: Sequence[float], colour: Any, digits: int) -> None:
    """Horizontal bars of shares in [0, 1], each labelled with its percentage (hover: one more digit)."""
    fig.add_bar(
        x=list(shares),
        y=list(labels),
        orientation="h",
        marker_color=colour,
        text=[f"{s:.{digits}%}" for s in shares],
        textposition="auto",
        hovertemplate=f"%{{y}}: %{{x:.{digits + 1}%}}<extra></extra>",
    )


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
    fig = go.Figure(
        layout=_base_layout(
            640,
            xaxis=dict(domain=[0, 0.47], anchor="y", **axis),
            yaxis=dict(domain=top_row, title="loss", rangemode="tozero"),
            xaxis2=dict(domain=[0.53, 1], anchor="y2", **axis),
            yaxis2=dict(domain=top_row, anchor="x2", title="accuracy", range=[0, 1.02], tickformat=".0%"),
            xaxis3=dict(domain=[0, 0.47], anchor="y3", **bottom),
            yaxis3=dict(domain=low_row, anchor="x3", title="lr", exponentformat="e"),
            xaxis4=dict(domain=[0.53, 1], anchor="y4", **bottom),
            yaxis4=dict(domain=low_row, anchor="x4", title="img/s", rangemode="tozero"),
            annotations=[
                _title("Loss", 0, 0.93),
                _title("Accuracy", 0.53, 0.93),
                _title("Learning rate", 0, 0.23),
                _title("Images / s (training, so far)", 0.53, 0.23),  # the run's one throughput figure (core.training.loop.Progress)
            ],
        )
    )
    steps_line = dict(x=x, mode="lines")
    epoch_line = dict(x=ex, mode="lines+markers", marker=dict(size=9))

    def line(panel: int, y: list, name: str, colour: str, width: float, *, per_epoch: bool = False, **extra: Any) -> None:
        axes = {"xaxis": f"x{panel if panel > 1 else ''}", "yaxis": f"y{panel if panel > 1 else ''}"}
        fig.add_scatter(**(epoch_line if per_epoch else steps_line), y=y, name=name, line=dict(color=colour, width=width), **axes, **extra)

    loss, acc = _col(steps, "loss"), _col(steps, "acc")
    # Loss: every step faintly, the smoothed trend boldly, and the test loss once per epoch.
    line(1, loss, "train loss (per step)", ORANGE, 1, opacity=0.3, showlegend=False, hoverinfo="skip")
    line(1, ema(loss, smoothing) if smoothing else loss, "train", ORANGE, 3, legendgroup="train")
    line(1, _col(per_epoch, "test_loss"), "test", BLUE, 3, per_epoch=True, legendgroup="test")
    # Accuracy: the smoothed steps faintly, the epoch's train and test accuracy boldly (the loss's legend names them).
    line(2, ema(acc, smoothing) if smoothing else acc, "train (per step)", ORANGE, 1.5, opacity=0.45, showlegend=False, legendgroup="train")
    line(2, _col(per_epoch, "train_acc"), "train", ORANGE, 3, per_epoch=True, showlegend=False, legendgroup="train")
    line(2, _col(per_epoch, "test_acc"), "test", BLUE, 3, per_epoch=True, showlegend=False, legendgroup="test")
    line(3, _col(steps, "lr"), "lr", GREY, 2.5, showlegend=False)
    line(4, _col(steps, "img_per_s"), "images / s", GREY, 2, showlegend=False)
    return fig


def per_class_figure(classes: Sequence[str], accuracy: Sequence[float]) -> go.Figure:
    order = np.argsort(accuracy)
    fig = go.Figure(
        layout=_base_layout(
            max(260, 34 * len(classes) + 60),
            hovermode="closest",
            xaxis=dict(range=[0, 1], tickformat=".0%", title="test accuracy"),
            yaxis=dict(automargin=True),
        )
    )
    _share_bars(fig, [classes[i] for i in order], [accuracy[i] for i in order], BLUE, digits=0)
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
    text = [
        [f"{counts[i, j]:.0f}<br>{'<1%' if share[i, j] < 0.01 else f'{share[i, j]:.0%}'}" if counts[i, j] else "" for j in range(n)]
        for i in range(n)
    ]
    fig = go.Figure(
        layout=_base_layout(
            max(380, (52 if n <= 12 else 40) * n + 140),
            hovermode="closest",
            xaxis=dict(title="predicted", side="bottom", tickangle=-40),
            yaxis=dict(title="true", autorange="reversed", automargin=True),
        )
    )
    hover = "true %{y}, predicted %{x}: %{customdata:.0f} images (%{z:.1%})<extra></extra>"
    fig.add_heatmap(
        z=share,
        x=list(classes),
        y=list(classes),
        text=text,
        texttemplate="%{text}" if n <= 20 else None,
        textfont=dict(size=12 if n <= 12 else 10),
        customdata=counts,
        colorscale="Blues",
        zmin=0,
        zmax=1,
        showscale=False,
        hovertemplate=hover,
        hoverinfo="skip" if selectable else None,
    )
    if selectable:
        cells = [(i, j) for i in range(n) for j in range(n)]
        side = max(8, min(40, 480 // max(n, 1)))
        fig.add_scatter(
            x=[classes[j] for _, j in cells],
            y=[classes[i] for i, _ in cells],
            mode="markers",
            customdata=[[i, j, int(counts[i, j]), share[i, j]] for i, j in cells],
            showlegend=False,
            marker=dict(symbol="square-open", size=side, opacity=0, color=ORANGE, line=dict(width=3)),
            selected=dict(marker=dict(opacity=1)),
            unselected=dict(marker=dict(opacity=0)),
            hovertemplate="true %{y}, predicted %{x}: %{customdata[2]} images (%{customdata[3]:.1%})<br>click to see them<extra></extra>",
        )
        fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


def topk_figure(top: Sequence[dict[str, Any]]) -> go.Figure:
    labels = [t["label"] for t in top][::-1]
    probs = [t["prob"] for t in top][::-1]
    colors = [GREY] * (len(top) - 1) + [ORANGE] if top else []
    fig = go.Figure(
        layout=_base_layout(
            max(200, 44 * len(top) + 50),
            hovermode="closest",
            margin=dict(l=10, r=10, t=10, b=10),
            xaxis=dict(range=[0, 1], tickformat=".0%"),
            yaxis=dict(automargin=True),
        )
    )
    _share_bars(fig, labels, probs, colors, digits=1)
    return fig


def compare_figure(series: dict[str, Curves], smoothing: float = 0.6) -> go.Figure:
    """Several runs on one chart: smoothed training loss per step (left), test accuracy per epoch (right)."""
    fig = go.Figure(
        layout=_base_layout(
            480,
            hovermode="closest",
            xaxis=dict(domain=[0, 0.47], title="epoch", anchor="y"),
            yaxis=dict(title="train loss", rangemode="tozero"),
            xaxis2=dict(domain=[0.53, 1], title="epoch", anchor="y2"),
            yaxis2=dict(title="test accuracy", tickformat=".0%", anchor="x2", range=[0, 1.02]),  # one scale for every run
            legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
            annotations=[_title("Training loss", 0, 1.0), _title("Test accuracy", 0.53, 1.0)],
        )
    )
    for i, (name, curves) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        steps, per_epoch = curves.steps_frame(), curves.epochs_frame()
        fig.add_scatter(
            x=_col(steps, "progress"),
            mode="lines",
            y=ema(_col(steps, "loss"), smoothing),
            name=name,
            legendgroup=name,
            line=dict(color=color, width=2.5),
            xaxis="x",
            yaxis="y",
        )
        fig.add_scatter(
            x=_col(per_epoch, "epoch"),
            y=_col(per_epoch, "test_acc"),
            name=name,
            legendgroup=name,
            showlegend=False,
            mode="lines+markers",
            line=dict(color=color, width=2.5),
            xaxis="x2",
            yaxis="y2",
        )
    losses = np.array([y for trace in fig.data if trace.yaxis == "y" for y in trace.y if y is not None], dtype=float)
    losses = losses[np.isfinite(losses) & (losses > 0)]
    if losses.size and losses.max() > LOG_LOSS_RATIO * np.median(losses):
        # One run blew up (a sweep's too-large lr): on a linear axis its peak flattens every other curve to zero.
        # dtick 1: a label per power of ten (1, 10, 100), not Plotly's "2, 5" between unlabelled decades.
        fig.layout.yaxis.update(type="log", dtick=1, rangemode="normal", title="train loss (log scale)")
    return fig


LOG_LOSS_RATIO = 20  # a loss peak this many times the runs' median puts the comparison's loss axis on a log scale


# Short labels so a row of blocks stays readable; the full name and type are in each block's hover.
_SHORT_TYPES = {
    "BatchNorm2d": "BatchNorm",
    "MaxPool2d": "MaxPool",
    "AvgPool2d": "AvgPool",
    "AdaptiveAvgPool2d": "AdaptPool",
    "Identity": "Identity",
    "input": "input",
}
ARCH_PER_ROW = 11  # blocks per row: about 75 px each in the page's wide layout (820 px at a 1280 px window)
ARCH_LABEL_CHARS = 10


def short_type(kind: str) -> str:
    return _SHORT_TYPES.get(kind, kind if len(kind) <= ARCH_LABEL_CHARS else kind[: ARCH_LABEL_CHARS - 1] + "…")


def architecture_figure(layers: pd.DataFrame, input_shape: Sequence[int], per_row: int = ARCH_PER_ROW) -> go.Figure:
    """The layers in order, one block each, left to right and then on the next row like lines of text: a block's
    height grows with the tensor's spatial size, its colour shows the layer type, its output shape is under it."""
    rows = [("input", "input", " x ".join(str(d) for d in input_shape))] + [
        (str(r["name"]), str(r["type"]), str(r["output_shape"])) for _, r in layers.iterrows()
    ]
    colors = {
        "Conv2d": ORANGE,
        "Linear": BLUE,
        "MaxPool2d": "#2a9d5c",
        "AvgPool2d": "#2a9d5c",
        "AdaptiveAvgPool2d": "#2a9d5c",
        "BatchNorm2d": "#9b5de5",
        "ReLU": "#f4a100",
        "GELU": "#f4a100",
        "Dropout": GREY,
        "Flatten": "#00a6a6",
        "input": "#5c677d",
    }
    per_row = len(rows) if len(rows) <= per_row + 2 else per_row  # a stack of up to 14 stays on one line
    lines = math.ceil(len(rows) / per_row)
    step = 4.0  # vertical distance between lines, in block half-heights: labels above and below fit between
    sizes = [_spatial(shape) for _, _, shape in rows]
    biggest = max(sizes) or 1
    fig = go.Figure(
        layout=_base_layout(
            (360 if lines == 1 else 80 + 150 * lines),
            hovermode="closest",
            showlegend=False,
            margin=dict(l=10, r=10, t=30, b=10),
            xaxis=dict(visible=False, range=[-0.7, per_row - 0.3], fixedrange=True),
            yaxis=dict(visible=False, range=[-step * (lines - 1) - 2.0, 1.6], fixedrange=True),
        )
    )
    shapes, xs, ys, hover = [], [], [], []
    for i, ((name, kind, shape), size) in enumerate(zip(rows, sizes)):
        x, y = i % per_row, -step * (i // per_row)
        half = 0.25 + 0.75 * math.sqrt(size / biggest)
        color = colors.get(kind, "#5c677d")
        shapes.append(
            dict(
                type="rect",
                x0=x - 0.38,
                x1=x + 0.38,
                y0=y - half,
                y1=y + half,
                line=dict(color=color, width=2),
                fillcolor=color,
                opacity=0.85,
                layer="below",
            )
        )
        if i and x:
            shapes.append(dict(type="line", x0=x - 0.62, x1=x - 0.38, y0=y, y1=y, line=dict(color=GREY, width=2)))
        elif i:  # the line breaks: a path from the end of the last line back to the start of this one
            gap = y + step / 2
            shapes.append(
                dict(
                    type="path",
                    path=f"M {per_row - 1 + 0.38},{y + step} H {per_row - 0.45} V {gap} H -0.6 V {y} H -0.38",
                    line=dict(color=GREY, width=1.5, dash="dot"),
                )
            )
        xs.append(x)
        ys.append(y)
        hover.append(f"{name}: {kind}<br>output {shape}")
    fig.update_layout(shapes=shapes)
    fig.add_scatter(
        x=xs,
        y=[y + 1.3 for y in ys],
        mode="text",
        text=[short_type(kind) for _, kind, _ in rows],
        textfont=dict(size=12 if lines > 1 or len(rows) > 10 else 14),
        hoverinfo="skip",
    )
    fig.add_scatter(
        x=xs,
        y=[y - 1.35 for y in ys],
        mode="text",
        text=[shape.replace(" x ", "×") for _, _, shape in rows],
        textfont=dict(size=11 if lines > 1 or len(rows) > 10 else 13, color="#31333f"),
        hoverinfo="skip",
    )
    fig.add_scatter(x=xs, y=ys, mode="markers", marker=dict(size=30, opacity=0), hovertext=hover, hoverinfo="text")
    if len(rows) > 1:
        fig.add_annotation(
            x=per_row - 1,
            y=ys[-1] - 1.75 if lines == 1 else -step * (lines - 1) - 1.8,
            text="under each block: its output shape (channels×height×width); hover for the layer's name",
            showarrow=False,
            xanchor="right",
            font=dict(size=12, color=GREY),
        )
    return fig


def _spatial(shape: str) -> float:
    dims = [int(d) for d in shape.split(" x ") if d.strip().isdigit()]
    if len(dims) >= 3:
        return float(dims[-1] * dims[-2])
    return 1.0 if dims else 0.0


# ----------------------------------------------------------------- First steps (Vega-Lite)
#
# The lesson animates its two charts up to 30 times a second. A Plotly chart's element id hashes its
# figure, so every frame would be a new element: the browser drops the old chart and draws the new
# one from scratch, and for that instant the chart is empty. A Vega-Lite chart with a key keeps its
# id while its data changes, and Streamlit then swaps only the dataset inside the live view. So each
# spec below is fixed for a lesson (axes, colours, legend): a frame changes nothing but the data.

_VEGA_CONFIG = {
    "axis": {"labelFontSize": 14, "titleFontSize": 16, "grid": True},
    "legend": {"labelFontSize": 14, "orient": "top", "title": None, "columns": 2},
    "view": {"stroke": None},
}
REGRESSION_SERIES = {"data": "data: y = 2x + 3 + noise", "best": "best possible line", "model": "the model: y = w·x + b"}


def regression_chart(
    x: Sequence[float], y: Sequence[float], w: float, b: float, best: tuple[float, float] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(data, Vega-Lite spec) of the points, the least-squares line and the model's line.

    The axes follow the data only, so the spec stays the same while w and b move (a model line far
    off, as when training diverges, is clipped at the edges)."""
    lo, hi = float(min(x)), float(max(x))
    names = REGRESSION_SERIES
    rows = [{"x": float(a), "y": float(c), "series": names["data"]} for a, c in zip(x, y)]
    if best is not None:
        rows += [{"x": v, "y": best[0] * v + best[1], "series": names["best"]} for v in (lo, hi)]
    rows += [{"x": v, "y": _finite(w * v + b), "series": names["model"]} for v in (lo, hi)]
    colour = {"field": "series", "type": "nominal", "scale": {"domain": list(names.values()), "range": [GREY, BLUE, ORANGE]}}
    xs = {"field": "x", "type": "quantitative", "title": "x", "scale": {"domain": [lo - 0.2, hi + 0.2], "nice": False}}
    ys = {"field": "y", "type": "quantitative", "title": "y", "scale": {"domain": [min(y) - 1, max(y) + 1], "nice": False}}

    def only(series: str) -> list[dict[str, Any]]:
        return [{"filter": {"field": "series", "equal": names[series]}}]

    spec = {
        "height": 400,
        "config": _VEGA_CONFIG,
        "layer": [
            {
                "transform": only("data"),
                "mark": {"type": "circle", "size": 70, "opacity": 0.7},
                "encoding": {"x": xs, "y": ys, "color": colour},
            },
            {
                "transform": only("best"),
                "mark": {"type": "line", "strokeDash": [6, 4], "strokeWidth": 2, "clip": True},
                "encoding": {"x": xs, "y": ys, "color": colour},
            },
            {
                "transform": only("model"),
                "mark": {"type": "line", "strokeWidth": 4, "clip": True},
                "encoding": {"x": xs, "y": ys, "color": colour},
            },
        ],
    }
    return pd.DataFrame(rows, columns=["x", "y", "series"]), spec


def loss_chart(
    steps: Sequence[int], losses: Sequence[float], total_steps: int, y_range: tuple[float, float] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(data, Vega-Lite spec) of the loss per step on a log axis, with a dot on the latest step (one
    step alone is still visible). `y_range`: the whole lesson's finite losses, so the axis stays put
    while the animation draws; a loss that is no longer a finite number is left out."""
    points = [(int(s), float(v)) for s, v in zip(steps, losses) if math.isfinite(v) and v > 0]
    finite = [v for _, v in points] or [1.0]
    low, high = y_range or (min(finite), max(finite))
    first, last = math.floor(math.log10(max(low, 1e-12))), math.ceil(math.log10(max(high, 1e-12)) - 1e-9)
    last = max(last, first + 1)
    ticks, labels = log_ticks(first, last)
    frame = pd.DataFrame(
        {"step": [s for s, _ in points], "loss": [v for _, v in points], "latest": [i == len(points) - 1 for i in range(len(points))]},
        columns=["step", "loss", "latest"],
    )
    xs = {"field": "step", "type": "quantitative", "title": "step", "scale": {"domain": [0, max(total_steps, 1)], "nice": False}}
    ys = {
        "field": "loss",
        "type": "quantitative",
        "title": "MSE loss (log scale)",
        "axis": {"values": ticks, "labelExpr": _label_expr(ticks, labels)},
        "scale": {"type": "log", "domain": [float(f"1e{first}"), float(f"1e{last}")], "nice": False},
    }
    tooltip = [{"field": "step", "type": "quantitative"}, {"field": "loss", "type": "quantitative", "format": ".4~g"}]
    spec = {
        "height": 300,
        "config": _VEGA_CONFIG,
        "layer": [
            {"mark": {"type": "line", "color": ORANGE, "strokeWidth": 3, "clip": True}, "encoding": {"x": xs, "y": ys}},
            {
                "transform": [{"filter": "datum.latest"}],
                "mark": {"type": "circle", "color": ORANGE, "size": 110, "opacity": 1},
                "encoding": {"x": xs, "y": ys, "tooltip": tooltip},
            },
        ],
    }
    return frame, spec


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def log_ticks(first: int, last: int, most: int = 7) -> tuple[list[float], list[str]]:
    """Ticks at the powers of ten 10^first..10^last (every second or third one when there are many), and their labels
    in one format for the whole axis: plain numbers while they all read easily (0.01 to 1000), else 10ⁿ. Vega's own
    labels mixed "100000", "10000000000" and "1e+15" on one diverging axis."""
    every = max(1, math.ceil((last - first + 1) / most))
    exponents = list(range(last, first - 1, -every))[::-1]  # from the top down, so the top of the axis is labelled
    if -3 <= exponents[0] and exponents[-1] <= 3:
        labels = [f"{10.0**e:.{max(0, -e)}f}" for e in exponents]
    else:
        labels = [f"10{str(e).translate(_SUPERSCRIPT)}" for e in exponents]
    return [float(f"1e{e}") for e in exponents], labels


def _label_expr(values: Sequence[float], labels: Sequence[str]) -> str:
    """A Vega expression that labels each tick value with its text (the ticks are given, so it knows them all)."""
    return "".join(f"datum.value == {v!r} ? '{text}' : " for v, text in zip(values, labels)) + "''"


def _finite(value: float, limit: float = 1e12) -> float:
    """Far beyond any axis, yet a number JSON and Vega can carry (inf and NaN are not)."""
    return max(-limit, min(limit, value)) if math.isfinite(value) else limit


def sweep_parallel_figure(rows: Sequence[dict[str, Any]], grid: dict[str, list[Any]]) -> go.Figure:
    """A sweep's finished runs as lines across one axis per varied field, ending at their test accuracy (and coloured
    by it): which values the good runs share shows at a glance. Categorical values sit at evenly spaced ticks."""
    done = [r for r in rows if r.get("val_acc") is not None]
    dimensions = []
    for name, values in grid.items():
        words = [runs.setting_word(v) for v in values]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        log = numeric and name in ("lr", "weight_decay") and min(values) > 0 and max(values) / min(values) >= 10
        if numeric and not log:
            dimensions.append(
                dict(label=name.replace("_", " "), values=[r["settings"][name] for r in done], tickvals=values, ticktext=words)
            )
        elif log:  # a log axis: 0.0003, 0.003 and 0.03 evenly apart, as a learner thinks of them
            dimensions.append(
                dict(
                    label=f"{name.replace('_', ' ')} (log)",
                    values=[math.log10(r["settings"][name]) for r in done],
                    tickvals=[math.log10(v) for v in values],
                    ticktext=words,
                )
            )
        else:
            dimensions.append(
                dict(
                    label=name.replace("_", " "),
                    values=[values.index(r["settings"][name]) for r in done],
                    tickvals=list(range(len(values))),
                    ticktext=words,
                )
            )
    accs = [r["val_acc"] for r in done]
    dimensions.append(
        dict(
            label="test accuracy",
            values=accs,
            range=[min(accs + [1.0]) * 0.98 if accs else 0, max(accs + [0.0]) * 1.02 or 1],
            tickformat=".0%",
        )
    )
    fig = go.Figure(
        go.Parcoords(
            line=dict(color=accs, colorscale=[[0, GREY], [1, ORANGE]], showscale=False),
            dimensions=dimensions,
            labelfont=dict(size=16),
            tickfont=dict(size=14),
        )
    )
    fig.update_layout(
        height=390,
        font=FONT,
        # Parcoords draws its axis titles in the top margin: the chart's title goes above them, not beside.
        margin=dict(l=60, r=60, t=100, b=20),
        title=dict(text="<b>Settings → test accuracy</b>", x=0, y=1, yref="container", yanchor="top", pad=dict(t=8), font=dict(size=17)),
    )
    return fig
