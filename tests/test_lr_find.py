"""The learning-rate finder: the suggestion rule, a real sweep on shapes, and its command line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.serving import runs
from core.training.config import TrainConfig
from core.training.health import check
from core.training.loop import train
from core.training.lr_find import lr_find, mean_lr_factor, report, smooth, suggestion

ROOT = Path(__file__).resolve().parent.parent


def test_smoothing_is_debiased():
    assert smooth([2.0] * 5) == pytest.approx([2.0] * 5)  # no drag towards zero at the start
    assert smooth([1.0, 3.0], beta=0.5) == pytest.approx([1.0, (0.25 * 1 + 0.5 * 3) / 0.75])


SWEEP = [10 ** (-7 + 8 * i / 99) for i in range(100)]  # the default sweep's lrs: 1e-7 to 10 in 100 steps


def test_the_suggestion_is_halfway_along_the_longest_descent_not_at_its_steepest_point():
    # Flat, then a long steady descent from 1e-4 to 5e-2, a steep cliff just before the minimum, then the blow-up.
    # The old rule took the steepest point, on the cliff at the edge of divergence.
    def loss(lr: float) -> float:
        x = math.log10(lr)
        if x < -4:
            return 2.3
        if x < math.log10(5e-2):
            return 2.3 - 0.3 * (x + 4)
        if x < -1:
            return 2.3 - 0.3 * (math.log10(5e-2) + 4) - 3 * (x - math.log10(5e-2))
        return 1.0 + 20 * (x + 1)

    lrs = [lr for lr in SWEEP if lr < 0.3]
    reading = suggestion(lrs, [loss(lr) for lr in lrs])
    assert reading.how == "valley" and 1e-3 <= reading.lr <= 1e-2, reading
    low, high = (lrs[i] for i in reading.valley)
    assert 1e-4 < low < 1e-3 and high == pytest.approx(0.1, rel=0.3)  # from where a tenth of its fall is done


def test_a_blip_of_noise_does_not_cut_the_valley_in_two():
    # A contiguous run would be the 44 steps after the blip; the valley is the whole descent.
    lrs = SWEEP[:90]
    losses = [2.3 - 1.2 * i / 89 + (0.05 if i == 45 else 0.0) for i in range(90)]  # one noisy step halfway down
    reading = suggestion(lrs, losses)
    assert reading.how == "valley" and reading.valley[1] == 89 and 10 <= reading.valley[0] <= 20, reading


def test_a_plateau_drifting_down_before_the_descent_does_not_drag_the_suggestion_to_tiny_lrs():
    # mycnn on CIFAR: the smoothed loss drifts down by 0.006 from 1e-6 to 5e-5, then falls by 0.13 up to 7e-3.
    lrs = [lr for lr in SWEEP if lr < 1e-2]
    x = [math.log10(lr) for lr in lrs]
    losses = [2.323 - 0.006 * min(1, max(0, (v + 6) / 1.7)) - 0.13 * min(1, max(0, (v + 4.3) / 2.15)) for v in x]
    reading = suggestion(lrs, losses)
    assert reading.how == "valley" and 3e-4 < reading.lr < 2e-3, reading  # halfway along 5e-5..7e-3, not 1e-6..7e-3


def test_a_sweep_whose_loss_hardly_falls_is_inconclusive():
    # A short sweep on a model that needs more steps to start learning (cifar10_quick on shapes): the smoothed loss
    # drifts down by 0.5% over most of the sweep, then blows up at 1e-2. There is nothing to read: no lr at all
    # (the old rule filled in a tenth of the blow-up's lr, which trained worse than the recipe's).
    lrs = [lr for lr in SWEEP if lr < 2e-2]
    losses = [2.313 - 0.012 * i / len(lrs) + (30 * (lr - 1e-2) if lr > 1e-2 else 0) for i, lr in enumerate(lrs)]
    reading = suggestion(lrs, losses)
    assert reading.lr is None and reading.how == "no_descent" and reading.drop < 0.01, reading


def test_a_loss_that_blows_up_before_it_falls_is_inconclusive():
    rising = [2.3 * 1.05**i for i in range(40)]  # climbing from the first steps (an lr range far too high)
    reading = suggestion(SWEEP[:40], rising)
    assert reading.lr is None and reading.how == "no_descent", reading
    reading = suggestion(SWEEP[:15], rising[:15])  # it blew up after 15 steps
    assert reading.lr is None and reading.how == "too_few_steps", reading
    assert suggestion(SWEEP[:4], rising[:4]).how == "too_few_steps"


def test_a_fall_that_noise_could_draw_is_inconclusive():
    rng = np.random.default_rng(4)
    trend = [2.3 - 0.3 * i / 99 for i in range(100)]  # 13% lower at the end, but each step scatters by 1
    raw = [t + rng.normal(0, 1.0) for t in trend]
    reading = suggestion(SWEEP, smooth(raw), raw)
    assert reading.lr is None and reading.how == "noisy" and reading.drop > 0.05 and reading.noise > 0.5, reading
    calm = [t + rng.normal(0, 0.02) for t in trend]  # the same fall with calm steps is real
    assert suggestion(SWEEP, smooth(calm), calm).how == "valley"


def test_the_runs_own_lr_stays_when_the_curve_agrees_with_it():
    lrs = [lr for lr in SWEEP if lr < 0.1]
    fall = [math.log10(lr / 1e-4) / math.log10(3e-2 / 1e-4) for lr in lrs]  # falls from 1e-4 to 3e-2, then blows up
    raw = [2.3 if lr < 1e-4 else 2.3 - 1.3 * f if lr < 3e-2 else 1.0 + 30 * (lr / 3e-2 - 1) for lr, f in zip(lrs, fall)]

    def read(lr: float) -> dict:
        return report(TrainConfig.for_model("cifar10_quick", lr=lr), lrs, raw, stopped_early=True, seconds=0.0)

    fits = read(3e-3)  # averages 1.5e-3 over one-cycle: inside the valley
    assert fits["suggested_by"] == "fits" and fits["suggested_lr"] == 3e-3 and "inside the stretch" in fits["note"], fits
    for wrong in (1e-6, 1.0):  # far below where the loss starts to fall; beyond where it stops
        moved = read(wrong)
        assert moved["suggested_by"] == "valley" and moved["note"] is None
        assert moved["suggested_lr"] == pytest.approx(moved["valley_lr"] / moved["mean_lr_factor"], rel=0.03)


def test_the_suggestion_is_the_peak_of_a_schedule_that_averages_the_lr_read_off():
    onecycle = TrainConfig.for_model("cifar10_quick")
    assert mean_lr_factor(onecycle) == pytest.approx(0.15 * 0.55 + 0.85 * 0.5, abs=0.01)  # warm-up from 0.1, then linear to 0
    constant = TrainConfig.for_model("cifar10_quick", schedule="constant")
    assert mean_lr_factor(constant) == pytest.approx(0.15 * 0.55 + 0.85, abs=0.01)  # it warms up too
    assert mean_lr_factor(TrainConfig.for_model("cifar10_quick", schedule="constant", warmup=0)) == 1.0
    assert mean_lr_factor(TrainConfig.for_model("speedrun")) == pytest.approx(0.23 * 0.6 + 0.77 * 0.5, abs=0.01)


def test_a_real_sweep_on_shapes_says_it_is_inconclusive_and_touches_no_run_folder(models_root):
    config = TrainConfig.for_model("cifar10_quick", data="shapes:2000", precision="fp32")
    result = lr_find(config, steps=60)
    lrs, losses = result["lrs"], result["losses"]
    assert len(lrs) == len(losses) == len(result["raw_losses"]) == result["steps"] <= 60
    assert lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert lrs[1] / lrs[0] == pytest.approx(lrs[-1] / lrs[-2], rel=1e-3)  # exponential
    assert result["stopped_early"] and lrs[-1] < 10  # AdamW blows up well before lr 10
    # Issue #18: in 60 steps this model has not started to learn, so there is nothing to read (the old finder
    # suggested a tenth of the blow-up's lr anyway, which trained 13 points worse than the recipe's lr).
    assert result["suggested_lr"] is None and result["suggested_by"] == "no_descent" and result["drop"] < 0.05, result
    assert "never fell by 5%" in result["note"] and "blew up at lr" in result["note"]
    assert list(models_root.iterdir()) == []  # nothing written where runs live


@pytest.mark.slow
def test_the_suggestion_trains_as_well_as_the_recipes_lr_on_real_images(models_root, cifar_slice):
    # Issue #18's bar, on one preset the sweep can read: the lr the Train page would leave in the field (the
    # suggestion, or the recipe's when there is none) trains within 2 points of the recipe's, same seed and epochs.
    config = TrainConfig.for_model("mycnn", data=f"imagefolder:{cifar_slice}", epochs=2, precision="fp32", health=False)
    found = lr_find(config)
    recipe = train(config, models_root / "recipe")
    assert recipe["status"] == "finished"
    suggested = train(dataclasses.replace(config, lr=found["suggested_lr"] or config.lr), models_root / "suggested")
    assert suggested["val_acc"] >= recipe["val_acc"] - 0.02, (found["suggested_lr"], found["suggested_by"], suggested, recipe)
    records, _ = runs.read_metrics(models_root / "suggested")
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
    assert set(result) >= {"lrs", "losses", "suggested_lr", "suggested_by", "note"} and len(result["lrs"]) <= 20
    assert result["suggested_lr"] is None and "keep the run's lr 0.003" in done.stderr  # 20 steps: nothing to read
    bad = subprocess.run(
        [sys.executable, "-m", "core.lr_find", "--model", "lenet5", "--data", "shapes:600", "--steps", "5000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --steps must be between") and bad.stdout == ""
