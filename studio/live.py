"""The run panel of the Train page: live curves while training, results after.

The trainer is a child process writing the run folder; this module only reads
it. While a run trains, a fragment re-runs every REFRESH_S seconds, reads just
the new metrics lines (core.curves.RunTail) and redraws; the rest of the page
is not re-run, and the figure is rebuilt only when new records arrived.
"""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from core import jobs, runs
from core.curves import format_duration
from core.evaluate import evaluate_run
from core.predict import Predictor
from studio import state
from studio.charts import confusion_figure, per_class_figure, training_figure
from studio.widgets import guard, percent, run_title, status_badge

REFRESH_S = 0.5
SILENT_S = 8.0  # a "running" run this quiet gets its process checked


def run_picker(current: Path | None) -> Path | None:
    """Which run the panel shows; any session can switch to any run."""
    every = runs.list_runs()[:30]
    if not every:
        return None
    ids = [r.run_id for r in every]
    titles = {r.run_id: f"{r.run_id}  ·  {run_title(r)}" for r in every}
    index = ids.index(current.name) if current is not None and current.name in ids else 0
    chosen = st.selectbox("Showing run", ids, index=index, format_func=titles.get, key=f"pick-{ids[index]}")
    if current is None or chosen != current.name:
        state.watch(runs.MODELS_DIR / chosen)
    return runs.MODELS_DIR / chosen


def run_panel(run_dir: Path) -> None:
    info = runs.run_info(run_dir)
    if info.status in ("running", "queued"):
        _live(run_dir, info.config)
    else:
        _header(info.status, info.config)
        _results(info)


def _header(status: str, config: dict, device: str | None = None) -> None:
    env = config.get("env", {})
    device = device or (f"{env.get('device')} {env.get('precision', '')}" if env else "")
    with st.container(horizontal=True, vertical_alignment="center"):
        status_badge(status)
        st.caption(f"**{config.get('model')}** on **{config.get('data')}** · {config.get('epochs')} epochs · "
                   f"batch {config.get('batch_size')} · {config.get('optimizer')} lr {config.get('lr')}"
                   + (f" · {device}" if device else ""))


def _progress(tail, epochs: int) -> None:
    last = tail.last_step
    if not last:
        st.progress(0.0, text="Starting: loading the data and building the model…")
        return
    progress = float(last.get("progress", 0.0))
    spe = tail.steps_per_epoch or 0
    step_in_epoch = round((progress - int(last.get("epoch", 0))) * spe) if spe else None
    eta = tail.eta_seconds(epochs, now=time.time())
    text = (f"Epoch {int(last.get('epoch', 0)) + 1} of {epochs} · step {step_in_epoch} / {spe}" if spe else f"Epoch {progress:.1f}")
    st.progress(min(1.0, progress / max(epochs, 1)), text=f"{text} · ETA {format_duration(eta)}")
    latest = tail.epochs[-1] if tail.epochs else {}
    cols = st.columns(4)
    cols[0].metric("Train loss", f"{last.get('loss', float('nan')):.3f}")
    cols[1].metric("Test accuracy", percent(latest.get("test_acc")), help="after the last finished epoch")
    cols[2].metric("Images / s", f"{last.get('img_per_s', 0):,.0f}")
    cols[3].metric("Elapsed", format_duration(last.get("elapsed")))


def _chart(tail, epochs: int) -> None:
    smoothing = st.session_state.get("smoothing", 0.6)
    key = (str(tail.run_dir), tail.offset, smoothing, epochs)
    cached = st.session_state.get("_live_fig")
    if cached is None or cached[0] != key:  # rebuild only when new records arrived
        fig = training_figure(tail, smoothing=smoothing, epochs=epochs)
        fig.update_layout(uirevision=str(tail.run_dir))  # keep the user's zoom between redraws
        cached = (key, fig)
        st.session_state["_live_fig"] = cached
    st.plotly_chart(cached[1], key="train-curves")


def _live(run_dir: Path, config: dict) -> None:
    epochs = int(config.get("epochs", 1))

    @st.fragment(run_every=REFRESH_S)
    def live() -> None:
        tail = state.tail(run_dir)
        tail.update()
        if tail.state not in ("running", "queued"):
            st.rerun()  # finished, stopped or failed: redraw the whole page as results
        if time.time() - tail.changed_at > SILENT_S and runs.run_info(run_dir).status not in ("running", "queued"):
            st.rerun()  # the process died without a word (killed, crashed)
        device = f"{tail.status.get('device')} {tail.status.get('precision')}" if tail.status.get("device") else None
        _header(tail.state, config, device)
        _progress(tail, epochs)
        _chart(tail, epochs)
        left, right = st.columns([1, 3], vertical_alignment="bottom")
        stopping = (run_dir / runs.STOP_FILE).exists()
        if left.button("Stop (saves a checkpoint)" if not stopping else "Stopping…", icon=":material/stop_circle:",
                       disabled=stopping, key="stop"):
            state.registry().stop(run_dir)
            st.toast("Stopping after this batch; the checkpoint is being saved.")
        right.slider("Smoothing of the per-step curves", 0.0, 0.95, 0.6, 0.05, key="smoothing")

    live()


def _results(info: runs.RunInfo) -> None:
    tail = state.tail(info.path)
    tail.update()
    epochs = int(info.config.get("epochs", 1))
    message = info.message or (jobs.last_error(info.path) if info.status in ("failed", "interrupted") else "")
    if info.status == "finished":
        st.success(f"Finished: test accuracy **{percent(info.last_acc)}** after {info.epochs_done} epochs "
                   f"in {format_duration(info.seconds)}.", icon=":material/check_circle:")
    elif info.status in ("stopped", "interrupted"):
        st.warning(message or "Stopped.", icon=":material/pause_circle:")
    elif info.status in ("failed", "diverged"):
        st.error(message or "The run failed; see train.log in its folder.", icon=":material/error:")
    with guard():
        if info.resumable and st.button(f"Resume ({info.epochs_done} of {epochs} epochs done)", type="primary"):
            state.registry().resume(info.path)
            st.rerun()
    if not tail.last_step and not tail.epochs:
        return
    cols = st.columns(5)
    cols[0].metric("Test accuracy", percent(info.last_acc))
    cols[1].metric("Best", percent(info.best_acc))
    cols[2].metric("Epochs", f"{info.epochs_done} / {epochs}")
    cols[3].metric("Time", format_duration(info.seconds))
    cols[4].metric("Images / s", f"{info.img_per_s:,.0f}" if info.img_per_s else "–")
    _chart(tail, epochs)
    st.slider("Smoothing of the per-step curves", 0.0, 0.95, 0.6, 0.05, key="smoothing")
    classes = info.config.get("classes") or []
    final = tail.final_epoch
    if classes and final.get("confusion"):
        left, right = st.columns([2, 3])
        left.markdown("##### Accuracy per class")
        left.plotly_chart(per_class_figure(classes, final["per_class"]), key="per-class")
        right.markdown("##### Confusion matrix (row = true class)")
        right.plotly_chart(confusion_figure(classes, final["confusion"]), key="confusion")
    elif classes and info.has_checkpoint and st.button("Compute per-class accuracy and the confusion matrix"):
        with guard(), st.spinner("Evaluating the checkpoint on the test images…"):
            result = evaluate_run(info.path, str(info.config.get("data")))
            left, right = st.columns([2, 3])
            left.plotly_chart(per_class_figure(classes, list(result["per_class"].values())), key="per-class-now")
            right.plotly_chart(confusion_figure(classes, result["confusion"]), key="confusion-now")
    if info.has_checkpoint:
        _downloads(info)


def _downloads(info: runs.RunInfo) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        if st.button("Classify images with this run", icon=":material/image_search:", type="primary"):
            st.session_state["predict_run"] = info.run_id
            st.switch_page("pages/predict.py")
        st.download_button("Weights (state_dict .pt)", lambda: runs.state_dict_bytes(info.path),
                           file_name=f"{info.run_id}.pt", mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                           help="Recommended: tensors only (plus classes and normalization). Loads with "
                                "torch.load(path, weights_only=True) and on the Predict page.")
        st.download_button("Whole model (pickle)", lambda: runs.whole_model_bytes(Predictor.from_run(info.path).model),
                           file_name=f"{info.run_id}-model.pt", mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                           help="torch.save(model): unsafe to load from others — loading a pickle can run any code. "
                                "Share the state_dict instead.")
    st.caption("The whole-model file is a Python pickle: only ever load one you made yourself.")
