"""Every page of the studio as a user first sees it, one full-page PNG each, taken in Debian's Chromium.

    python -m bench.screens OUT [--run | --sweep]

For looking at what was built the way a user does, and for the screenshots a closing note shows. `--run` first
trains one short run (cifar10_quick on shapes:600, one epoch, about half a minute on a CPU) so that Train, Predict,
Inside the model and Runs show a finished run instead of their empty states; `--sweep` instead runs the README's
sweep (three learning rates x two seeds on the 12,000 shapes, one epoch: about a minute), so Train shows its curves,
table, parallel coordinates and verdict and Runs its folded row. The studio serves a fresh models and
data folder, so what is on this machine never shows up in the pictures; lesson progress starts empty.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.browser import CHROMIUM, launch_chromium, serve
from bench.measure import ROOT, run_train
from studio.lessons import OVERVIEW, PAGES

STUDIO_PAGES = ["pages/home.py", "pages/architecture.py", "pages/train.py", "pages/predict.py", "pages/inside.py", "pages/runs.py"]
SWEEP = ["--model", "cifar10_quick", "--data", "shapes", "--epochs", "1", "--grid", "lr=0.0003,0.003,0.03", "--seeds", "2"]
SHORT_RUN = ["--model", "cifar10_quick", "--data", "shapes:600", "--epochs", "1", "--name", "screens"]


def address(page_file: str) -> str:
    """A page's address: its file's name (studio.state.through_navigation), the home page's is the root."""
    stem = Path(page_file).stem
    return "" if stem == "home" else stem


# -1 while the script runs (a cached function's spinner shows, the status widget may not) or an image is still
# loading; else the bottom of the main block's content.
_HEIGHT_WHEN_DRAWN = """() => {
    if (document.querySelector('[data-testid=stStatusWidget], [data-testid=stSpinner]')) return -1;
    if (!Array.from(document.images).every(img => img.complete)) return -1;
    const block = document.querySelector('[data-testid=stMainBlockContainer]').getBoundingClientRect();
    return Math.ceil(block.bottom + document.querySelector('[data-testid=stMain]').scrollTop);
}"""


def settled_height(tab, quiet_polls: int = 6) -> int:
    """The main block's height once the script has stopped running and the page has stopped growing (a lesson's
    cached network, Plotly and Vega all draw after the first elements are there)."""
    heights: list[int] = []
    while len(heights) < quiet_polls or len(set(heights[-quiet_polls:])) > 1:
        tab.wait_for_timeout(500)
        heights.append(tab.evaluate(_HEIGHT_WHEN_DRAWN))
    return heights[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.screens", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the PNGs (made if missing)")
    first = parser.add_mutually_exclusive_group()
    first.add_argument("--run", action="store_true", help="train one short run first, so run pages are not empty")
    first.add_argument("--sweep", action="store_true", help="run a 3 x 2 learning-rate sweep first")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"bench.screens: {CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    pages = STUDIO_PAGES + [OVERVIEW] + [path for path, _ in PAGES.values()]
    with tempfile.TemporaryDirectory() as tmp:
        models, data = Path(tmp, "models"), Path(tmp, "data")
        env = {"PLAYGROUND_MODELS_DIR": str(models), "PLAYGROUND_DATA_DIR": str(data)}
        if args.run:
            run_train(SHORT_RUN, env=env)
        if args.sweep:
            subprocess.run(
                [sys.executable, "-m", "core.sweep", *SWEEP], cwd=ROOT, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL
            )
        os.environ.update(env)  # serve() hands its environment to the studio
        with serve(models, Path(tmp, "streamlit.log")) as url, sync_playwright() as p:
            browser = launch_chromium(p)
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.set_default_timeout(120_000)
            for page_file in pages:
                tab.goto(f"{url}/{address(page_file)}")
                tab.wait_for_selector("[data-testid=stMainBlockContainer] h1")
                height = settled_height(tab)
                # Streamlit scrolls its main block, not the document, so a "full page" shot is the viewport: grow
                # the viewport to the content, then put it back for the next page.
                tab.set_viewport_size({"width": 1400, "height": max(1000, min(int(height), 12_000))})
                tab.wait_for_timeout(800)
                target = args.out / f"{Path(page_file).stem}.png"
                tab.screenshot(path=str(target), full_page=True)
                print(target)
                tab.set_viewport_size({"width": 1400, "height": 1000})
            browser.close()


if __name__ == "__main__":
    main()
