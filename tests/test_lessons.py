"""The lessons' core: each task's check on real PyTorch objects (a right answer passes, a wrong one gets its hint),
the computations the pages show, and the progress store."""

from __future__ import annotations

import math
import re

import pytest

from core import linreg
from core.lessons import regression
from studio import charts

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------- lesson 1: regression


def axis_labels(spec: dict) -> dict[float, str]:
    """The loss axis's ticks and the text Vega draws for each (its labelExpr is a chain of `value == v ? 'text'`)."""
    axis = spec["layer"][0]["encoding"]["y"]["axis"]
    pairs = re.findall(r"datum\.value == ([-+.e0-9]+) \? '([^']*)'", axis["labelExpr"])
    labels = {float(v): text for v, text in pairs}
    assert sorted(labels) == sorted(axis["values"]), "every tick has its label"
    return labels


@pytest.mark.parametrize("lr", [0.05, 0.9])
def test_the_loss_axis_labels_every_tick_in_one_format(lr):
    """Issue #18: a diverging lesson's axis read "100000", "10000000000" and "1e+15" side by side."""
    result = linreg.lesson(lr, 100, 0.5, 0)
    losses = [h.loss for h in result.history]
    _, spec = charts.loss_chart(range(len(losses)), losses, 100, (min(losses), max(losses)))
    labels = axis_labels(spec)
    assert 3 <= len(labels) <= 8
    assert all(v > 0 and math.isclose(math.log10(v), round(math.log10(v)), abs_tol=1e-9) for v in labels)  # powers of ten
    powers = [bool(re.fullmatch(r"10[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+", t)) for t in labels.values()]
    plain = [bool(re.fullmatch(r"\d+(\.\d+)?", t)) for t in labels.values()]
    assert all(powers) or all(plain), labels
    if lr == 0.9:  # 0.2 to 4e34: powers of ten
        assert all(powers), labels
    else:  # 0.2 to 15: plain numbers read best
        assert all(plain) and labels[1.0] == "1", labels


def test_converging_in_under_50_steps_passes_and_slow_or_diverging_get_a_hint():
    assert regression.check_converges(0.3, 0.5, 0).ok
    slow = regression.check_converges(0.05, 0.5, 0)  # the page's default: 57 steps
    assert not slow.ok and "57 steps" in slow.message and "bigger" in slow.message
    wild = regression.check_converges(0.9, 0.5, 0)
    assert not wild.ok and "overshoots" in wild.message


def test_diverging_passes_and_a_converging_lr_gets_a_hint():
    assert regression.check_diverges(1.1, 0.5, 0).ok
    calm = regression.check_diverges(0.5, 0.5, 0)
    assert not calm.ok and "larger learning rate" in calm.message


@pytest.mark.parametrize(
    "output_shape, target_shape, wrong",
    [((30, 1), (30, 1), False), ((30, 1), (1, 30), True), ((30,), (1, 30), False), ((30,), (30, 1), True)],
)
def test_the_broadcasting_trap_warns_and_fits_a_flat_line(output_shape, target_shape, wrong):
    result = regression.broadcast_trap(output_shape, target_shape)
    assert bool(result.warning) == (output_shape != target_shape)  # MSELoss's own warning, whenever the shapes differ
    assert result.wrong_fit == wrong
    if wrong:  # every output against every target: the best is a flat line through the targets' mean
        assert result.compared_shape == (30, 30) and abs(result.w) < 0.05
        assert abs(result.b - sum(result.y) / len(result.y)) < 0.05
    else:
        assert abs(result.w - result.best[0]) < 0.01
