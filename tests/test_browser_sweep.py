"""A sweep in a real browser: try two learning rates from the Train page, watch both runs' curves on one chart, read
the parallel-coordinates chart and the verdict, and put the best setting back into the form."""

from __future__ import annotations

import re

import pytest
from test_browser import _no_exception, _settle, _shot, page, server  # noqa: F401 - the module's server and browser

pytestmark = pytest.mark.timeout(600)

TRACES = """() => [...document.querySelectorAll('[data-testid=stPlotlyChart] .js-plotly-plot')].map(g => (g.data || []).map(
  t => ({type: t.type, name: t.name || '', points: (t.x || []).length})))"""


def _charts(tab) -> list[list[dict]]:
    return tab.evaluate(TRACES)


# The parallel-coordinates chart's axis titles that its own title overlaps (Parcoords draws them in the top margin).
TITLE_OVER_AXIS_TITLES = """chart => {
    const title = chart.querySelector('.gtitle').getBoundingClientRect();
    return Array.from(chart.querySelectorAll('.parcoords .axis-title')).filter(label => {
        const box = label.getBoundingClientRect();
        return !(box.right < title.left || box.left > title.right || box.bottom < title.top || box.top > title.bottom);
    }).map(label => label.textContent);
}"""


def test_a_two_value_sweep_from_the_train_page(server, page):  # noqa: F811 - the fixtures imported above
    page.goto(f"{server['url']}/train")
    page.get_by_role("button", name="Start training").wait_for()
    _settle(page)
    slider = page.locator("[data-testid=stSlider] input[type=range]").first  # Training images: the smallest set
    slider.focus()
    slider.press("Home")
    _settle(page)
    epochs = page.get_by_role("spinbutton", name="Epochs")
    epochs.fill("1")
    epochs.press("Enter")
    _settle(page)
    page.get_by_text("Try several values").click()
    _settle(page)
    values = page.get_by_role("textbox", name="Learning rate values")
    values.fill("0.00003, 0.003")
    values.press("Enter")
    seeds = page.get_by_role("spinbutton", name="Seeds per setting")
    seeds.fill("1")
    seeds.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Start sweep (2 runs)").click()

    # Both runs' curves on one chart, a colour per setting, while the sweep trains and after.
    page.wait_for_function(f"({TRACES})().some(c => c.filter(t => t.name.endsWith('seed 0') && t.points > 0).length >= 4)", timeout=400_000)
    _no_exception(page, "sweep (curves)")
    parallel = page.locator("[data-testid=stPlotlyChart] .js-plotly-plot").filter(has=page.locator(".parcoords"))
    parallel.first.wait_for(timeout=400_000)  # the results replace the live view once both runs have ended
    _settle(page, extra=1.0)
    _no_exception(page, "sweep (results)")
    names = {t["name"] for chart in _charts(page) for t in chart}
    assert {"lr 3e-05 · seed 0", "lr 0.003 · seed 0"} <= names
    best = page.get_by_text(re.compile(r"^Best: ")).first.inner_text()
    assert "seeds of one setting" not in best or "one seed" in best  # one seed each: the spread is unknown, and said so
    best_lr = re.search(r"Best: lr ([0-9.e-]+)", best).group(1)
    _shot(page, "sweep-results")
    overlapping = parallel.first.evaluate(TITLE_OVER_AXIS_TITLES)
    assert not overlapping, f"the chart's title covers the axis title(s) {overlapping}"

    page.get_by_role("button", name="Use the best setting").click()
    _settle(page, extra=1.0)
    assert float(page.get_by_role("spinbutton", name="Learning rate").input_value()) == pytest.approx(float(best_lr))
    assert page.get_by_role("button", name="Start training").is_visible()  # back to a single run, with the winner's lr
