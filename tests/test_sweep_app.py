"""Sweeps on the Train and Runs pages under AppTest: "Try several values" queues a tagged sweep; a finished sweep shows
its table, parallel-coordinates chart and verdict, and "Use the best setting" fills the form; the Runs page shows a
sweep as one row and deletes it with its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import fake_sweep
from streamlit.testing.v1 import AppTest

from core.serving import runs
from core.serving.jobs import JobRegistry
from core.training import sweep
from studio import widgets

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
pytestmark = pytest.mark.timeout(300)


def open_page(page: str, watch: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if watch:
        at.session_state["watch"] = watch
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_try_several_values_queues_a_tagged_sweep(models_root, monkeypatch):
    monkeypatch.setattr(JobRegistry, "dispatch", lambda self, wait_s=5.0: [])  # queued only: nothing trains here
    at = open_page("pages/train.py")
    at.select_slider(key="shapes_n").set_value(600)
    at.number_input(key="hp-cifar10_quick-epochs").set_value(1)
    at.toggle(key="sweep_on").set_value(True)
    at.run()
    assert at.multiselect(key="sweep_fields").value == ["lr"]
    assert at.text_input(key="sweep-values-lr-cifar10_quick").value == "0.0003, 0.003, 0.03"  # 0.1x, 1x and 10x the recipe's
    assert any("**6 runs** (3 learning rate × 2 seeds)" in c.value for c in at.caption)
    at.text_input(key="sweep-values-lr-cifar10_quick").set_value("0.001, 0.01")
    at.run()
    start = next(b for b in at.button if b.label.startswith("Start sweep"))
    assert start.label == "Start sweep (4 runs)"
    start.click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (plan,) = sweep.list_sweeps(models_root)
    assert plan.grid == {"lr": [0.001, 0.01]} and plan.seeds == [0, 1] and len(plan.runs) == 4
    configs = [runs.read_config(models_root / r["run_id"]) for r in plan.runs]
    assert [(c["lr"], c["seed"], c["epochs"], c["data"]) for c in configs] == [
        (lr, s, 1, "shapes:600") for lr in (0.001, 0.01) for s in (0, 1)
    ]
    assert all(c["sweep"]["id"] == plan.sweep_id for c in configs)
    assert any("Sweep: lr 0.001/0.01 × 2 seeds (4 runs)**: 0 finished" in m.value for m in at.markdown)  # the page shows it


def test_a_bad_value_is_named_and_nothing_starts(models_root):
    at = open_page("pages/train.py")
    at.toggle(key="sweep_on").set_value(True)
    at.run()
    at.text_input(key="sweep-values-lr-cifar10_quick").set_value("0.001, fast")
    at.run()
    assert any("lr: 'fast' is not a number" in e.value for e in at.error)
    assert not any(b.label.startswith("Start sweep") for b in at.button)  # back to a single run until it is fixed


def test_a_finished_sweep_says_what_mattered_and_its_best_setting_fills_the_form(models_root):
    plan = fake_sweep(models_root, {0.001: [0.70, 0.71], 0.01: [0.82, 0.83]})
    at = open_page("pages/train.py", watch=plan.runs[0]["run_id"])
    best = next(s.value for s in at.success if s.value.startswith("Best"))
    assert "lr 0.01" in best and "lr 0.01 beat 0.001 by 12 points; seeds of one setting differ by up to 1 point, so this is real" in best
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    parallel = next(s for s in specs if s["data"][0]["type"] == "parcoords")
    assert [d["label"] for d in parallel["data"][0]["dimensions"]] == ["lr (log)", "test accuracy"]
    curves = next(s for s in specs if any(t.get("name", "").endswith("seed 1") for t in s["data"]))
    assert len({t["line"]["color"] for t in curves["data"]}) == 2  # a colour per setting
    table = at.dataframe[0].value
    assert list(table["Learning rate"]) == ["0.001", "0.001", "0.01", "0.01"] and list(table["seed"]) == [0, 1, 0, 1]
    assert any(b.label == "Table (CSV)" for b in at.get("download_button"))
    next(b for b in at.button if b.label == "Use the best setting").click()
    at.run()
    assert not at.exception
    assert at.number_input(key="hp-cifar10_quick-lr").value == 0.01
    assert at.toggle(key="sweep_on").value is False


def test_the_runs_page_shows_a_sweep_as_one_row_and_deletes_it_with_its_runs(models_root):
    plan = fake_sweep(models_root, {0.001: [0.70, 0.71], 0.01: [0.82, 0.83]})
    at = open_page("pages/runs.py")
    names = list(at.dataframe[0].value["name"])
    assert len(names) == 1 and names[0].startswith("Sweep: lr 0.001/0.01 × 2 seeds")  # one row for its four runs
    assert at.dataframe[0].value["started"][0] == widgets.started_text(min(r.started for r in runs.list_runs(models_root)))
    next(b for b in at.button if b.label == "Yes, delete them").click()
    at.run()
    assert not at.exception
    assert runs.list_runs(models_root) == [] and not plan.path(models_root).exists()
