"""The Train page's "Find a learning rate" button: core.training.lr_find on the form's settings, its curve, and its verdict.

The sweep runs in this script run (with a spinner and a progress bar); a suggestion (a new lr, or the recipe's
when the curve agrees with it) is written into the learning-rate widget's session_state key on the next run,
before the widget is created (Streamlit forbids changing a widget's value after it exists in a run). An
inconclusive sweep writes nothing: the field keeps what it holds. Whenever the field differs from the recipe's lr,
one button puts the recipe's back the same way.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core.training.lr_find import lr_find
from studio import train_form
from studio.charts import BLUE, FONT, ORANGE, legend_clear_of_toolbar
from studio.widgets import guard

STEPS = 100  # fastai's default: a few seconds for the small presets on a CPU
RESULT_KEY, FILL_KEY = "_lr_find", "_lr_find_fill"
LR_LIMITS = (1e-6, 10.0)  # what the learning-rate field accepts


def apply_suggestion() -> None:
    """Before the hyperparameter widgets: put a just-found learning rate into the field's state."""
    fill = st.session_state.pop(FILL_KEY, None)
    if fill:
        key, lr = fill
        st.session_state[key] = lr


def figure(result: dict[str, Any]) -> go.Figure:
    lrs, losses, raw = result["lrs"], result["losses"], result.get("raw_losses") or []
    fig = go.Figure()
    fig.add_scatter(x=lrs, y=raw, mode="lines", name="loss per step", line=dict(color=ORANGE, width=1), opacity=0.35)
    fig.add_scatter(x=lrs, y=losses, mode="lines", name="smoothed", line=dict(color=ORANGE, width=3))
    lr, read = result.get("suggested_lr"), result.get("valley_lr")
    if lr and read:
        low, high = result["valley"]
        fig.add_vrect(x0=low, x1=high, fillcolor=BLUE, opacity=0.08, line_width=0)  # the longest descent

        def on_curve(x: float) -> float | None:
            return losses[min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i] / x)))]

        fig.add_scatter(
            x=[read], y=[on_curve(read)], mode="markers", name="read off the curve", marker=dict(size=11, color=BLUE, symbol="circle-open")
        )
        fig.add_scatter(
            x=[lr],
            y=[on_curve(lr)],
            mode="markers+text",
            name="suggestion",
            text=[f"  {lr:g}"],
            textposition="middle right",
            textfont=dict(size=16, color=BLUE),
            marker=dict(size=14, color=BLUE, symbol="circle"),
        )
        fig.add_vline(x=lr, line=dict(color=BLUE, dash="dot"))
    finite = [v for v in losses if v is not None]
    top = min(max(finite), 2.5 * finite[0]) if finite else None  # the blow-up at the end would flatten the rest
    layout = dict(
        height=340,
        font=FONT,
        margin=dict(l=10, r=10, t=44, b=10),
        hovermode="x unified",
        title=dict(text="<b>Loss while the learning rate grows</b>", x=0, xanchor="left", font=dict(size=17)),
        xaxis=dict(type="log", title="learning rate (log scale)", exponentformat="e"),
        yaxis=dict(title="training loss", range=[0, top * 1.05] if top else None),
    )
    fig.update_layout(legend_clear_of_toolbar(layout, right=True))  # the title has the top-left corner
    return fig


def section(model: dict[str, Any] | None, data: str | None, overrides: dict[str, Any]) -> None:
    """The button, the way back to the recipe's lr, and the last sweep's curve and verdict for this model and data."""
    name = model["model"] if model else None
    recipe_lr = train_form.base_config(name or "custom", overrides.get("device", "auto")).lr
    with st.container(horizontal=True, vertical_alignment="center"):
        clicked = st.button(
            "Find a learning rate",
            icon=":material/query_stats:",
            disabled=model is None or data is None,
            key="lr-find",
            help=f"Trains a throwaway copy of the model for up to {STEPS} steps while the learning rate grows from "
            "1e-7 to 10, and reads the longest stretch where the loss keeps falling. The recipe's learning rate "
            "stays when it lies in that stretch, or when the curve says nothing clear.",
        )
        if name and "lr" in overrides:  # the field differs from the recipe (the finder's suggestion, or typed in)
            if st.button(f"Use the recipe's lr ({recipe_lr:g})", icon=":material/undo:", key="lr-recipe"):
                st.session_state[FILL_KEY] = (train_form.lr_key(name), float(recipe_lr))
                st.rerun()  # the field is set before it is drawn
        st.caption(
            f"A {STEPS}-step sweep on a copy of the model with these settings: seconds on a CPU for the small presets "
            "(longer for big models). It changes the learning rate only when the curve clearly asks for another; "
            "nothing is saved."
        )
    if clicked and model is not None and data is not None:
        config = train_form.make_config(model, data, {k: v for k, v in overrides.items() if k != "lr"})
        with guard(), st.spinner("Sweeping the learning rate on a copy of the model…"):
            bar = st.progress(0.0, text="Loading the data…")

            def show(i: int, lr: float, loss: float) -> None:
                bar.progress((i + 1) / STEPS, text=f"step {i + 1} of at most {STEPS} · lr {lr:.1e} · loss {loss:.3f}")

            result = lr_find(config, steps=STEPS, on_step=show)
            st.session_state[RESULT_KEY] = {"for": (name, data), "result": result, "recipe_lr": config.lr}
            if result["suggested_lr"]:
                lr = min(max(result["suggested_lr"], LR_LIMITS[0]), LR_LIMITS[1])
                st.session_state[FILL_KEY] = (train_form.lr_key(name), lr)
            st.rerun()  # the field is filled in before it is drawn
    found = st.session_state.get(RESULT_KEY)
    if not found or found["for"] != (name, data):
        return
    result = found["result"]
    st.plotly_chart(figure(result), key="lr-find-chart")
    ended = "stopped when the loss blew up" if result["stopped_early"] else "the whole sweep"
    took = f"{result['steps']} steps ({ended}) in {result['seconds']:.1f} s."
    recipe, current = found["recipe_lr"], overrides.get("lr", found["recipe_lr"])
    if result["suggested_by"] == "fits":
        where = "so it stays" if math.isclose(current, recipe) else f"but the field holds {current:g}"
        st.success(
            f"**The sweep agrees with the recipe's learning rate ({recipe:g}), {where}**: {result['note']}. {took}",
            icon=":material/check_circle:",
        )
    elif result["suggested_lr"]:
        if math.isclose(current, result["suggested_lr"]):
            where = f"filled in above; the recipe's is {recipe:g}"
        elif math.isclose(current, recipe):
            where = f"the field holds the recipe's {recipe:g}"
        else:
            where = f"the field holds {current:g}; the recipe's is {recipe:g}"
        st.caption(
            f"Suggested **{result['suggested_lr']:g}** ({where}). "
            f"The loss falls steadily at a constant lr of {result['valley_lr']:.2g}, halfway along the longest "
            f"stretch where it keeps falling (shaded). {schedule_words(result)} {took}"
        )
    else:
        kept = (
            f"so the recipe's learning rate ({recipe:g}) is kept"
            if math.isclose(current, recipe)
            else f"so the learning rate field keeps your {current:g} (the recipe's is {recipe:g})"
        )
        st.info(f"**The sweep is inconclusive, {kept}**: {result['note']}. {took}", icon=":material/info:")


def schedule_words(result: dict[str, Any]) -> str:
    """How the suggested (peak) lr relates to the constant lr the sweep read off."""
    mean = result["mean_lr_factor"]
    if mean > 0.95:
        return f"The {result['schedule']} schedule holds it, so that is the suggestion."
    return (
        f"The {result['schedule']} schedule's lr averages {mean:.2f} of its peak over a run, "
        f"so the peak that averages {result['valley_lr']:.2g} is suggested."
    )
