"""One lesson end to end in a real browser: Debian's chromium driven by Playwright against `streamlit run`.

A first visit goes straight to the lessons' overview (a fresh server), then lesson 2 from the navigation: the
model with no padding fails with PyTorch's own error, a wrong padding gets its hint, the right ones pass, the
navigation ticks the lesson, and the tick is still there after a reload and in a new tab (progress is kept on disk
under the browser's cookie) but not in another browser.
Set SCREENSHOTS=/some/dir to keep a PNG of each step.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.browser import CHROMIUM, serve

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (and CI is not set)", allow_module_level=True)

from test_browser import _no_exception, _settle, chromium, new_tab  # noqa: E402 - after the skip, as test_browser's own

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLAYGROUND_DATA_DIR", str(data))  # the progress file goes here, not into the project's data/
        mp.setenv("OMP_NUM_THREADS", "1")  # tiny networks: one thread is fastest on a busy machine
        try:
            with serve(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("log") / "streamlit.log") as url:
                yield {"url": url, "data": data}
        except RuntimeError as exc:
            pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser(server):
    with chromium() as chromium_browser:
        yield chromium_browser


@pytest.fixture(scope="module")
def page(browser):
    return new_tab(browser.new_context(), timeout_ms=90_000)  # a context: one browser's cookies


def _shot(page, name: str) -> None:
    folder = os.environ.get("SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _nav_link(page, title: str):
    return page.locator("[data-testid=stSidebarNav] a").filter(has_text=title)


def _set_padding(page, index: int, value: int) -> None:
    box = page.get_by_role("spinbutton", name=f"padding of model[{index}]")
    box.fill(str(value))
    box.press("Enter")
    _settle(page)


def test_lesson_two_end_to_end(server, browser, page):
    page.goto(f"{server['url']}/lessons")  # a first visit to a fresh server, straight to a lesson page's address
    page.get_by_role("heading", name="Lessons").first.wait_for()
    _settle(page)
    _no_exception(page, "overview")
    assert page.get_by_text("0 of 8 lessons done").count() == 1
    _shot(page, "lessons-overview")

    _nav_link(page, "Sequential & padding").click()
    page.get_by_role("heading", name="nn.Sequential and conv padding").wait_for()
    _settle(page)
    assert "radio_button_unchecked" in _nav_link(page, "Sequential & padding").inner_text()
    page.get_by_text("Output size is too small").wait_for()  # no padding at all: PyTorch's own error

    for index, value in ((0, 2), (2, 1), (4, 2)):
        _set_padding(page, index, value)
    page.get_by_role("button", name="Check").click()
    page.get_by_text("model[2] shrinks 16×16 to 14×14").wait_for()  # the hint names the layer and its formula
    _shot(page, "lesson-padding-hint")

    _set_padding(page, 2, 2)
    assert page.get_by_text("Not yet.").count() == 0  # a verdict for other paddings is not shown as this one's
    page.get_by_role("button", name="Check").click()
    page.get_by_text("Every conv keeps its size").wait_for()
    _settle(page)
    _no_exception(page, "lesson 2")
    assert "check_circle" in _nav_link(page, "Sequential & padding").inner_text()  # the navigation's tick
    assert page.get_by_text("tasks passed: 1 of 1").count() == 1
    _shot(page, "lesson-padding-passed")

    page.reload()  # progress is on disk under this browser's cookie: a reload (or a new tab) still has the tick
    page.get_by_role("heading", name="nn.Sequential and conv padding").wait_for()
    _settle(page)
    assert "check_circle" in _nav_link(page, "Sequential & padding").inner_text()
    _nav_link(page, "All lessons").click()
    page.get_by_text("1 of 8 lessons done").wait_for()
    (learner,) = [c["value"] for c in page.context.cookies() if c["name"] == "playground_learner"]
    assert [f.name for f in (server["data"] / "lessons").iterdir()] == [f"{learner}.json"]

    same_browser = new_tab(page.context, timeout_ms=90_000)  # the same browser, a new session
    same_browser.goto(f"{server['url']}/lessons")
    same_browser.get_by_text("1 of 8 lessons done").wait_for()
    same_browser.close()
    classmate = new_tab(browser.new_context(), timeout_ms=90_000)  # another browser, same studio
    classmate.goto(f"{server['url']}/lessons")
    classmate.get_by_text("0 of 8 lessons done").wait_for()
    classmate.context.close()
