"""`python -m bench`: the tutorial's training loop against ours, on real images, and what a browser watching costs.

Outside `core` on purpose: the page-overhead figure drives the studio in a real
browser, and `core` never imports the UI (tests/test_layering.py checks it).

- `bench.measure`: the machine, the tutorial loop, `python -m core.train` runs, prediction latency;
- `bench.browser`: the studio served on a free port (`serve()`, also used by tests/test_browser.py)
  and a run trained while Chromium shows it on the Train page.
"""
