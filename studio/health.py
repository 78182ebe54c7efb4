"""The Train page's "Training health" panel: per-layer heatmaps over time and plain-words warnings.

Reads the run's `health` records through the page's RunTail (core.training.curves keeps a bounded, evenly thinned set)
and judges them with core.training.health.check, the same rules the command line prints.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.training.curves import Curves
from core.training.health import UPDATE_RATIO_GOOD, HealthWarning, check
from studio.charts import FONT

ICONS = {"error": ":material/error:", "warning": ":material/warning:", "info": ":material/lightbulb:"}
RATIO_RANGE = (-6.0, 0.0)  # log10(update / weight) drawn from 1e-6 (frozen in place) to 1 (rewritten every step)


def _grid(records: list[dict[str, Any]], field: str, weights_only: bool = False) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(x: epochs, y: layer labels in model order, z[layer, time]) of one per-layer field; NaN where a layer has none.

    Arrays, not lists: Plotly checks a list element by element (~0.1 s for a ResNet's grid), an array at once.
    """
    columns = [
        {row["name"]: row for row in r.get("layers", []) if field in row and not (weights_only and row.get("vectors_only"))}
        for r in records
    ]
    labels: dict[str, str] = {}
    for column in columns:
        for name, row in column.items():
            labels.setdefault(name, f"{name} · {row['type']}")
    x = np.array([r.get("progress", r.get("step")) for r in records], dtype=float)
    z = np.array([[column[name][field] if name in column else None for column in columns] for name in labels], dtype=float).reshape(
        len(labels), len(columns)
    )  # None -> NaN: a gap in the heatmap
    return x, list(labels.values()), z


def _log10(z: np.ndarray, floor: float) -> np.ndarray:
    """log10, with 0 (no gradient, no update) drawn at `floor` rather than left out: it is the news."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isnan(z), np.nan, np.log10(np.clip(z, 10.0**floor, None)))


def _log_ticks(z: np.ndarray) -> dict[str, Any]:
    """Colour-bar ticks for log10 values: at 1, 2 and 5 of each decade over a narrow range (so it still gets labels),
    at the decades over a wide one."""
    finite = z[np.isfinite(z)]
    if not finite.size:
        return {}
    low, high = float(finite.min()), float(finite.max())
    steps = (1, 2, 5) if high - low <= 1.5 else (1,)
    values = [float(d + np.log10(m)) for d in range(int(np.floor(low)), int(np.ceil(high)) + 1) for m in steps]
    values = [v for v in values if low - 1e-9 <= v <= high + 1e-9]
    if len(values) < 3 and high > low:  # a narrow range (0.11 to 0.34 has only 0.2): label its ends too
        gap = 0.15 * (high - low)  # where a tick is already, an end label would print on top of it
        values = sorted([*values, *(end for end in (low, high) if all(abs(end - v) > gap for v in values))])
    return {"tickvals": values, "ticktext": [_number(float(f"{10**v:.2g}")) for v in values]}


def _number(x: float) -> str:
    return f"{x:g}" if 1e-3 <= x < 1e4 else f"{x:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _layout(height: int, title: str, **extra: Any) -> dict[str, Any]:
    return {
        "height": height,
        "font": FONT,
        "margin": dict(l=10, r=10, t=44, b=10),
        "title": dict(text=f"<b>{title}</b>", x=0, xanchor="left", font=dict(size=17)),
        "xaxis": dict(title="epoch"),
        "yaxis": dict(autorange="reversed", automargin=True),
        **extra,
    }


def _height(rows: int) -> int:
    return int(min(760, max(340, 140 + 26 * rows)))


# Blue: the weights hardly move; near white across 1e-4..1e-2 (healthy for SGD and Adam alike); red: rewritten each step.
RATIO_COLORS = [
    [0.0, "#08306b"],
    [1 / 6, "#2171b5"],
    [2 / 6, "#deebf7"],
    [3 / 6, "#f7f7f7"],
    [4 / 6, "#fde0d2"],
    [5 / 6, "#ef6548"],
    [1.0, "#990000"],
]


def update_ratio_figure(records: list[dict[str, Any]]) -> go.Figure:
    """log10(update / weight) per layer over time, on a fixed scale: white near the rule of thumb (1e-3)."""
    x, y, raw = _grid(records, "update_ratio", weights_only=True)  # the rule of thumb is about weights, not biases / norms
    return go.Figure(
        go.Heatmap(
            x=x,
            y=y,
            z=_log10(raw, RATIO_RANGE[0]),
            customdata=raw,
            zmin=RATIO_RANGE[0],
            zmax=RATIO_RANGE[1],
            colorscale=RATIO_COLORS,
            colorbar=dict(title="", tickvals=[-6, -4, -3, -2, 0], ticktext=["1e-6", "1e-4", "1e-3 ✓", "1e-2", "1"]),
            hovertemplate="%{y}<br>epoch %{x:.2f}<br>update / weight %{customdata:.2g}<extra></extra>",
        ),
        layout=_layout(_height(len(y)), f"Update / weight per step (about {UPDATE_RATIO_GOOD:.0e} is healthy)".replace("e-0", "e-")),
    )


def grad_norm_figure(records: list[dict[str, Any]]) -> go.Figure:
    x, y, raw = _grid(records, "grad_norm")
    positive = raw[raw > 0]
    floor = float(np.floor(np.log10(positive.min()))) - 1 if positive.size else -8.0  # a 0 gradient: darker than any other
    return go.Figure(
        go.Heatmap(
            x=x,
            y=y,
            z=_log10(raw, floor),
            customdata=raw,
            colorscale="Viridis",
            colorbar=dict(title="", **_log_ticks(_log10(raw, floor))),
            hovertemplate="%{y}<br>epoch %{x:.2f}<br>gradient norm %{customdata:.3g}<extra></extra>",
        ),
        layout=_layout(_height(len(y)), "Gradient norm (dark: none reaches the layer)"),
    )


def dead_units_figure(records: list[dict[str, Any]]) -> go.Figure | None:
    x, y, z = _grid(records, "dead")
    if not y:
        return None
    return go.Figure(
        go.Heatmap(
            x=x,
            y=y,
            z=z,
            zmin=0,
            zmax=1,
            colorscale="Reds",
            colorbar=dict(title="", tickvals=[0, 0.5, 1], ticktext=["0%", "50%", "all"]),
            hovertemplate="%{y}<br>epoch %{x:.2f}<br>%{z:.0%} of units output 0 for every image<extra></extra>",
        ),
        layout=_layout(max(260, _height(len(y)) - 80), "Dead ReLU units (0 for every image of a batch)"),
    )


def show_warnings(warnings: list[HealthWarning]) -> None:
    for w in warnings:
        {"error": st.error, "warning": st.warning, "info": st.info}[w.level](w.message, icon=ICONS[w.level])


def panel(tail: Curves, config: dict[str, Any]) -> None:
    """Warnings (always visible), then the per-layer heatmaps in an expander; figures rebuilt only on new records."""
    records = tail.health
    warnings = check(
        [*records, *tail.epochs] if records else [*tail.steps_frame().assign(kind="step").to_dict("records"), *tail.epochs],
        num_classes=int(config.get("num_classes") or len(config.get("classes") or []) or 10),
        config=config,
    )
    show_warnings(warnings)
    with st.expander("**Training health** per layer: update size, gradients, dead units", icon=":material/monitor_heart:", expanded=True):
        if not records:
            st.caption(
                "No health records for this run (it was trained with health off, or before they existed): "
                "the warnings above come from its loss and accuracy alone."
            )
            return
        if not [w for w in warnings if w.level != "info"]:
            st.caption("No problems spotted: updates are a sensible size, gradients steady, no layer dead.")
        key = (str(getattr(tail, "run_dir", "")), getattr(tail, "offset", len(records)))
        cached = st.session_state.get("_health_figs")
        if cached is None or cached[0] != key:
            cached = (key, update_ratio_figure(records), grad_norm_figure(records), dead_units_figure(records))
            st.session_state["_health_figs"] = cached
        _, ratio_fig, grad_fig, dead_fig = cached
        # Side by side while the layer names leave the heatmaps room; a deep network's get the full width each.
        left, right = st.columns(2) if len(ratio_fig.data[0].y) <= 16 else (st.container(), st.container())
        left.plotly_chart(ratio_fig, key="health-ratio")
        right.plotly_chart(grad_fig, key="health-grad")
        if dead_fig is not None:
            st.plotly_chart(dead_fig, key="health-dead")
        st.caption(
            "Measured at log intervals (about 10 an epoch) on that step's batch: the step the weights really took (lr, momentum and "
            "Adam's scaling included) divided by their size, the gradient's L2 norm, and the ReLU units that are 0 for "
            "every image. Switch off with *Training health records* under **More settings** (`--no-health` on the "
            "command line)."
        )
