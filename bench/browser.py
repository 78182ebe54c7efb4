"""The studio in a real browser: `serve()` (also used by tests/test_browser.py) and the page-overhead benchmark.

`serve()` starts `streamlit run` on a free local port. The benchmark opens the
Train page in Debian's Chromium through Playwright and trains with
`python -m core.train` while the page streams the run's curves, so it measures
what a demo costs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.measure import ROOT, run_train
from core.serving.runs import METRICS_FILE

CHROMIUM = "/usr/bin/chromium"  # Debian's package: `playwright install` cannot download a browser here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(models_root: str | os.PathLike, log_path: str | os.PathLike | None = None) -> Iterator[str]:
    """`streamlit run streamlit_app.py` on a free local port for `models_root`; yields its URL."""
    port = _free_port()
    log = open(log_path or os.devnull, "w+")
    env = {**os.environ, "PLAYGROUND_MODELS_DIR": str(models_root), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"streamlit did not start:\n{log.read()[-3000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless, as Playwright's browser (root in a container needs --no-sandbox)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])


def _sync_playwright() -> Any:
    """Playwright's sync API when it and Debian's Chromium are installed, else None."""
    if not Path(CHROMIUM).exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    return sync_playwright


def watch_run_in_browser(train_args: list[str], models_root: str) -> dict[str, Any] | None:
    """Train with `train_args` while a browser shows the run; None when no browser is available."""
    sync_playwright = _sync_playwright()
    if sync_playwright is None:
        return None
    env = {**os.environ, "PLAYGROUND_MODELS_DIR": models_root}
    with serve(models_root) as url:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.goto(url + "/train")
            tab.wait_for_selector("text=Start training", timeout=60_000)
            result: dict[str, Any] = {}
            trainer = threading.Thread(target=lambda: result.update(run_train(train_args, env=env)))
            trainer.start()
            out = Path(train_args[train_args.index("--out") + 1])
            while trainer.is_alive() and not (out / METRICS_FILE).exists():
                time.sleep(0.2)
            tab.reload()  # the page follows the newest run in the models folder: this one
            tab.wait_for_selector("text=Showing run", timeout=60_000)
            while trainer.is_alive():
                tab.wait_for_timeout(500)  # Playwright's sync API needs its thread to keep serving the page
            trainer.join()
            return result or None


def page_overhead(data: str, seconds: float) -> dict[str, Any] | None:
    """Training img/s with a real browser watching the run on the Train page vs. none."""
    if _sync_playwright() is None:
        return None
    with tempfile.TemporaryDirectory() as root:
        common = ["--model", "cifar10_quick", "--data", data, "--epochs", "1", "--time-limit", str(seconds)]
        headless = run_train([*common, "--out", f"{root}/headless"])
        watched = watch_run_in_browser([*common, "--out", f"{root}/watched"], models_root=root)
    if watched is None:
        return None
    a, b = headless["train_img_per_s"], watched["train_img_per_s"]
    return {"headless_img_per_s": a, "watched_img_per_s": b, "overhead_pct": round(100 * (a - b) / a, 1)}
