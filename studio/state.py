"""What outlives one script run: the process-wide job registry, and per-session views.

One JobRegistry per app process (st.cache_resource) so every browser session
sees the same queue and training processes; the curve tails live in st.session_state
because each session reads the run folder at its own pace. In shared mode a session
lists and acts on its own workspace's runs only (studio.workspace).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from core import device
from core.serving import runs
from core.serving.jobs import JobRegistry, QueueSpot, WorkspaceJobs
from core.serving.shared import Settings
from core.training.curves import RunTail
from studio import workspace

LIVE_POINTS = 1500  # plenty for a chart ~1000 px wide; bounds memory and bytes per redraw
_MAX_TAILS = 4


@st.cache_resource(show_spinner=False)
def _registry(root: str, settings: Settings) -> JobRegistry:
    return JobRegistry(root, settings)


def jobs() -> JobRegistry:
    """The app's queue. Keyed by the folder (and settings) so tests pointing MODELS_DIR elsewhere get their own."""
    return _registry(str(runs.MODELS_DIR), workspace.settings())


def registry() -> WorkspaceJobs:
    """Start, stop, resume and delete runs as this session may: its own workspace's in shared mode."""
    return jobs().for_workspace(workspace.current(), operator=workspace.is_operator())


@st.cache_resource(show_spinner=False)
def device_info() -> dict[str, Any]:
    return device.describe()


@st.cache_resource(ttl=1.0, max_entries=4, show_spinner=False)
def _runs(root: str) -> list[runs.RunInfo]:
    return runs.list_runs(root)


def all_runs() -> list[runs.RunInfo]:
    """Every run this session may see, newest first. Listing reads every metrics file, and one
    page run asks several times (sidebar, picker, tables): one read per second is plenty."""
    jobs()  # the first page anyone opens after a restart brings the queue back to life
    return workspace.visible(_runs(str(runs.MODELS_DIR)))


@st.cache_resource(ttl=1.0, max_entries=4, show_spinner=False)
def _spots(root: str, settings: Settings) -> dict[str, QueueSpot]:
    return _registry(root, settings).queue_spots(_runs(root))


def queue_spots() -> dict[str, QueueSpot]:
    """Place in line and estimated start of every queued run (of every workspace: the line is shared)."""
    return _spots(str(runs.MODELS_DIR), workspace.settings())


def runs_changed() -> None:
    """After starting, resuming or deleting a run: the next listing, and the queue's places, must see it (another
    session's page may have filled either cache a moment ago)."""
    _runs.clear()
    _spots.clear()


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
    if not (path / runs.CONFIG_FILE).exists():
        return None
    if workspace.current() is None or workspace.is_operator():
        return path
    return path if any(r.run_id == run_id for r in all_runs()) else None  # another workspace's run: not here


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
    """Run this page inside streamlit_app.py's st.navigation, even in a server's first script run.

    Streamlit (1.67) has no supported way to keep a `pages/` folder beside an entry file that calls
    st.navigation: a private class flag, `PagesManager.uses_pages_directory`, runs the folder as the
    legacy multipage app (each file alone: no navigation, badge or wide layout) until some run in the
    process has called st.navigation. So the first visitor of a fresh server who opens /train, and
    every AppTest run (AppTest resets the flag), would get the legacy app. Streamlit's advice is to
    rename the folder (streamlit/agent-skills names it app_pages/; older releases logged "You may want
    to rename the pages/ directory"). Upstream: https://github.com/streamlit/streamlit/pull/10276 (the
    switch to st.navigation by default) saw direct URLs fall back to the legacy mode with a pages
    folder; https://github.com/streamlit/streamlit/pull/14217 made AppTest reset the flag.

    We keep `pages/`, the layout users asked for: clear the flag and run the entry file, whose
    st.navigation runs this page again, properly, in this same script run (a rerun would drop the
    click that started it), then stop the outer run. Every page calls this first, because in the
    legacy mode only the page file runs. tests/test_navigation.py fails when Streamlit changes under
    this, or no longer needs it.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # moved: tests/test_navigation.py says so; the pages still run, without the frame
        return
    if not getattr(PagesManager, "uses_pages_directory", False):
        return
    PagesManager.uses_pages_directory = False
    entry = Path(__file__).resolve().parent.parent / "streamlit_app.py"
    exec(compile(entry.read_text(), str(entry), "exec"), {"__name__": "__main__", "__file__": str(entry)})  # noqa: S102
    st.stop()
