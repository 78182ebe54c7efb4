"""The studio in a real browser: Debian's chromium driven by Playwright against `streamlit run`.

One app server and one browser for the module (both are slow to start). The
story is the issue's: start a run with the defaults, watch the chart grow,
reload and find the run still going, stop it, then classify an uploaded image.
Set SCREENSHOTS=/some/dir to keep a PNG of every page.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.browser import CHROMIUM, launch_chromium, serve

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (and CI is not set)", allow_module_level=True)

from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402 - after the skip: a browser-less laptop needs neither
from playwright.sync_api import sync_playwright  # noqa: E402

STOP = re.compile(r"Stop$")  # the run's Stop button, not "Stopping…" nor "Force stop"

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    try:
        with serve(models, tmp_path_factory.mktemp("log") / "streamlit.log") as url:
            yield {"url": url, "models": models}
    except RuntimeError as exc:
        pytest.fail(str(exc))
    finally:
        for run in models.iterdir():  # a run the test left training must not outlive it
            (run / "STOP").touch()


@contextlib.contextmanager
def chromium() -> Iterator:
    """Debian's Chromium for one test module; `new_tab` opens its pages."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"CI is set but {CHROMIUM} is missing: install Debian's chromium package")
    with sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


def new_tab(owner, timeout_ms: int = 60_000):
    """A 1400 x 1000 tab of `owner`: the browser, or one of its contexts (`browser.new_context()`: another
    browser's cookies)."""
    tab = owner.new_page()  # a context's pages take no viewport argument: set it on the page
    tab.set_viewport_size({"width": 1400, "height": 1000})
    tab.set_default_timeout(timeout_ms)
    return tab


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        yield new_tab(browser)


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
    from PIL import Image

    from core.data.datasets import shapes_dataset

    ds = shapes_dataset(n_train=10, n_test=10, seed=11)
    buffer = io.BytesIO()
    Image.fromarray(ds.test.images[0].permute(1, 2, 0).numpy()).resize((96, 96)).save(buffer, "PNG")
    return buffer.getvalue()


def test_every_page_renders(server, page):
    # A sub-page first: on a fresh server Streamlit would treat pages/ as old-style
    # multipage for a direct visit, without the app's navigation (studio.state.through_navigation).
    for path, title in [
        ("runs", "Runs"),
        ("", "Torch Playground"),
        ("first_steps", "First steps"),
        ("architecture", "Architecture"),
        ("train", "Train"),
        ("predict", "Predict"),
    ]:
        page.goto(f"{server['url']}/{path}")
        page.get_by_role("heading", name=title).first.wait_for()
        _settle(page, extra=1.0)
        assert page.get_by_role("link", name="First steps", exact=True).count() == 1, f"{path}: not the app's navigation"
        assert (
            "cores" in page.locator("[data-testid=stSidebar]").inner_text() or "GPU" in page.locator("[data-testid=stSidebar]").inner_text()
        )  # the device badge
        _no_exception(page, path or "home")
        _shot(page, path or "home")


def test_first_steps_animates_in_place(server, page):
    """Every frame of the animation keeps both charts drawn (a redraw in place, no blank frames)."""
    page.goto(f"{server['url']}/first_steps")
    page.get_by_role("button", name="Train").wait_for()
    _settle(page, extra=1.0)
    charts = "[data-testid=stVegaLiteChart]"
    drawn_js = f"[...document.querySelectorAll('{charts}')].slice(0, 2).filter(e => e.querySelector('canvas, svg')).length"  # the line and the loss (the broadcasting trap's chart is third)
    page.wait_for_function(f"{drawn_js} == 2")
    page.get_by_role("button", name="Train").click()
    frames = []  # (charts drawn, step shown)
    started = time.time()
    while time.time() - started < 5:
        drawn = page.evaluate(drawn_js)
        frames.append((drawn, int(page.locator("[data-testid=stMetricValue]").first.inner_text())))
        page.wait_for_timeout(40)
    # Plotly redrew from scratch on every frame (a third of them empty). Keyed Vega-Lite charts swap their data in
    # place; a chart may still blink once where the page hands the animation to its timer and back (issue #13 notes).
    blank = [(i, f) for i, f in enumerate(frames) if f[0] != 2]
    assert len(blank) <= max(2, len(frames) // 10), (blank, len(frames))
    assert len({step for _, step in frames}) >= 2 and frames[-1] == (2, 100), frames  # it animated, to the last step
    _no_exception(page, "first steps")


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
    stop = page.get_by_role("button", name=STOP)
    stop.wait_for()  # only shown while the run trains
    page.set_viewport_size({"width": 1280, "height": 900})
    box = stop.bounding_box()
    assert box and box["y"] + box["height"] <= 900, box  # the run's controls are on screen above the curves
    page.set_viewport_size({"width": 1400, "height": 1000})
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
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(
        files=[
            {"name": "my-shape.png", "mimeType": "image/png", "buffer": _png()},
            {"name": "notes.png", "mimeType": "image/png", "buffer": b"these are my notes, not a picture"},
        ]
    )
    page.get_by_text("what the model sees").first.wait_for(timeout=60_000)
    _settle(page, extra=1.0)
    assert page.locator("[data-testid=stPlotlyChart]").count() >= 1
    bad = page.locator("[data-testid=stAlertContentError]").filter(has_text="notes.png")
    assert bad.count() == 1
    _no_exception(page, "predict")
    _shot(page, "predict-results")


def test_predict_where_does_it_look(server, page):
    """Upload a picture, switch on "Where does it look?", and see the Grad-CAM overlay with its legend."""
    _a_trained_run(server)
    page.goto(f"{server['url']}/predict")
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.wait_for(state="attached")
    _settle(page)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(
        files=[{"name": "my-shape.png", "mimeType": "image/png", "buffer": _png()}]
    )
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


def _a_trained_run(server) -> None:
    """The story above leaves a stopped run with a checkpoint; a test run alone (-k) trains a small one."""
    if not any((run / "checkpoint.pt").exists() for run in server["models"].iterdir()):
        from core.training.config import TrainConfig
        from core.training.loop import train

        train(
            TrainConfig.for_model("cifar10_quick", data="shapes:300", epochs=1, batch_size=50, precision="fp32"),
            server["models"] / "explain-run",
        )


def test_inside_the_model_maps_arithmetic_and_embedding(server, page):
    """The three views of the Inside page, each drawn with a test image of the run."""
    _a_trained_run(server)
    page.goto(f"{server['url']}/inside")
    page.get_by_role("heading", name="Inside the model").first.wait_for()
    page.get_by_text("what the model sees", exact=False).first.wait_for(timeout=120_000)
    _settle(page, extra=1.0)
    page.get_by_text("The model says").first.wait_for()
    maps = page.locator("[data-testid=stImage] img")
    assert maps.count() >= 9, maps.count()  # the image, then a grid of feature maps per conv layer
    assert maps.last.evaluate("img => img.complete && img.naturalWidth > 0")
    _no_exception(page, "inside (feature maps)")
    _shot(page, "inside-maps")

    page.get_by_text("First layer: filters and arithmetic").first.click()
    page.get_by_role("heading", name="One output value, worked out").wait_for(timeout=60_000)
    page.locator("[data-testid=stPlotlyChart]").nth(1).wait_for()  # where the patch is, and the sum worked out
    _settle(page, extra=1.0)
    page.get_by_text("the same number", exact=False).first.wait_for()  # the hand-worked sum equals the model's value
    _no_exception(page, "inside (first layer)")
    _shot(page, "inside-first-layer")

    page.get_by_text("The test set in the last hidden layer").first.click()
    page.get_by_text("Each point is a test image", exact=False).first.wait_for(timeout=120_000)
    _settle(page, extra=1.0)
    page.wait_for_function("[...document.querySelectorAll('.js-plotly-plot')].some(g => (g.data || []).length > 0)")
    _no_exception(page, "inside (embedding)")
    _shot(page, "inside-embedding")


# --------------------------------------------------------------------------- shared mode (a class on one server)


def _start_run(tab, epochs: int) -> None:
    tab.get_by_role("button", name="Start training").wait_for()
    _settle(tab)
    field = tab.get_by_role("spinbutton", name="Epochs")
    field.fill(str(epochs))
    field.press("Enter")
    _settle(tab)
    tab.get_by_role("button", name="Start training").click()


def _status_times(run_dir: Path) -> dict:
    from core.serving import runs

    records = [r for r in runs.read_metrics(run_dir)[0] if r.get("kind") == "status"]
    return {
        "handed": [r["time"] for r in records if r.get("dispatched")],
        "trainer_starts": sum(r.get("status") == "running" and not r.get("dispatched") for r in records),
        "final": [r["time"] for r in records if r.get("status") in runs.FINAL_STATUSES],
    }


@pytest.mark.timeout(900)
def test_shared_mode_two_browsers_queue_and_a_server_restart(page, tmp_path):
    """Two students on one shared server: A trains, B sees none of A's runs and is queued behind A;
    the server restarts while B waits; afterwards B's run starts, once, after A's has ended."""
    from bench.browser import serve
    from core.serving import runs

    models = tmp_path / "models"
    models.mkdir()
    browser = page.context.browser
    a, b = (browser.new_context(viewport={"width": 1400, "height": 1000}).new_page() for _ in range(2))
    for tab in (a, b):
        tab.set_default_timeout(90_000)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLAYGROUND_SHARED", "1")
        try:
            with serve(models, tmp_path / "streamlit-1.log") as url:
                a.goto(f"{url}/train")
                _start_run(a, epochs=300)  # long enough to be training through the restart
                a.get_by_role("button", name=STOP).wait_for(timeout=120_000)
                code_a = a.url.split("ws=")[1]
                (run_a,) = [r.path for r in runs.list_runs(models)]

                b.goto(f"{url}/runs")
                b.get_by_text("No runs yet").wait_for()  # A's run is not B's business
                _no_exception(b, "runs (B)")
                code_b = b.url.split("ws=")[1]
                assert code_a != code_b
                b.get_by_role("link", name="Train", exact=True).first.click()
                _start_run(b, epochs=1)
                b.get_by_text("Waiting in the queue").wait_for()
                b.get_by_text("next", exact=True).first.wait_for()
                _no_exception(b, "train (B queued)")
                _shot(b, "shared-queued")
                (run_b,) = [r.path for r in runs.list_runs(models) if r.path != run_a]
                assert runs.run_info(run_b).status == "queued" and runs.run_info(run_b).workspace == code_b

            # The server is down: A's trainer goes on in its own process, B's run waits in its folder.
            assert runs.run_info(run_a).status == "running" and runs.run_info(run_b).status == "queued"
            with serve(models, tmp_path / "streamlit-2.log") as url:
                b.goto(f"{url}/train?ws={code_b}")  # B comes back with the code from the address bar
                b.get_by_text("Waiting in the queue").wait_for()
                a.goto(f"{url}/runs?ws={code_a}")
                a.get_by_role("link", name="Train", exact=True).first.click()
                a.get_by_role("button", name=STOP).click()
                a.get_by_text("Stopped by request", exact=False).first.wait_for(timeout=180_000)
                b.get_by_text("Finished: test accuracy", exact=False).first.wait_for(timeout=300_000)
                _no_exception(b, "train (B finished)")
                _shot(b, "shared-finished")
                b.get_by_role("link", name="Runs", exact=True).first.click()
                b.get_by_role("heading", name="Compare").wait_for()
                # The page goes on drawing below the heading: wait for B's run to be on it, then look for A's.
                b.wait_for_function("name => document.body.innerHTML.includes(name)", arg=run_b.name)
                assert run_a.name not in b.content()
        except RuntimeError as exc:
            pytest.fail(str(exc))
        finally:
            for run in runs.list_runs(models):
                (run.path / runs.STOP_FILE).touch()
    times_a, times_b = _status_times(run_a), _status_times(run_b)
    assert runs.run_info(run_b).status == "finished"
    assert times_a["trainer_starts"] == 1 and times_b["trainer_starts"] == 1  # each trained once
    assert len(times_b["handed"]) == 1 and times_b["handed"][0] >= times_a["final"][-1]  # B only after A ended


CONFUSION_CELL = """() => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')]
    .find(g => (g.data || []).some(t => t.marker && t.marker.symbol === 'square-open'));
  if (!gd) return null;
  gd.scrollIntoView({block: "center"});  // the click must land inside the window, wherever the page has grown
  const cells = gd.data.find(t => t.marker && t.marker.symbol === 'square-open');
  let best = null;  // the fullest off-diagonal cell: the pair the model mixes up most
  cells.customdata.forEach(([t, p, count]) => { if (t !== p && (!best || count > best.count)) best = {t, p, count}; });
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
  return {...best, trueName: ya._categories[best.t], predName: xa._categories[best.p],
          x: box.left + xa._offset + xa.l2p(best.p), y: box.top + ya._offset + ya.l2p(best.t)};
}"""


def test_click_a_confusion_cell_to_see_its_images(server, page):
    from core.serving.runs import new_run_id
    from core.training.config import TrainConfig
    from core.training.loop import train

    run_dir = server["models"] / new_run_id("cifar10_quick", "shapes")  # the newest id: the Runs page picks it first
    train(TrainConfig.for_model("cifar10_quick", data="shapes:500", epochs=1, batch_size=50, precision="fp32"), run_dir)
    page.goto(f"{server['url']}/runs")
    page.get_by_role("button", name="Open on the Train page").click()
    page.get_by_text("Confusion matrix · click a cell").first.wait_for(timeout=120_000)
    _settle(page, extra=1.0)

    def steady_cell() -> dict:  # charts above it may still be drawing: click once the cell has stopped moving
        cell, previous = page.evaluate(CONFUSION_CELL), None
        for _ in range(20):
            if cell == previous:
                break
            page.wait_for_timeout(500)
            previous, cell = cell, page.evaluate(CONFUSION_CELL)
        assert cell and cell["count"] > 0, cell
        return cell

    before = page.locator("[data-testid=stImage] img").count()
    for attempt in range(3):  # a click that lands while the page is rerunning (or switching runs) is lost: again
        cell = steady_cell()
        page.mouse.click(cell["x"], cell["y"])
        try:
            page.get_by_text(f"{cell['trueName']} predicted as {cell['predName']} ({cell['count']} images)").last.wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                _shot(page, "confusion-click-failed")
                raise
    _settle(page, extra=1.0)
    _no_exception(page, "train (confusion cell)")
    assert page.locator("[data-testid=stImage] img").count() == before + min(cell["count"], 40)
    page.get_by_text("Test images in one cell of the matrix").first.scroll_into_view_if_needed()
    _shot(page, "train-confusion-cell")


# --------------------------------------------------------------------------- your own classes (issue #13)


def _cifar_pictures(tmp_path: Path, per_class: int) -> dict[str, list[dict]]:
    """Real photos from the CIFAR-10 dev set as browser uploads, per class (skips where the set is absent)."""
    from conftest import extract_dev_slice

    root = extract_dev_slice(tmp_path / "cifar", per_class, 1)
    return {
        cls: [{"name": p.name, "mimeType": "image/jpeg", "buffer": p.read_bytes()} for p in sorted((root / "train" / cls).iterdir())]
        for cls in ("airplane", "cat")
    } | {"test": [{"name": "a-plane.jpg", "mimeType": "image/jpeg", "buffer": next((root / "test" / "airplane").iterdir()).read_bytes()}]}


def _weights_upload() -> dict:
    """A mobilenet_v3_small state_dict, as an offline user would upload torchvision's file (fresh weights: no network)."""
    import torch
    import torchvision

    buffer = io.BytesIO()
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), buffer)
    return {"name": "mobilenet_v3_small.pth", "mimeType": "application/octet-stream", "buffer": buffer.getvalue()}


def _card_count(page, class_name: str, n: int) -> None:
    page.get_by_text(f"{class_name} · {n} pictures", exact=True).first.wait_for(timeout=90_000)


@pytest.mark.timeout(600)
def test_your_own_classes_built_in_the_page_train_then_predict(server, page, tmp_path):
    """The issue's Teachable-Machine moment: a new set, pictures uploaded per class, one removed with a click, the
    split and the small-data recipe shown, the augmentation preview, training, and a prediction from the run."""
    from core.data import classes
    from core.models import backbones
    from core.serving import runs

    pictures = _cifar_pictures(tmp_path, per_class=10)
    set_name = f"browser-{int(time.time())}"
    root = classes.sets_root()  # the server's data folder (no workspace outside shared mode)
    try:
        page.goto(f"{server['url']}/train")
        page.get_by_role("button", name="Start training").wait_for()
        _settle(page)
        page.get_by_role("radio", name="Your classes").click()
        _settle(page)
        page.get_by_role("textbox", name="Name of the new set").fill(set_name)
        page.get_by_role("button", name="Create set").click()
        _card_count(page, "Class 1", 0)
        _card_count(page, "Class 2", 0)

        # Pictures per class, each through its own card's uploader (a fresh, empty one comes back after each upload).
        for i, (cls, files) in enumerate([("Class 1", pictures["airplane"]), ("Class 2", pictures["cat"])]):
            page.locator("[data-testid=stFileUploaderDropzoneInput]").nth(i).set_input_files(files=files)
            _card_count(page, cls, 10)
            _settle(page)
        assert classes.counts(root / set_name) == {"Class 1": 10, "Class 2": 10}
        assert page.locator("[data-testid=stImage] img").count() >= 20  # the thumbnails

        # Remove one picture with a click on its x.
        page.locator("[class*='st-key-rm-'] button").first.click()
        _card_count(page, "Class 1", 9)
        _settle(page)
        assert classes.counts(root / set_name) == {"Class 1": 9, "Class 2": 10}

        # The split before training, the tiny-test warning, and the recipe for few pictures.
        page.get_by_text("Train / test split").first.wait_for()
        page.get_by_text("6 test images: each one is 17 points of accuracy", exact=False).first.wait_for()
        page.get_by_text("Few pictures? Fine-tune a pretrained network").first.wait_for()
        assert page.get_by_text("mobilenet_v3_small", exact=False).count() >= 1
        page.get_by_role("combobox", name="Start from weights").wait_for()
        _settle(page, extra=1.0)
        _no_exception(page, "train (your own classes)")
        _shot(page, "classes-set")

        # Offline (no torchvision download here): the page says so, and an uploaded weights file stands in.
        if not backbones.weights_cached("mobilenet_v3_small", "DEFAULT"):
            page.get_by_text("are not on this computer yet", exact=False).first.wait_for()
            page.get_by_role("combobox", name="Start from weights").click()
            page.get_by_role("option", name="Upload a weights file", exact=False).click()
            _settle(page)
            page.locator("[data-testid=stFileUploader]").filter(has_text="Weights file").locator(
                "[data-testid=stFileUploaderDropzoneInput]"
            ).set_input_files(files=[_weights_upload()])
            _settle(page, extra=1.0)
        epochs = page.get_by_role("spinbutton", name="Epochs")
        epochs.fill("2")
        epochs.press("Enter")
        _settle(page)

        # What the model will see: a few training pictures, stored and augmented.
        page.get_by_text("What the model sees in training", exact=False).first.click()
        page.get_by_text("Show a few training images").first.click()
        page.get_by_text("As the model sees them", exact=False).first.wait_for(timeout=120_000)
        _settle(page)
        _no_exception(page, "train (augmentation preview)")
        page.get_by_text("What the model sees in training", exact=False).first.scroll_into_view_if_needed()
        _shot(page, "classes-augmentation-preview")

        before = {r.run_id for r in runs.list_runs(server["models"])}
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Finished: test accuracy", exact=False).first.wait_for(timeout=400_000)
        _settle(page, extra=1.0)
        _no_exception(page, "train (finished on your classes)")
        for _ in range(60):  # the final status is written once the last checkpoint is on disk
            (run,) = [r for r in runs.list_runs(server["models"]) if r.run_id not in before]
            if run.status == "finished":
                break
            time.sleep(0.5)
        assert run.status == "finished" and run.config["classes"] == ["Class 1", "Class 2"]
        assert run.config["model"] == "mobilenet_v3_small" and run.config["freeze_backbone"]
        assert run.config["batch_size"] == 4  # the recipe's: 13 training pictures, 3 steps per epoch
        assert run.config["dataset"]["n_test"] == 6
        _shot(page, "classes-trained")

        page.get_by_role("button", name="Classify images with this run").click()
        page.get_by_role("heading", name="Predict").first.wait_for()
        page.locator("[data-testid=stFileUploaderDropzoneInput]").first.wait_for(state="attached")
        _settle(page)
        assert "Class 1, Class 2" in page.inner_text("body")
        page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(files=pictures["test"])
        page.get_by_text("what the model sees").first.wait_for(timeout=60_000)
        _settle(page, extra=1.0)
        _no_exception(page, "predict (your classes)")
        assert page.locator("[data-testid=stPlotlyChart]").count() >= 1
        _shot(page, "classes-predict")
    finally:
        if (root / set_name).exists():
            classes.delete_set(root, set_name)


# Where each thumbnail's x sits: beside its own picture (its middle within the picture's height, just right of it).
X_BESIDE_PICTURE = """() => {
  const box = e => e.getBoundingClientRect();
  const pictures = [...document.querySelectorAll('[data-testid=stImage] img')].map(box);
  const xs = [...document.querySelectorAll("[class*='st-key-rm-'] button")].map(box).filter(x => x.width > 0);
  const beside = x => pictures.some(p => x.top + x.height / 2 > p.top && x.top + x.height / 2 < p.bottom
                                      && x.left >= p.right - 40 && x.left <= p.right + 24);
  return {xs: xs.length, beside: xs.filter(beside).length};
}"""
# A label Streamlit cut short with an ellipsis: its text is wider than the box that shows it.
CUT_LABEL = """name => [...document.querySelectorAll('button')].filter(b => b.innerText.includes(name.slice(0, 5)))
  .some(b => [...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1))"""


def test_your_own_classes_cards_read_as_they_should(server, page):
    """The issue's screenshots: "Add class" whole, each x beside its picture, a renamed class keeping its card's place
    with no other rename box opening, and an SVG's reason on the page (not only in the uploader's hover)."""
    from core.data import classes

    set_name = f"cards-{int(time.time())}"
    root = classes.sets_root()
    path = classes.create_set(root, set_name)
    for name, colour in [("Class 1", (200, 40, 40)), ("Class 2", (40, 40, 200))]:
        classes.add_class(path, name)
        classes.add_images(path, name, [(f"p{i}.png", _coloured_png(colour, i)) for i in range(4)])
    try:
        page.goto(f"{server['url']}/train")
        page.get_by_role("button", name="Start training").wait_for()
        _settle(page)
        page.get_by_role("radio", name="Your classes").click()
        _settle(page)
        page.get_by_role("combobox", name="Image set").click()
        page.get_by_role("option", name=set_name).click()
        _card_count(page, "Class 1", 4)
        _settle(page, extra=1.0)
        _no_exception(page, "train (cards)")
        _shot(page, "classes-cards")

        assert not page.evaluate(CUT_LABEL, "Add class"), "the Add class button's label is cut short"
        place = page.evaluate(X_BESIDE_PICTURE)
        assert place["xs"] == 8 and place["beside"] == 8, place

        new_name = page.get_by_role("textbox", name="New name").first
        for _ in range(3):  # a click while the page still settles can go unanswered
            page.locator("[data-testid=stPopover] button").first.click()  # Class 1's rename box
            try:
                new_name.wait_for(state="visible", timeout=5_000)
                break
            except PlaywrightTimeout:
                _settle(page)
        new_name.fill("zebra")
        page.get_by_role("button", name="Rename", exact=True).first.click()
        _card_count(page, "zebra", 4)
        _settle(page, extra=1.0)
        assert classes.class_names(path) == ["Class 2", "zebra"]
        headers = [t for t in page.locator("[data-testid=stMarkdownContainer] p").all_inner_texts() if " · 4 pictures" in t]
        assert headers == ["zebra · 4 pictures", "Class 2 · 4 pictures"]  # the renamed card kept its place
        assert page.locator("[data-testid=stPopoverBody]").count() == 0  # and no rename box opened on Class 2

        svg = {"name": "logo.svg", "mimeType": "image/svg+xml", "buffer": b"<svg xmlns='http://www.w3.org/2000/svg'/>"}
        page.locator("[data-testid=stFileUploaderDropzoneInput]").first.set_input_files(files=[svg])
        page.get_by_text("logo.svg is an SVG vector drawing", exact=False).first.wait_for(state="visible", timeout=30_000)
        _settle(page)
        _no_exception(page, "train (an SVG upload)")
        _shot(page, "classes-svg-refused")
    finally:
        classes.delete_set(root, set_name)


def _coloured_png(colour: tuple[int, int, int], i: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (96, 72), colour)
    img.paste((255 - colour[0], 255 - colour[1], 255 - colour[2]), (10 + 5 * i, 20, 50, 50))
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()
