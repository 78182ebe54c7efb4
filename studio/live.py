"""The run panel of the Train page: live curves while training, results after.

The trainer is a child process writing the run folder; this module only reads
it. While a run trains, two fragments re-run on their own timers (the progress
line often, the curves less often), each reading just the new metrics lines
(core.training.curves.RunTail); the rest of the page is not re-run, and the figure is
rebuilt only when new records arrived.
"""

from __future__ import annotations

import ipaddress
import time
from datetime import datetime
from pathlib import Path

import streamlit as st

from core.serving import jobs, runs
from core.training.curves import format_duration
from studio import export_view, health, insight, queue_view, run_controls, small_data, state
from studio.charts import training_figure
from studio.widgets import THROUGHPUT_HELP, THROUGHPUT_LABEL, accuracy_caveat, guard, percent, status_badge

# Two cadences, because what the browser pays per redraw differs by ~10x: the progress
# line is cheap and moves a few times per second; a changed Plotly figure costs the
# browser ~0.1-0.2 s of CPU to redraw (measured with headless chromium, 4 panels).
REFRESH_S, CHART_EVERY_S = 0.5, 2.0
# When the browser and a CPU-only trainer share this machine, every redraw is CPU taken
# from training: these keep the drawing to a few percent of a 2-core laptop.
LOCAL_CPU_REFRESH_S, LOCAL_CPU_CHART_EVERY_S = 1.0, 4.0
SILENT_S = 8.0  # a "running" run this quiet gets its process checked


def run_picker(current: Path | None) -> Path | None:
    """Which run the panel shows; any session can switch to any run."""
    every = state.all_runs()[:30]
    if not every:
        return None
    ids = [r.run_id for r in every]
    # Its name (numbered where names repeat, as on the Runs page) and start, not its progress: the badge below says that.
    names = runs.distinct_names(state.all_runs())
    titles = {
        r.run_id: f"{names[r.run_id]}  ·  {datetime.fromtimestamp(r.started):%d %b %H:%M}" if r.started else names[r.run_id] for r in every
    }
    index = ids.index(current.name) if current is not None and current.name in ids else 0
    chosen = st.selectbox("Showing run", ids, index=index, format_func=titles.get, key=f"pick-{ids[index]}")
    if current is None or chosen != current.name:
        state.watch(runs.MODELS_DIR / chosen)
    return runs.MODELS_DIR / chosen


def run_panel(run_dir: Path) -> None:
    info = runs.run_info(run_dir)
    if info.status == "queued":  # waiting for a free device: its place in line, not curves
        queue_view.queued_panel(run_dir)
    elif info.status == "running":
        _live(run_dir, info.config)
    else:
        _header(info.status, info.config)
        _results(info)


def _header(status: str, config: dict, device: str | None = None) -> None:
    env = config.get("env", {})
    device = device or (f"{env.get('device')} {env.get('precision', '')}" if env else "")
    with st.container(horizontal=True, vertical_alignment="center"):
        status_badge(status)
        st.caption(
            f"**{config.get('model')}** on **{config.get('data')}** · {config.get('epochs')} epochs · "
            f"batch {config.get('batch_size')} · {config.get('optimizer')} lr {config.get('lr')}" + (f" · {device}" if device else "")
        )


def _notices(tail) -> None:
    """What the run went on without after it failed on this machine (core/training/fallback.py): each once, by its status."""
    for record in tail.notices.values():
        st.info(record.get("message", ""), icon=":material/speed:")


def _progress(tail, epochs: int) -> None:
    """The one element that changes every tick (cheap for the browser, unlike a chart)."""
    last = tail.last_step
    if not last:
        st.progress(0.0, text="Starting: loading the data and building the model…")
        return
    progress = float(last.get("progress", 0.0))
    spe = tail.steps_per_epoch or 0
    step_in_epoch = round((progress - int(last.get("epoch", 0))) * spe) if spe else None
    eta = tail.eta_seconds(epochs)  # not counted down between records: an unchanged line costs nothing to resend
    where = runs.position(int(last.get("epoch", 0)), step_in_epoch, epochs, spe).capitalize() if spe else f"Epoch {progress:.1f}"
    st.progress(
        min(1.0, progress / max(epochs, 1)), text=f"{where} · loss {last.get('loss', float('nan')):.3f} · ETA {format_duration(eta)}"
    )


def _snapshot(tail, epochs: int, config: dict) -> dict:
    """The chart and headline numbers, rebuilt only when new records arrived."""
    smoothing = st.session_state.get("smoothing", 0.6)
    key = (str(tail.run_dir), smoothing, epochs)
    snap = st.session_state.get("_live_fig")
    if snap is not None and snap["key"] == key and snap["offset"] == tail.offset:
        return snap
    fig = training_figure(tail, smoothing=smoothing, epochs=epochs)
    fig.update_layout(uirevision=str(tail.run_dir))  # keep the user's zoom between redraws
    last, latest = tail.last_step, (tail.epochs[-1] if tail.epochs else {})
    numbers = {  # st.metric's arguments
        "Train loss": {"value": f"{last['loss']:.3f}" if isinstance(last.get("loss"), float) else "–"},
        "Test accuracy": {"value": percent(latest.get("test_acc")), **accuracy_caveat(config, tail.status)},
        THROUGHPUT_LABEL: {"value": f"{last['img_per_s']:,.0f}" if last.get("img_per_s") else "–", "help": THROUGHPUT_HELP},
        "Elapsed": {"value": format_duration(last.get("elapsed"))},
    }
    snap = {"key": key, "offset": tail.offset, "fig": fig, "numbers": numbers}
    st.session_state["_live_fig"] = snap
    return snap


def _chart(snap: dict) -> None:
    st.plotly_chart(snap["fig"], key="train-curves")


def _viewer_is_local() -> bool:
    address = st.context.ip_address  # None for localhost; IPv4 may arrive mapped into IPv6
    if address is None:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ip.is_loopback


def cadence() -> tuple[float, float]:
    """(progress, chart) refresh seconds for this viewer."""
    if _viewer_is_local() and state.device_info()["kind"] == "cpu":
        return LOCAL_CPU_REFRESH_S, LOCAL_CPU_CHART_EVERY_S
    return REFRESH_S, CHART_EVERY_S


def _live(run_dir: Path, config: dict) -> None:
    epochs = int(config.get("epochs", 1))
    refresh_s, chart_every_s = cadence()

    def fresh_tail():
        tail = state.tail(run_dir)
        tail.update()
        ended = tail.state not in runs.ACTIVE_STATUSES  # finished, stopped or failed
        if not ended and time.time() - tail.changed_at > SILENT_S:  # or did the process die without a word?
            ended = not runs.run_info(run_dir).active
            tail.changed_at = time.time()  # alive: look again in SILENT_S, not on every tick
        if ended:
            state.runs_changed()
            st.rerun()  # redraw the whole page as results
        return tail

    @st.fragment(run_every=refresh_s)
    def progress() -> None:
        tail = fresh_tail()
        device = f"{tail.status.get('device')} {tail.status.get('precision')}" if tail.status.get("device") else None
        _header(tail.state, config, device)
        _notices(tail)
        _progress(tail, epochs)
        run_controls.controls(run_dir)  # at the top: on screen while the curves below grow

    @st.fragment(run_every=chart_every_s)
    def curves() -> None:
        tail = fresh_tail()
        snap = _snapshot(tail, epochs, config)
        for column, (label, metric) in zip(st.columns(4), snap["numbers"].items()):
            column.metric(label, **metric)
        _chart(snap)
        st.slider("Smoothing of the per-step curves", 0.0, 0.95, 0.6, 0.05, key="smoothing")
        health.panel(tail, config)

    progress()
    curves()


def _results(info: runs.RunInfo) -> None:
    tail = state.tail(info.path)
    tail.update()
    epochs = int(info.config.get("epochs", 1))
    message = info.message or (jobs.last_error(info.path) if info.status in ("failed", "interrupted") else "")
    caveat = accuracy_caveat(info.config)
    of_few = f" ({caveat['delta']})" if caveat else ""
    if info.status == "finished":
        st.success(
            f"Finished: test accuracy **{percent(info.last_acc)}**{of_few} after {info.epochs_done} epochs in {format_duration(info.seconds)}.",
            icon=":material/check_circle:",
        )
    elif info.status in ("stopped", "interrupted"):
        st.warning(message or "Stopped.", icon=":material/pause_circle:")
    elif info.status in ("failed", "diverged"):
        st.error(message or "The run failed; see train.log in its folder.", icon=":material/error:")
    _notices(tail)
    with guard():
        if info.resumable and st.button(f"Resume ({info.epochs_done} of {epochs} epochs done)", type="primary"):
            state.registry().resume(info.path)
            state.runs_changed()
            st.rerun()
    if not tail.last_step and not tail.epochs:
        return
    cols = st.columns(5)
    cols[0].metric("Test accuracy", percent(info.last_acc), **caveat)
    cols[1].metric("Best", percent(info.best_acc), help=small_data.BEST_HELP)
    cols[2].metric("Epochs", f"{info.epochs_done} / {epochs}")
    cols[3].metric("Time", format_duration(info.seconds))
    cols[4].metric(THROUGHPUT_LABEL, f"{info.img_per_s:,.0f}" if info.img_per_s else "–", help=THROUGHPUT_HELP)
    small_data.results_notes(info, tail.epochs)
    _chart(_snapshot(tail, epochs, info.config))
    st.slider("Smoothing of the per-step curves", 0.0, 0.95, 0.6, 0.05, key="smoothing")
    health.panel(tail, info.config)
    if info.has_checkpoint:
        _downloads(info)
    insight.results(info, tail.final_epoch, key="train")  # per class, confusion matrix, the model's mistakes (long)


def _downloads(info: runs.RunInfo) -> None:
    if st.button("Classify images with this run", icon=":material/image_search:", type="primary"):
        st.session_state["predict_run"] = info.run_id
        st.switch_page("pages/predict.py")
    export_view.downloads(info, key="train")
