"""What only a browser shows (issue #18): nothing cut off, covered or stretched. Debian's chromium through Playwright.

The sidebar's training badge fits the sidebar; the compared runs' settings keep every run's column on screen;
after *Save name and note* the picker shows the new name without a reload; the Inside page's output-channel map
has square cells like the image beside it; Plotly's toolbar never covers a legend entry.
Set SCREENSHOTS=/some/dir to keep a PNG of each.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import fake_run
from test_browser import _no_exception, _settle, chromium, new_tab

from bench.browser import CHROMIUM, serve
from core.models.build import build
from core.models.layers import spec_of
from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import train

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (and CI is not set)", allow_module_level=True)


pytestmark = pytest.mark.timeout(420)
T0 = 1_790_000_000.0
LONG_FOLDER = "imagefolder:/home/learner/datasets/holiday-photos-sorted-by-what-is-in-them/version-2-with-more-cats"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLAYGROUND_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        # One trained run for the Inside page; the others are written without training.
        train(
            TrainConfig.for_model("cifar10_quick", data="shapes:200", epochs=1, batch_size=50, precision="fp32", health=False),
            models / "20300101-000100-tiny",
        )
        layers = spec_of(build("cifar10_quick"))
        fake_run(models, "20300101-000300-custom", created=T0, model="custom", layers=layers, optimizer="adamw", lr=0.003, ema=0.999)
        fake_run(models, "20300101-000400-folder", created=T0 + 60, data=LONG_FOLDER, optimizer="sgd", lr=0.1, time_limit=600)
        fake_run(
            models, "20300101-000500-resnet", created=T0 + 120, model="resnet18", weights="DEFAULT", freeze_backbone=True, image_size=64
        )
        fake_run(models, "20300101-000600-failed", created=T0 + 180, status="failed", steps=0)  # newest: not compared
        training = fake_run(models, "20300101-000200-training", created=T0 + 240, status="running", data="shapes:2000")
        try:
            with serve(models, tmp_path_factory.mktemp("log") / "streamlit.log") as url:
                yield {"url": url, "models": models}
        except RuntimeError as exc:
            pytest.fail(str(exc))
        finally:
            with open(training / runs.METRICS_FILE, "a") as f:  # no longer "ours": the test process ends
                f.write('{"kind": "status", "status": "stopped"}\n')


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        yield new_tab(browser, timeout_ms=90_000)


def _shot(target, name: str) -> None:
    folder = os.environ.get("SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(Path(folder) / f"{name}.png"))


def _open(page, url: str, heading: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=heading).first.wait_for()
    _settle(page, extra=1.5)


CLIPPED = """(root) => [...root.querySelectorAll('*')]
  .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
  .map(e => (e.innerText || '').slice(0, 80))"""


def test_sidebar_training_badge_is_not_cut_off(server, page):
    _open(page, f"{server['url']}/runs", "Runs")
    sidebar = page.locator("[data-testid=stSidebar]")
    badge = sidebar.get_by_text("Training:", exact=False).first
    badge.wait_for()
    assert sidebar.get_by_text("Shapes (2,000 images)", exact=False).first.is_visible()
    clipped = [t for t in sidebar.evaluate(CLIPPED) if "Training" in t or "Shapes" in t]
    assert not clipped, f"cut off in the sidebar: {clipped}"
    _shot(sidebar, "trust-sidebar")


def test_compared_settings_keep_every_runs_column_on_screen(server, page):
    page.set_viewport_size({"width": 1100, "height": 1000})  # a laptop's window, sidebar open
    _open(page, f"{server['url']}/runs", "Runs")
    heading = page.locator("[data-testid=stElementContainer]").filter(has_text="Settings that differ").last
    heading.scroll_into_view_if_needed()
    table = heading.locator("xpath=following-sibling::*[1]")  # whatever element shows them, right under the heading
    main = page.locator("[data-testid=stMain] [data-testid=stMainBlockContainer]").bounding_box()
    box = table.bounding_box()
    assert box["x"] + box["width"] <= main["x"] + main["width"] + 1, (box, main)
    assert not table.evaluate(CLIPPED), "the settings table scrolls sideways: a run's column is off-screen"
    text = table.inner_text()
    for name in ("resnet18 on Shapes", "cifar10_quick on version-2-with-more-cats", "custom on Shapes"):
        assert name in text, f"{name} is not a column of {text[:400]}"
    assert "None" not in text and "False" not in text
    assert "holiday-photos" not in text and "#" not in text  # words, not a path or an id
    _no_exception(page, "runs")
    _shot(table, "trust-settings-table")
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_saved_name_shows_in_the_picker_without_a_reload(server, page):
    _open(page, f"{server['url']}/runs", "Runs")
    picker = page.get_by_role("combobox", name="Run", exact=True)
    before = picker.input_value()  # the picker's text: its value attribute
    name = page.get_by_label("Name", exact=True)
    name.fill("my renamed run")
    page.get_by_role("button", name="Save name and note").click()
    _settle(page, extra=1.0)
    after = picker.input_value()
    assert "my renamed run" in after and after != before, (before, after)
    page.get_by_text("Saved the name “my renamed run”", exact=False).first.wait_for(timeout=10_000)  # and says so
    _shot(page.locator("[data-testid=stMainBlockContainer]"), "trust-renamed")


def _open_inside(page, server, view: str) -> None:
    _open(page, f"{server['url']}/inside", "Inside the model")
    page.get_by_text(view, exact=True).click()
    _settle(page, extra=2.0)


OUTPUT_MAP = """[...document.querySelectorAll('[data-testid=stPlotlyChart] .js-plotly-plot')]
  .find(g => g._fullLayout && (g.layout.annotations || []).some(a => String(a.text).startsWith('output channel')))"""
ASPECT = (
    """() => {
  const gd = """
    + OUTPUT_MAP
    + """;
  const [x, y] = [gd._fullLayout.xaxis2, gd._fullLayout.yaxis2];  // the map's axes span its columns and rows
  return {wide: x._length / Math.abs(x.range[1] - x.range[0]), tall: y._length / Math.abs(y.range[1] - y.range[0])};
}"""
)


def test_output_channel_map_has_square_cells(server, page):
    _open_inside(page, server, "First layer: filters and arithmetic")
    page.wait_for_function(f"!!({OUTPUT_MAP})")
    cell = page.evaluate(ASPECT)
    assert abs(cell["wide"] / cell["tall"] - 1) < 0.05, f"a cell is {cell['wide']:.1f} px wide and {cell['tall']:.1f} px tall"
    _shot(page.locator("[data-testid=stPlotlyChart]").filter(has_text="output channel").first, "trust-output-channel")


OVERLAPS = """(chart) => {
  const bar = chart.querySelector('.modebar');
  if (!bar || !bar.getBoundingClientRect().width) return null;
  const b = bar.getBoundingClientRect();
  return [...chart.querySelectorAll('.legend .traces')].map(t => t.getBoundingClientRect())
    .filter(r => r.width && r.left < b.right && b.left < r.right && r.top < b.bottom && b.top < r.bottom).length;
}"""


@pytest.mark.parametrize("where", ["embedding", "runs"])
def test_the_chart_toolbar_covers_no_legend_entry(server, page, where):
    if where == "embedding":  # a legend beside the plot (as the lr finder's, which shares its top with a title)
        _open_inside(page, server, "The test set in the last hidden layer")
        chart = page.locator("[data-testid=stPlotlyChart]").filter(has=page.locator(".legend")).last
    else:  # the legend under the comparison (the layout every other figure shares)
        _open(page, f"{server['url']}/runs", "Runs")
        chart = page.locator("[data-testid=stPlotlyChart]").first
    chart.wait_for()
    chart.scroll_into_view_if_needed()
    chart.hover()  # the toolbar shows while the mouse is on the chart
    page.wait_for_timeout(600)
    covered = chart.evaluate(OVERLAPS)
    assert covered is not None, "no toolbar showed on hover"
    assert covered == 0, f"the toolbar covers {covered} legend entries"
    _shot(chart, f"trust-legend-{where}")
