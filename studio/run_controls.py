"""The controls of a training run (Stop, Force stop), drawn at the top of the run panel.

They sit right under the progress bar, above the curves, so they are on screen at 900 px high
while a run trains; labels are short so they are never cut ("Stopping…", with what it does in
the caption beside it).
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from core.serving import runs
from studio import state

STUCK_S = 60.0  # a Stop not answered this long (one huge batch, a hung data load) offers Force stop


def stop_asked_at(run_dir: Path) -> float | None:
    """When Stop was pressed (the stop file's time), or None."""
    try:
        return (run_dir / runs.STOP_FILE).stat().st_mtime
    except FileNotFoundError:
        return None


def controls(run_dir: Path) -> None:
    # The click's callback runs before this, so the button says "Stopping…" at once.
    asked = stop_asked_at(run_dir)
    with st.container(horizontal=True, vertical_alignment="center"):
        st.button(
            "Stop" if asked is None else "Stopping…",
            icon=":material/stop_circle:",
            disabled=asked is not None,
            key="stop",
            on_click=state.registry().stop,
            args=(run_dir,),
            width="content",
            help="Ends the run after the current step and saves a checkpoint; Resume continues from it.",
        )
        if asked is None:
            st.caption("Stop saves a checkpoint: resume any time.")
            return
        if time.time() - asked > STUCK_S:
            if st.button(
                "Force stop",
                key="kill",
                width="content",
                help="The trainer has not answered Stop: end its process. Progress since its last checkpoint is lost.",
            ):
                state.registry().kill(run_dir)
        st.caption("Saving a checkpoint after the current step…")
