"""What every lesson page shares: its place in the navigation (with a tick once passed), its header and links,
and the task box that runs a check from core.lessons and says how it went.

Progress is kept per browser: in shared mode the browser's workspace (its code is in the address) has its own
file; otherwise the browser's learner id, kept in a cookie, names its file (core.lessons.progress).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator

import streamlit as st

from core.lessons import LESSONS, Verdict, lesson
from core.lessons.progress import Progress, clean_learner_id, new_learner_id, progress_path
from studio import workspace
from studio.state import through_navigation

# slug -> (page file, short title in the navigation). Each file sits in pages/ itself, its name its address
# (/lesson_padding): a first visit to a fresh server finds it there (studio.state.through_navigation).
PAGES = {
    "regression": ("pages/first_steps.py", "First steps"),
    "padding": ("pages/lesson_padding.py", "Sequential & padding"),
    "loss": ("pages/lesson_loss.py", "Loss functions"),
    "loop": ("pages/lesson_loop.py", "The training loop"),
    "device": ("pages/lesson_device.py", "The device"),
    "saving": ("pages/lesson_saving.py", "Saving & loading"),
    "new_image": ("pages/lesson_new_image.py", "A new image"),
    "fine_tuning": ("pages/lesson_fine_tuning.py", "Fine-tuning"),
}
OVERVIEW = "pages/lessons.py"
# Where the studio uses the same idea at full size.
STUDIO = {
    "regression": ("pages/train.py", "Train", "the same loop trains every network there"),
    "padding": ("pages/architecture.py", "Architecture", "any layer stack's shapes, and a padding solver"),
    "loss": ("pages/train.py", "Train", "the loss choice, and the health panel that flags a loss stuck at ln(classes)"),
    "loop": ("pages/train.py", "Train", "the loop for your settings, under *The PyTorch training loop*"),
    "device": ("pages/train.py", "Train", "runs on the GPU when there is one; the badge in the sidebar says which"),
    "saving": ("pages/predict.py", "Predict", "load a state_dict into the architecture it was trained with"),
    "new_image": ("pages/predict.py", "Predict", "your photos through a run's own deterministic eval transform"),
    "fine_tuning": ("pages/train.py", "Train", "any torchvision network with ImageNet weights, backbone frozen"),
}
DONE_ICON, TODO_ICON = ":material/check_circle:", ":material/radio_button_unchecked:"


LEARNER_COOKIE = "playground_learner"
LEARNER_COOKIE_DAYS = 365


def learner() -> str:
    """This browser's learner id: the one this session already uses, else the browser's cookie, else a new one.

    Streamlit reads cookies once, when a session opens, and cannot set one; `remember_learner` has the browser set
    it, so a reload, a new tab or tomorrow's visit finds the same progress."""
    code = st.session_state.get("learner") or clean_learner_id(_cookie()) or new_learner_id()
    st.session_state["learner"] = code
    return code


def _cookie() -> str | None:
    value = st.context.cookies.get(LEARNER_COOKIE)
    return value if isinstance(value, str) else None  # AppTest's sessions have no browser: not a string there


def progress() -> Progress:
    code = workspace.current()
    return Progress(progress_path(workspace=code) if code else progress_path(learner=learner()))


def remember_learner(where) -> None:
    """Outside shared mode, have the browser keep this session's learner id for a year (a first visit has none)."""
    if workspace.current() is not None or _cookie() == learner():
        return
    cookie = f"{LEARNER_COOKIE}={learner()}; max-age={LEARNER_COOKIE_DAYS * 86400}; path=/; SameSite=Lax"
    where.html(f"<script>document.cookie = {cookie!r};</script>", unsafe_allow_javascript=True)


def navigation() -> list:
    """The Lessons group of the navigation: the overview, then each lesson with a tick once all its tasks pass."""
    store = progress()
    passed = store.passed()
    pages = [st.Page(OVERVIEW, title="All lessons", icon=":material/school:")]
    for item in LESSONS:
        path, title = PAGES[item.slug]
        icon = DONE_ICON if store.lesson_done(item, passed) else TODO_ICON
        pages.append(st.Page(path, title=title, icon=icon))
    return pages


def header(slug: str) -> None:
    """The lesson's title, its progress and the studio page that uses its idea. First thing on a lesson page: it also
    runs the page inside the app's navigation on a direct first visit (studio.state.through_navigation)."""
    through_navigation()
    item = lesson(slug)
    st.title(f"{item.number} · {item.title}")
    passed = progress().passed()
    done = sum(task.key in passed for task in item.tasks)
    studio_page, studio_title, why = STUDIO[slug]
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(f"Lesson {item.number} of {len(LESSONS)} · tasks passed: {done} of {len(item.tasks)}", width="content")
        st.page_link(studio_page, label=f"At full size: {studio_title}", icon=":material/open_in_new:", help=why)


@contextlib.contextmanager
def task_box(key: str, prompt: str) -> Iterator[None]:
    """The bordered box of task `key`: its title (marked once passed) and prompt; the answer's widgets and `check`
    go inside."""
    item = next(t for lesson_ in LESSONS for t in lesson_.tasks if t.key == key)
    with st.container(border=True):
        passed = " · :green[passed]" if key in progress().passed() else ""
        st.markdown(f":material/task_alt: **Task: {item.title}**{passed}")
        st.markdown(prompt)
        yield


def check(key: str, run: Callable[[], Verdict], inputs: Hashable, button: str = "Check") -> Verdict | None:
    """The Check button of task `key`. A click runs `run` (real tensors, a real model) and records a pass; the verdict
    stays on screen while `inputs` (what the learner chose) stay the same, so an answer changed after a check is not
    shown as checked."""
    slot = f"lesson_verdict:{key}"
    if st.button(button, key=f"check:{key}", icon=":material/fact_check:"):
        verdict = run()
        st.session_state[slot] = (inputs, verdict)
        if verdict.ok and key not in progress().passed():
            progress().mark(key)
            st.rerun()  # once more from the top: the navigation's tick and the header's count include this pass
    kept = st.session_state.get(slot)
    if not kept or kept[0] != inputs:
        return None
    verdict = kept[1]
    if verdict.ok:
        st.success(verdict.message, icon=":material/check_circle:")
    else:
        st.warning(f"**Not yet.** {verdict.message}", icon=":material/lightbulb:")
    if verdict.detail:
        st.code(verdict.detail, language=None, wrap_lines=True)
    return verdict


def task(key: str, prompt: str, run: Callable[[], Verdict], inputs: Hashable) -> Verdict | None:
    """A task whose answer is set with widgets elsewhere on the page (First steps' sliders): the box and its check."""
    with task_box(key, prompt):
        return check(key, run, inputs)


def next_lesson(slug: str) -> None:
    item = lesson(slug)
    if item.number < len(LESSONS):
        following = LESSONS[item.number]
        st.page_link(PAGES[following.slug][0], label=f"Next: {following.number} · {following.title}", icon=":material/arrow_forward:")
    else:
        st.page_link(OVERVIEW, label="All lessons", icon=":material/school:")
