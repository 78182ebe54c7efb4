"""Sweeps (core.sweep): the grid, what the summary says with the seed-to-seed spread, the queue taking turns
across workspaces, and the command line end to end (six tagged runs, the right best, Ctrl-C and --resume)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fake_sweep

from core.errors import PlaygroundError
from core.serving import runs
from core.serving.jobs import JobRegistry
from core.serving.shared import Settings
from core.training import sweep
from core.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the grid


def test_a_grid_is_typed_like_the_options_it_sets():
    grid = sweep.parse_grid(["lr=1e-3,0.01", "batch-size=32,64", "augment=on,off", "freeze=yes", "optimizer=sgd,adamw,sgd"])
    assert grid == {
        "lr": [0.001, 0.01],
        "batch_size": [32, 64],
        "augment": [True, False],
        "freeze_backbone": [True],
        "optimizer": ["sgd", "adamw"],  # a repeated value would train the same setting twice
    }
    assert len(sweep.settings_of(grid)) == 2 * 2 * 2 * 1 * 2
    assert sweep.settings_of({"lr": [1, 2], "augment": [True, False]})[:2] == [{"lr": 1, "augment": True}, {"lr": 1, "augment": False}]
    assert sweep.parse_grid(["weights=none,DEFAULT"]) == {"weights": [None, "DEFAULT"]}


@pytest.mark.parametrize(
    "items, message",
    [
        (["lr"], "write KEY=V1,V2"),
        (["colour=red"], "not an option a sweep can vary"),
        (["seed=1,2"], "not an option a sweep can vary"),  # --seeds says that
        (["batch-size=32,lots"], "'lots' is not a whole number"),
        (["augment=maybe"], "'maybe' is not on or off"),
        (["lr=0.1", "lr=0.2"], "given twice"),
        ([], "at least one --grid"),
    ],
)
def test_a_bad_grid_says_which_part_is_wrong(items, message):
    with pytest.raises(PlaygroundError, match=message):
        sweep.parse_grid(items)


def test_default_values_sit_around_the_recipe():
    recipe = TrainConfig.for_model("cifar10_quick", data="shapes")
    assert sweep.default_values("lr", recipe) == [pytest.approx(recipe.lr / 10), recipe.lr, pytest.approx(recipe.lr * 10)]
    assert sweep.default_values("augment", recipe) == [True, False]
    assert sweep.default_values("optimizer", recipe)[0] == recipe.optimizer


def test_every_run_gets_its_models_recipe_and_the_sweeps_tag():
    plan = sweep.Sweep(
        "sweep-x", {"model": "cifar10_quick", "data": "shapes:600", "epochs": 1}, {"model": ["cifar10_quick", "speedrun"]}, [0, 1]
    )
    configs = plan.configs()
    assert [(s["model"], seed) for s, seed, _ in configs] == [("cifar10_quick", 0), ("cifar10_quick", 1), ("speedrun", 0), ("speedrun", 1)]
    quick, speed = configs[0][2], configs[2][2]
    assert quick.optimizer == "adamw" and speed.optimizer == "sgd"  # each model trains with its own recipe
    assert quick.epochs == speed.epochs == 1 and configs[1][2].seed == 1
    assert speed.sweep == {"id": "sweep-x", "settings": {"model": "speedrun"}}
    assert runs.default_name(speed.to_dict()) == "speedrun on Shapes · model speedrun, seed 0"


# --------------------------------------------------------------------------- what the summary says


def test_the_best_setting_and_a_real_difference(tmp_path):
    result = sweep.results(fake_sweep(tmp_path, {0.001: [0.70, 0.71], 0.01: [0.82, 0.83], 10.0: [None, None]}), tmp_path)
    assert result["best"] == {"settings": {"lr": 0.01}, "mean_acc": pytest.approx(0.825), "spread": pytest.approx(0.01)}
    assert result["spread"] == pytest.approx(0.01)
    assert [r["status"] for r in result["runs"]][-2:] == ["diverged", "diverged"] and result["runs"][-1]["val_acc"] is None
    assert result["verdict"] == "lr 0.01 beat 0.001 by 12 points; seeds of one setting differ by up to 1 point, so this is real."


def test_a_difference_inside_the_spread_is_called_chance(tmp_path):
    result = sweep.results(fake_sweep(tmp_path, {0.001: [0.70, 0.76], 0.01: [0.74, 0.73]}), tmp_path)
    assert result["spread"] == pytest.approx(0.06)
    assert "may be chance: run more seeds" in result["verdict"]


def test_one_seed_each_says_the_spread_is_unknown(tmp_path):
    result = sweep.results(fake_sweep(tmp_path, {0.001: [0.5], 0.01: [0.9]}), tmp_path)
    assert result["spread"] is None and result["best"]["spread"] is None
    assert "one seed, so how far seeds land apart is unknown" in result["verdict"]


def test_with_two_fields_the_one_that_moved_accuracy_most_is_named():
    groups = [
        {"settings": {"lr": lr, "augment": aug}, "mean_acc": acc}
        for lr, aug, acc in [(0.001, True, 0.60), (0.001, False, 0.59), (0.01, True, 0.80), (0.01, False, 0.78)]
    ]
    said = sweep.verdict(groups, {"lr": [0.001, 0.01], "augment": [True, False]}, 0.01)
    assert said.startswith("lr mattered most: lr 0.01 beat 0.001 by 19.5 points on average")


def test_deleting_a_sweep_deletes_its_runs_and_record(tmp_path):
    plan = fake_sweep(tmp_path, {0.001: [0.7], 0.01: [0.8]})
    assert [s.sweep_id for s in sweep.list_sweeps(tmp_path)] == ["sweep-fake"]
    sweep.delete_sweep(tmp_path, plan)
    assert runs.list_runs(tmp_path) == [] and sweep.list_sweeps(tmp_path) == []


# --------------------------------------------------------------------------- the queue takes turns


def test_another_workspaces_single_run_starts_before_a_sweep_of_nine_has_finished(models_root, monkeypatch):
    """Through the real dispatcher, with the training processes replaced by records: B's one run starts second,
    between the runs of A's sweep, not tenth. A's sweep counts as one of its active runs against the quota."""
    shared = dataclasses.replace(Settings(), shared=True, max_active=2, max_runs=20)
    registry = JobRegistry(models_root, shared, warm=False, autostart=False)
    started: list[str] = []

    def launch(info, slots, sharing):  # a process would write this record; nothing trains
        started.append(info.workspace)
        runs.MetricsWriter(info.path).write({"kind": "status", "status": "running", "pid": os.getpid(), "host": os.uname().nodename})

    monkeypatch.setattr(registry, "_launch", launch)
    plan = sweep.Sweep("sweep-a", {"model": "cifar10_quick", "data": "shapes:200", "epochs": 1}, {"lr": [0.001, 0.003, 0.01]}, [0, 1, 2])
    sweep.start(registry, plan, workspace="aaaa-aaaa")  # its first run starts at once
    single = registry.enqueue(TrainConfig.for_model("cifar10_quick", data="shapes:200", epochs=1), workspace="bbbb-bbbb")
    assert registry.queue_spots()[single.name].position == 1  # next in line, ahead of the sweep's other eight
    for _ in range(9):  # each run ends, the next one starts
        running = next(r for r in runs.list_runs(models_root) if r.status == "running")
        runs.MetricsWriter(running.path).write({"kind": "status", "status": "finished"})
        registry.dispatch()
    assert started == ["aaaa-aaaa", "bbbb-bbbb"] + ["aaaa-aaaa"] * 8
    registry.close()


def test_a_sweep_counts_against_the_quotas(models_root):
    """Its runs count against the runs a workspace may keep; while it trains it is one of the workspace's active items."""
    shared = dataclasses.replace(Settings(), shared=True, max_active=2, max_runs=5)
    registry = JobRegistry(models_root, shared, warm=False, autostart=False)
    base = {"model": "cifar10_quick", "data": "shapes:200"}
    with pytest.raises(PlaygroundError, match="these 6 would make 6, past the 5"):
        sweep.start(registry, sweep.Sweep("sweep-big", base, {"lr": [0.001, 0.01, 0.1]}, [0, 1]), workspace="aaaa-aaaa")
    assert runs.list_runs(models_root) == []  # all or nothing
    registry.dispatch = lambda *a, **k: []  # keep everything queued: nothing trains in this test
    sweep.start(registry, sweep.Sweep("sweep-small", base, {"lr": [0.001, 0.01]}, [0, 1]), workspace="aaaa-aaaa")
    registry.enqueue(TrainConfig.for_model("cifar10_quick", data="shapes:200"), workspace="aaaa-aaaa")  # 2 active: the sweep, this run
    with pytest.raises(PlaygroundError, match="already has 2 runs queued or training"):
        registry.enqueue(TrainConfig.for_model("cifar10_quick", data="shapes:200"), workspace="aaaa-aaaa")
    registry.close()


# --------------------------------------------------------------------------- the command line


def sweep_cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "core.sweep", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PLAYGROUND_WARM_WORKER": "0"},
        **kw,
    )


# 30 steps of cifar10_quick: enough for the recipe's lr to pull clearly ahead of one 100x too low or too high
# (measured: 14% against 9-11% over two seeds; the crops and flips are off so that 30 steps show it).
SIX_RUNS = ["--model", "cifar10_quick", "--data", "shapes:600", "--epochs", "1", "--batch-size", "20", "--precision", "fp32"]


@pytest.mark.slow
def test_three_learning_rates_times_two_seeds(tmp_path):
    proc = sweep_cli(*SIX_RUNS, "--grid", "lr=0.00003,0.003,0.3", "--grid", "augment=off", "--seeds", "2", "--out", str(tmp_path))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert len(result["runs"]) == 6 and all(r["status"] == "finished" for r in result["runs"]), err
    assert [(r["settings"], r["seed"]) for r in result["runs"]] == [
        ({"lr": lr, "augment": False}, s) for lr in (3e-5, 0.003, 0.3) for s in (0, 1)
    ]
    for r in result["runs"]:
        config = runs.read_config(r["run_dir"])
        assert config["sweep"] == {"id": result["sweep"], "settings": r["settings"]} and config["seed"] == r["seed"]
    assert result["best"]["settings"] == {"lr": 0.003, "augment": False}
    assert result["spread"] is not None and "run 6/6 finished" in err and result["verdict"] in err


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_cleanly_and_resume_finishes_it(tmp_path):
    proc = sweep_cli(*SIX_RUNS, "--grid", "lr=0.001,0.003", "--out", str(tmp_path))
    deadline = time.time() + 300
    while not any(r.status == "running" and r.epochs_done == 0 and r.records for r in runs.list_runs(tmp_path)):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert sorted(r["status"] for r in result["runs"]) == ["stopped", "stopped"]  # one mid-run, one taken out of the queue
    assert "--resume " + result["sweep"] in err
    assert not any(r.active for r in runs.list_runs(tmp_path))

    again = sweep_cli("--resume", result["sweep"], "--out", str(tmp_path))
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert [r["status"] for r in json.loads(out)["runs"]] == ["finished", "finished"]
    assert len(runs.list_runs(tmp_path)) == 2  # the same two run folders, continued
