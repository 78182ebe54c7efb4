"""The studio in a real browser: Debian's chromium driven by Playwright against `streamlit run`.

One app server and one browser for the module (both are slow to start). The
story is the issue's: start a run with the defaults, watch the chart grow,
reload and find the run still going, stop it, then classify an uploaded image.
Set SCREENSHOTS=/some/dir to keep a PNG of every page.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (and CI is not set)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402 - after the skip: a browser-less laptop needs neither

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from studio.watch import serve

    models = tmp_path_factory.mktemp("models")
    try:
        with serve(models, tmp_path_factory.mktemp("log") / "streamlit.log") as url:
            yield {"url": url, "models": models}
    except RuntimeError as exc:
        pytest.fail(str(exc))
    finally:
        for run in models.iterdir():  # a run the test left training must not outlive it
            (run / "STOP").touch()


@pytest.fixture(scope="module")
def page(server):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"CI is set but {CHROMIUM} is missing: install Debian's chromium package")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def _settle(page, extra: float = 0.5) -> None:
    """Wait until Streamlit has finished running the script for this page."""
    page.wait_for_selector("[data-testid=stApp]")
    page.wait_for_timeout(300)
    page.wait_for_function("!document.querySelector('[data-testid=stStatusWidget]')", timeout=90_000)
    page.wait_for_timeout(int(extra * 1000))


def _no_exception(page, where: str) -> None:
    boxes = page.locator("[data-testid=stException]")
    assert boxes.count() == 0, f"{where}: {boxes.first.inner_text()[:500]}"


def _shot(page, name: str) -> None:
    folder = os.environ.get("SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1400, "height": 2400})
        page.wait_for_timeout(800)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))
        page.set_viewport_size({"width": 1400, "height": 1000})


CURVE_POINTS = """() => {
  const charts = [...document.querySelectorAll('[data-testid=stPlotlyChart] .js-plotly-plot')];
  const gd = charts.find(g => (g.data || []).some(t => t.name === 'train'));
  return gd ? Math.max(...gd.data.map(t => (t.x || []).length)) : -1;
}"""


def _curve_points(page) -> int:
    return page.evaluate(CURVE_POINTS)


def _wait_points_above(page, n: int, timeout_s: float = 150) -> int:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        points = _curve_points(page)
        if points > n:
            return points
        page.wait_for_timeout(500)
    raise AssertionError(f"the training chart did not grow past {n} points in {timeout_s:.0f}s")


def _png() -> bytes:
    from core.data import shapes_dataset
    from PIL import Image

    ds = shapes_dataset(n_train=10, n_test=10, seed=11)
    buffer = io.BytesIO()
    Image.fromarray(ds.test.images[0].permute(1, 2, 0).numpy()).resize((96, 96)).save(buffer, "PNG")
    return buffer.getvalue()


def test_every_page_renders(server, page):
    # A sub-page first: on a fresh server Streamlit would treat pages/ as old-style
    # multipage for a direct visit, without the app's navigation (studio.state.through_navigation).
    for path, title in [("runs", "Runs"), ("", "Torch Playground"), ("first_steps", "First steps"),
                        ("architecture", "Architecture"), ("train", "Train"), ("predict", "Predict")]:
        page.goto(f"{server['url']}/{path}")
        page.get_by_role("heading", name=title).first.wait_for()
        _settle(page, extra=1.0)
        assert page.get_by_role("link", name="First steps", exact=True).count() == 1, f"{path}: not the app's navigation"
        assert "cores" in page.locator("[data-testid=stSidebar]").inner_text() or "GPU" in page.locator(
            "[data-testid=stSidebar]").inner_text()  # the device badge
        _no_exception(page, path or "home")
        _shot(page, path or "home")


def test_train_reload_stop_then_predict(server, page):
    page.goto(f"{server['url']}/train")
    page.get_by_role("button", name="Start training").wait_for()
    _settle(page)
    # The defaults, but long enough that a fast GPU is still training when the test stops it.
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("300")
    epochs.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Start training").click()

    # The chart appears and grows while the child process trains.
    first = _wait_points_above(page, 1)
    grown = _wait_points_above(page, first)
    assert grown > first
    _no_exception(page, "train (live)")
    _shot(page, "train-live")

    # Away to another page and back: the run went on, and the chart picks up where it is now.
    page.get_by_role("link", name="Home", exact=True).first.click()
    page.get_by_role("heading", name="Torch Playground").first.wait_for()
    page.get_by_text("Training: cifar10_quick", exact=False).first.wait_for()  # the sidebar says so
    page.wait_for_timeout(2500)
    _no_exception(page, "home while training")
    page.get_by_role("link", name="Train", exact=True).first.click()
    back = _wait_points_above(page, grown - 1)
    _wait_points_above(page, back)

    # A reload is a new browser session: it finds the run still training and keeps drawing.
    page.reload()
    stop = page.get_by_role("button", name="Stop (saves a checkpoint)")
    stop.wait_for()  # only shown while the run trains
    after_reload = _wait_points_above(page, 1)
    _wait_points_above(page, after_reload)

    stop.click()
    page.get_by_text("Stopped by request", exact=False).first.wait_for(timeout=120_000)
    _settle(page, extra=1.0)
    _no_exception(page, "train (stopped)")
    assert page.get_by_role("button", name="Resume", exact=False).first.is_visible()
    _shot(page, "train-stopped")

    # Classify an uploaded picture with the stopped run's checkpoint, plus one bad file.
    page.goto(f"{server['url']}/predict")
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.wait_for(state="attached")
    _settle(page)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(files=[
        {"name": "my-shape.png", "mimeType": "image/png", "buffer": _png()},
        {"name": "notes.png", "mimeType": "image/png", "buffer": b"these are my notes, not a picture"},
    ])
    page.get_by_text("what the model sees").first.wait_for(timeout=60_000)
    _settle(page, extra=1.0)
    assert page.locator("[data-testid=stPlotlyChart]").count() >= 1
    bad = page.locator("[data-testid=stAlertContentError]").filter(has_text="notes.png")
    assert bad.count() == 1
    _no_exception(page, "predict")
    _shot(page, "predict-results")


def test_predict_where_does_it_look(server, page):
    """Upload a picture, switch on "Where does it look?", and see the Grad-CAM overlay with its legend."""
    if not any((run / "checkpoint.pt").exists() for run in server["models"].iterdir()):
        from core.train import TrainConfig, train  # this test alone (-k): the story above left no run

        train(TrainConfig.for_model("cifar10_quick", data="shapes:300", epochs=1, batch_size=50, precision="fp32"),
              server["models"] / "explain-run")
    page.goto(f"{server['url']}/predict")
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.wait_for(state="attached")
    _settle(page)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(files=[
        {"name": "my-shape.png", "mimeType": "image/png", "buffer": _png()}])
    page.get_by_text("what the model sees").first.wait_for(timeout=120_000)
    _settle(page)
    assert page.get_by_text("where it looks for").count() == 0
    page.get_by_text("Where does it look?").first.click()
    page.get_by_text("where it looks for").first.wait_for(timeout=120_000)
    _settle(page, extra=1.0)
    overlay = page.locator("[data-testid=stImage]").filter(has_text="where it looks for").locator("img").first
    assert overlay.is_visible() and overlay.evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.locator("[data-testid=stImage]").count() == 3  # your image, what the model sees, the overlay
    assert page.get_by_text("Red and yellow").count() + page.get_by_text("speaks for").count() >= 1  # what colours mean
    _no_exception(page, "predict (where does it look)")
    _shot(page, "predict-where-it-looks")
