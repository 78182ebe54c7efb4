"""The Train page's "Training health" panel: per-layer heatmaps over time and plain-words warnings.

Reads the run's `health` records through the page's RunTail (core.curves keeps a bounded, evenly thinned set)
and judges them with core.health.check, the same rules the command line prints.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.curves import Curves
from core.health import UPDATE_RATIO_GOOD, HealthWarning, check
from studio.charts import FONT

ICONS = {"error": ":material/error:", "warning": ":material/warning:", "info": ":material/lightbulb:"}
RATIO_RANGE = (-6.0, 0.0)  # log10(update / weight) drawn from 1e-6 (frozen in place) to 1 (rewritten every step)


def _grid(records: list[dict[str, Any]], field: str, *, log: bool = True,
          weights_only: bool = False) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(x: epochs, y: layer labels in model order, z[layer, time]) of one per-layer field (log10 of it with `log`).

    Arrays, not lists: Plotly checks a list element by element (~0.1 s for a ResNet's grid), an array at once.
    """
    columns = [{row["name"]: row for row in r.get("layers", []) if field in row and not (weights_only and row.get("vectors_only"))}
               for r in records]
    labels: dict[str, str] = {}
    for column in columns:
        for name, row in column.items():
            labels.setdefault(name, f"{name} · {row['type']}")
    x = np.array([r.get("progress", r.get("step")) for r in records], dtype=float)
    z = np.array([[column[name][field] if name in column else None for column in columns] for name in labels],
                 dtype=float).reshape(len(labels), len(columns))  # None -> NaN: a gap in the heatmap
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(z > 0, np.log10(z), np.nan)
    return x, list(labels.values()), z


def _layout(height: int, title: str, **extra: Any) -> dict[str, Any]:
    return {"height": height, "font": FONT, "margin": dict(l=10, r=10, t=44, b=10),
            "title": dict(text=f"<b>{title}</b>", x=0, xanchor="left", font=dict(size=17)),
            "xaxis": dict(title="epoch"), "yaxis": dict(autorange="reversed", automargin=True), **extra}


def _height(rows: int) -> int:
    return int(min(720, 130 + 24 * rows))


def update_ratio_figure(records: list[dict[str, Any]]) -> go.Figure:
    """log10(update / weight) per layer over time: white near the rule of thumb (1e-3), blue too small, red too large."""
    x, y, z = _grid(records, "update_ratio", weights_only=True)  # the rule of thumb is about weights, not biases / norms
    good = float(np.log10(UPDATE_RATIO_GOOD))
    return go.Figure(go.Heatmap(x=x, y=y, z=z, zmin=RATIO_RANGE[0], zmax=RATIO_RANGE[1], zmid=good, colorscale="RdBu_r",
                               colorbar=dict(title="log10", tickvals=[-6, -5, -4, -3, -2, -1, 0],
                                             ticktext=["1e-6", "1e-5", "1e-4", "1e-3 ✓", "1e-2", "0.1", "1"]),
                               hovertemplate="%{y}<br>epoch %{x:.2f}<br>log10(update/weight) %{z:.2f}<extra></extra>"),
                     layout=_layout(_height(len(y)), "Update / weight per step (about 1e-3 is healthy)"))


def grad_norm_figure(records: list[dict[str, Any]]) -> go.Figure:
    x, y, z = _grid(records, "grad_norm")
    return go.Figure(go.Heatmap(x=x, y=y, z=z, colorscale="Viridis", colorbar=dict(title="log10"),
                                hovertemplate="%{y}<br>epoch %{x:.2f}<br>log10(gradient norm) %{z:.2f}<extra></extra>"),
                     layout=_layout(_height(len(y)), "Gradient norm (log10)"))


def dead_units_figure(records: list[dict[str, Any]]) -> go.Figure | None:
    x, y, z = _grid(records, "dead", log=False)
    if not y:
        return None
    return go.Figure(go.Heatmap(x=x, y=y, z=z, zmin=0, zmax=1, colorscale="Reds", colorbar=dict(title="dead", tickformat=".0%"),
                                hovertemplate="%{y}<br>epoch %{x:.2f}<br>%{z:.0%} of units output 0 for every image<extra></extra>"),
                     layout=_layout(_height(len(y)) - 40, "Dead ReLU units (output 0 for every image of a batch)"))


def show_warnings(warnings: list[HealthWarning]) -> None:
    for w in warnings:
        {"error": st.error, "warning": st.warning, "info": st.info}[w.level](w.message, icon=ICONS[w.level])


def panel(tail: Curves, config: dict[str, Any]) -> None:
    """Warnings (always visible), then the per-layer heatmaps in an expander; figures rebuilt only on new records."""
    records = tail.health
    warnings = check([*records, *tail.epochs] if records else [*tail.steps_frame().assign(kind="step").to_dict("records"),
                                                                 *tail.epochs],
                     num_classes=int(config.get("num_classes") or len(config.get("classes") or []) or 10), config=config)
    show_warnings(warnings)
    with st.expander("**Training health** per layer: update size, gradients, dead units", icon=":material/monitor_heart:",
                     expanded=True):
        if not records:
            st.caption("No health records for this run (it was trained with health off, or before they existed): "
                       "the warnings above come from its loss and accuracy alone.")
            return
        if not [w for w in warnings if w.level != "info"]:
            st.caption("No problems spotted: updates are a sensible size, gradients steady, no layer dead.")
        key = (str(getattr(tail, "run_dir", "")), getattr(tail, "offset", len(records)))
        cached = st.session_state.get("_health_figs")
        if cached is None or cached[0] != key:
            cached = (key, update_ratio_figure(records), grad_norm_figure(records), dead_units_figure(records))
            st.session_state["_health_figs"] = cached
        _, ratio_fig, grad_fig, dead_fig = cached
        left, right = st.columns(2)
        left.plotly_chart(ratio_fig, key="health-ratio")
        right.plotly_chart(grad_fig, key="health-grad")
        if dead_fig is not None:
            st.plotly_chart(dead_fig, key="health-dead")
        st.caption("Measured at every log interval on that step's batch: the step the weights really took (lr, momentum and "
                   "Adam's scaling included) divided by their size, the gradient's L2 norm, and the ReLU units that are 0 for "
                   "every image. Switch off with `health=False` (`--no-health`).")
