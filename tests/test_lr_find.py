"""The learning-rate finder: the suggestion rule, a real sweep on shapes, and its command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.serving import runs
from core.training.config import TrainConfig
from core.training.health import check
from core.training.loop import train
from core.training.lr_find import lr_find, smooth, suggest, suggestion

ROOT = Path(__file__).resolve().parent.parent


def test_smoothing_is_debiased():
    assert smooth([2.0] * 5) == pytest.approx([2.0] * 5)  # no drag towards zero at the start
    assert smooth([1.0, 3.0], beta=0.5) == pytest.approx([1.0, (0.25 * 1 + 0.5 * 3) / 0.75])


def test_the_suggestion_is_the_steepest_descent_before_the_blow_up():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    # Flat, then falling fastest at lr 1e-3 (a logistic step in log10(lr)), then exploding past 1e-1.
    losses = [2.3 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 3))) + (50 * (lr - 0.1) if lr > 0.1 else 0) for lr in lrs]
    assert suggest(lrs, losses) == pytest.approx(1e-3, rel=0.15)
    assert suggest(lrs[:4], losses[:4]) is None  # too short to say anything


def test_a_sweep_whose_loss_never_falls_suggests_a_tenth_of_where_it_starts_to_climb():
    lrs = [10 ** (-7 + 8 * i / 59) for i in range(60)]
    # A short sweep on a model that needs more steps to start learning: noise around ln(10), then the blow-up at 1e-2.
    losses = [2.303 + 0.004 * math.sin(7 * i) + (30 * (lr - 1e-2) if lr > 1e-2 else 0) for i, lr in enumerate(lrs)]
    lr, how = suggestion(lrs, losses)
    assert how == "edge" and 5e-4 <= lr <= 2e-3, lr  # not the noise's lowest point near 1e-7


def test_a_sweep_on_shapes_suggests_a_sensible_lr_and_touches_no_run_folder(models_root):
    config = TrainConfig.for_model("cifar10_quick", data="shapes:2000", precision="fp32")
    result = lr_find(config, steps=60)
    lrs, losses = result["lrs"], result["losses"]
    assert len(lrs) == len(losses) == len(result["raw_losses"]) == result["steps"] <= 60
    assert lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert lrs[1] / lrs[0] == pytest.approx(lrs[-1] / lrs[-2], rel=1e-3)  # exponential
    assert result["stopped_early"] and lrs[-1] < 10  # AdamW blows up well before lr 10
    assert 1e-4 <= result["suggested_lr"] <= 3e-2, result["suggested_lr"]
    assert list(models_root.iterdir()) == []  # nothing written where runs live


@pytest.mark.slow
def test_training_with_the_suggestion_works(models_root):
    base = dict(data="shapes:6000", precision="fp32")
    suggested = lr_find(TrainConfig.for_model("cifar10_quick", **base), steps=60)["suggested_lr"]
    result = train(TrainConfig.for_model("cifar10_quick", **base, epochs=3, lr=suggested), models_root / "r")
    assert result["status"] == "finished" and result["val_acc"] >= 0.4, (suggested, result)
    records, _ = runs.read_metrics(models_root / "r")
    assert "stuck" not in [w.code for w in check(records, num_classes=10)]


def test_command_line(tmp_path):
    env = {**os.environ, "PLAYGROUND_DATA_DIR": str(tmp_path / "data"), "PLAYGROUND_MODELS_DIR": str(tmp_path / "models")}
    done = subprocess.run(
        [sys.executable, "-m", "core.lr_find", "--model", "lenet5", "--data", "shapes:600", "--batch-size", "50", "--steps", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is exactly one JSON document
    assert set(result) >= {"lrs", "losses", "suggested_lr"} and len(result["lrs"]) <= 20
    assert "suggested lr" in done.stderr  # progress goes to stderr
    bad = subprocess.run(
        [sys.executable, "-m", "core.lr_find", "--model", "lenet5", "--data", "shapes:600", "--steps", "5000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --steps must be between") and bad.stdout == ""
