"""The Train page's panel for a run that waits in the queue: its place in line, an estimated
start, and Stop (which takes it out of the line). When the run starts, the page redraws as
the live run panel (studio.live)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.data.spec import DataSpec
from core.serving import runs
from core.serving.jobs import QueueSpot
from studio import state
from studio.widgets import guard, status_badge

QUEUE_REFRESH_S = 1.0
POOL_NAMES = {"cpu": "the CPU", "cuda": "the GPUs", "mps": "the Apple GPU"}


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def about(seconds: float) -> str:
    """A wait as people say it: 'about 4 min', 'about 2 h 10 min'."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def describe(spot: QueueSpot | None) -> str:
    """'2nd in line for the CPU (1 run training; 1 at a time). Estimated start: in about 3 min.'"""
    if spot is None:
        return "Waiting for a free device: it starts in a moment."
    place = "next" if spot.position == 1 else f"{ordinal(spot.position)} in line"
    line = (
        f"Waiting in the queue: **{place}** for {POOL_NAMES.get(spot.pool, spot.pool)} "
        f"({spot.training} training now; {spot.capacity} at a time)."
    )
    if spot.eta_s is None:
        return line + " Estimated start: when the runs ahead finish (no finished run yet to judge their length by)."
    if spot.eta_s < 5:
        return line + " Estimated start: any moment now."
    return line + f" Estimated start: in {about(spot.eta_s)}."


def queued_panel(run_dir: Path) -> None:
    """Refreshes on its own while the run waits; redraws the whole page when it leaves the queue."""

    @st.fragment(run_every=QUEUE_REFRESH_S)
    def panel() -> None:
        info = runs.run_info(run_dir)
        if info.status != "queued":  # it started, or was taken out of the queue
            state.runs_changed()
            st.rerun()
        config = info.config
        with st.container(horizontal=True, vertical_alignment="center"):
            status_badge("queued")
            st.caption(
                f"**{config.get('model')}** on **{DataSpec.parse(str(config.get('data', ''))).name(detail=True)}** · "
                f"{config.get('epochs')} epochs · batch {config.get('batch_size')}"
                + (" · resuming" if (info.queue or {}).get("mode") == "resume" else "")
            )
        st.info(describe(state.queue_spots().get(info.run_id)), icon=":material/schedule:")
        with guard():
            if st.button("Stop (leave the queue)", icon=":material/cancel:", key="leave-queue"):
                state.registry().stop(run_dir)
                state.runs_changed()
                st.rerun()

    panel()
