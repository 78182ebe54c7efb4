"""What outlives one script run: the process-wide job registry, and per-session views.

One JobRegistry per app process (st.cache_resource) so every browser session
sees the same training processes; the curve tails live in st.session_state
because each session reads the run folder at its own pace.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from core import device, runs
from core.curves import RunTail
from core.jobs import JobRegistry

LIVE_POINTS = 1500  # plenty for a chart ~1000 px wide; bounds memory and bytes per redraw
_MAX_TAILS = 4


@st.cache_resource(show_spinner=False)
def _registry(root: str) -> JobRegistry:
    return JobRegistry(root)


def registry() -> JobRegistry:
    # Keyed by the folder so tests pointing MODELS_DIR elsewhere get their own registry.
    return _registry(str(runs.MODELS_DIR))


@st.cache_resource(show_spinner=False)
def device_info() -> dict[str, Any]:
    return device.describe()


@st.cache_resource(ttl=1.0, max_entries=4, show_spinner=False)
def _runs(root: str) -> list[runs.RunInfo]:
    return runs.list_runs(root)


def all_runs() -> list[runs.RunInfo]:
    """Every run, newest first. Listing reads every metrics file, and one page run asks
    several times (sidebar, picker, tables): one read per second is plenty."""
    return _runs(str(runs.MODELS_DIR))


def runs_changed() -> None:
    """After starting, resuming or deleting a run: the next listing must see it."""
    _runs.clear()


def training_now() -> list[runs.RunInfo]:
    return [r for r in all_runs() if r.active]


def tail(run_dir: str | Path) -> RunTail:
    """This session's incremental reader of a run's metrics (a few kept, oldest dropped)."""
    tails: dict[str, RunTail] = st.session_state.setdefault("_tails", {})
    key = str(Path(run_dir))
    if key not in tails:
        while len(tails) >= _MAX_TAILS:
            tails.pop(next(iter(tails)))
        tails[key] = RunTail(run_dir, max_points=LIVE_POINTS)
    return tails[key]


def forget_tail(run_dir: str | Path) -> None:
    st.session_state.setdefault("_tails", {}).pop(str(Path(run_dir)), None)


def run_dir_of(run_id: str | None) -> Path | None:
    if not run_id:
        return None
    path = runs.MODELS_DIR / run_id
    return path if (path / runs.CONFIG_FILE).exists() else None


def watched_run() -> Path | None:
    """The run the Train page shows: the one this session started or picked, else one that
    is training now (a second browser sees it), else the newest run."""
    chosen = run_dir_of(st.session_state.get("watch"))
    if chosen is not None:
        return chosen
    every = all_runs()
    for info in every:
        if info.active:
            return info.path
    return every[0].path if every else None


def watch(run_dir: str | Path | None) -> None:
    st.session_state["watch"] = Path(run_dir).name if run_dir else None


def through_navigation() -> None:
    """Make sure this page runs inside streamlit_app.py's st.navigation.

    Streamlit treats a `pages/` folder next to the entry script as old-style
    multipage (each file a separate app: no navigation, no sidebar badge, narrow
    layout) until a run in the process has called st.navigation, so the first
    visitor of a fresh server who opens /train directly would get that version
    (and AppTest starts every run that way). Run the entry point here instead:
    its st.navigation runs this page again, properly, in this same script run
    (a rerun would drop the click that started it), then stop this outer run.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the flag has no such mode either
        return
    if not getattr(PagesManager, "uses_pages_directory", False):
        return
    PagesManager.uses_pages_directory = False
    entry = Path(__file__).resolve().parent.parent / "streamlit_app.py"
    exec(compile(entry.read_text(), str(entry), "exec"), {"__name__": "__main__", "__file__": str(entry)})  # noqa: S102
    st.stop()
