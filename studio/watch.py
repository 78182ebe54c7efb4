"""A real browser watching a training run on the Train page (used by `python -m core.bench`).

Starts `streamlit run` on a free local port, opens the Train page in Debian's
Chromium through Playwright, and trains with `python -m core.train` while the
page streams the run's curves, so the benchmark measures what a demo costs.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent


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
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.headless", "true"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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


def watch_run_in_browser(train_args: list[str], models_root: str) -> dict[str, Any] | None:
    """Train with `train_args` while a browser shows the run; None when no browser is available."""
    if not Path(CHROMIUM).exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    from core.bench import run_train

    env = {**os.environ, "PLAYGROUND_MODELS_DIR": models_root}
    with serve(models_root) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.goto(url + "/train")
            tab.wait_for_selector("text=Start training", timeout=60_000)
            result: dict[str, Any] = {}
            trainer = threading.Thread(target=lambda: result.update(run_train(train_args, env=env)))
            trainer.start()
            out = Path(train_args[train_args.index("--out") + 1])
            while trainer.is_alive() and not (out / "metrics.jsonl").exists():
                time.sleep(0.2)
            tab.reload()  # the page follows the newest run in the models folder: this one
            tab.wait_for_selector("text=Showing run", timeout=60_000)
            while trainer.is_alive():
                tab.wait_for_timeout(500)  # Playwright's sync API needs its thread to keep serving the page
            trainer.join()
            return result or None
