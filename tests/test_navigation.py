"""The Streamlit internal behind studio.state.through_navigation still means what the studio relies on.

`pages/` next to streamlit_app.py puts Streamlit in its legacy multipage mode until st.navigation
has run; every page starts with through_navigation() to get into the app's navigation anyway. If a
test here fails after a Streamlit upgrade, read that function's docstring: the workaround needs
mending, or Streamlit now handles a pages/ folder with st.navigation and the workaround (and its
line at the top of every page) can go.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from core.serving import runs
from studio import state

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def no_runs(tmp_path, monkeypatch):
    """An empty models folder: the Runs page then says so and stops (a quick page to open)."""
    monkeypatch.setattr(runs, "MODELS_DIR", tmp_path)
    monkeypatch.setenv("PLAYGROUND_MODELS_DIR", str(tmp_path))


def runs_page_from_a_fresh_start() -> AppTest:
    """The Runs page as a first visit sees it: AppTest starts every run with Streamlit's flag unset."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/runs.py")
    return at.run()


def badge(at: AppTest) -> bool:
    """streamlit_app.py (the frame around every page) ran: its device badge is in the sidebar."""
    return any("cores" in m.value or "GPU" in m.value for m in at.sidebar.markdown)


def test_the_private_flag_still_means_pages_folder_until_st_navigation(monkeypatch):
    assert "uses_pages_directory" in vars(PagesManager), "Streamlit renamed or dropped the flag"
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    PagesManager(APP)  # what every new session does
    assert PagesManager.uses_pages_directory is True, "a pages/ folder no longer selects the legacy mode"

    def home() -> None: ...

    st.navigation([st.Page(home)])  # outside a script run it only switches the mode off and returns
    assert PagesManager.uses_pages_directory is False, "st.navigation no longer switches the legacy mode off"


def test_a_first_visit_to_a_page_gets_the_apps_frame_once(no_runs):
    at = runs_page_from_a_fresh_start()
    assert not at.exception, [e.value for e in at.exception]
    assert badge(at)
    assert [t.value for t in at.title] == ["Runs"]  # the page ran once, inside the navigation
    assert PagesManager.uses_pages_directory is False


def test_without_the_workaround_streamlit_still_runs_the_page_alone(no_runs, monkeypatch):
    # Fails once Streamlit handles pages/ with st.navigation itself: then delete through_navigation.
    monkeypatch.setattr(state, "through_navigation", lambda: None)  # the pages import it on every run
    at = runs_page_from_a_fresh_start()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Runs"]
    assert not badge(at), "Streamlit now runs the entry file for a first visit to a page: drop the workaround"
