"""First steps' live panel: the line and the loss, animated in place.

The whole fit is computed at once (a few hundred steps of a two-parameter model take
milliseconds) and then shown frame by frame from a fragment that re-runs on a timer. Each
frame redraws the same two keyed Vega-Lite charts with new data only (see studio.charts),
so the charts never blank between frames, and the frame shown follows the clock: a busy
machine skips frames instead of slowing the lesson down.
"""

from __future__ import annotations

import math
import time

import streamlit as st

from core.lessons import linreg, regression
from studio.charts import loss_chart, regression_chart
from studio.widgets import readable

# Animation speed -> (frames, seconds); "instant" shows the last step at once.
SPEEDS = {"slow": (80, 8.0), "normal": (30, 3.0), "instant": (1, 0.0)}


@st.cache_data(max_entries=32, show_spinner=False)
def lesson(lr: float, steps: int, noise: float, seed: int) -> linreg.Lesson:
    return linreg.lesson(lr, steps, noise, seed)


def start(settings: tuple, speed: str) -> None:
    """Play the lesson for `settings` (lr, steps, noise, seed) from its first step."""
    frames, seconds = SPEEDS.get(speed, SPEEDS["normal"])
    st.session_state["lesson_play"] = {"settings": settings, "started": time.time(), "frames": frames, "seconds": seconds}


def _shown(settings: tuple, n: int) -> tuple[int, bool]:
    """(how many steps of the history to show now, whether the animation is still playing)."""
    play = st.session_state.get("lesson_play")
    if not play or play["settings"] != settings:
        return 1, False  # not trained with these settings yet: the random start
    fraction = (time.time() - play["started"]) / play["seconds"] if play["seconds"] else 1.0
    if fraction >= 1:
        return n, False
    return 1 + round(fraction * (n - 1)), True


def _short(value: float) -> str:
    """Fits a quarter of the column: 1.914 as it is, a diverged 1.8e18 as 2×10¹⁸ (the exact value is in the help)."""
    return readable(value) if not math.isfinite(value) or abs(value) < 1e4 else readable(value, 1).replace(" ", "")


def _draw(result: linreg.Lesson, count: int) -> None:
    history = result.history[:count]
    last = history[-1]
    with st.container(horizontal=True, gap="medium"):  # each as wide as its number; they wrap when the column is narrow
        st.metric(f"step (of {result.steps})", last.step, width="content")
        st.metric("w (→ 2)", _short(last.w), help=f"w = {last.w!r}", width="content")
        st.metric("b (→ 3)", _short(last.b), help=f"b = {last.b!r}", width="content")
        st.metric("loss", _short(last.loss), help=f"MSE loss = {last.loss!r}", width="content")
    x, y = result.x.squeeze(1).tolist(), result.y.squeeze(1).tolist()
    data, spec = regression_chart(x, y, last.w, last.b, linreg.least_squares(result.x, result.y))
    st.vega_lite_chart(data, spec, key="lesson-line")
    losses = [h.loss for h in result.history]
    finite = [v for v in losses if math.isfinite(v) and v > 0] or [1.0]
    data, spec = loss_chart([h.step for h in history], [h.loss for h in history], result.steps, (min(finite), max(finite)))
    st.vega_lite_chart(data, spec, key="lesson-loss")


def live_panel(settings: tuple) -> linreg.Lesson:
    """The metrics and the two charts for `settings`; returns the lesson (for what the page says after)."""
    result = lesson(*settings)
    _, playing = _shown(settings, len(result.history))
    frames, seconds = SPEEDS["normal"]
    play = st.session_state.get("lesson_play") or {}
    every = play.get("seconds", seconds) / max(play.get("frames", frames), 1)

    @st.fragment(run_every=every if playing else None)
    def frame() -> None:
        count, still = _shown(settings, len(result.history))
        _draw(result, count)
        if playing and not still:
            st.rerun()  # the last frame is drawn: run the page once more to stop the timer and say how it went

    frame()
    return result


def finished(settings: tuple) -> bool:
    """Whether the lesson for `settings` has been played to its end."""
    play = st.session_state.get("lesson_play")
    return bool(play) and play["settings"] == settings and not _shown(settings, 2)[1]


@st.cache_data(max_entries=8, show_spinner=False)
def trap(output_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> regression.TrapResult:
    return regression.broadcast_trap(output_shape, target_shape)
