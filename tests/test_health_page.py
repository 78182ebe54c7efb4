"""The Train page's training-health panel and learning-rate finder, under Streamlit's AppTest."""

from __future__ import annotations

import base64
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import train
from core.training.lr_find import report
from studio import lr_finder

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def train_page(models_root):
    def open_page() -> AppTest:
        at = AppTest.from_file(APP, default_timeout=300)
        at.run()
        at.switch_page("pages/train.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return open_page


def array(value) -> np.ndarray:
    """A Plotly JSON array: a list, or numpy's bytes in base64 ({"dtype", "bdata", "shape"})."""
    if isinstance(value, dict):
        shape = [int(n) for n in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.array(value, dtype=float)


def heatmaps(at: AppTest) -> dict[str, dict]:
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return {
        s["layout"].get("title", {}).get("text", ""): s["data"][0] for s in specs if s["data"] and s["data"][0].get("type") == "heatmap"
    }


def test_the_health_panel_shows_a_finished_runs_layers_and_warnings(models_root, train_page):
    # The case of issue #13, smaller: LeNet whose loss stays near ln(10).
    train(TrainConfig.for_model("lenet5", data="shapes:600", epochs=2, batch_size=50, log_every=3, precision="fp32"), models_root / "lenet")
    at = train_page()
    assert "Finished" in at.success[0].value
    figures = heatmaps(at)
    ratio = next(v for k, v in figures.items() if "Update / weight" in k)
    assert ratio["y"][0] == "0 · Conv2d" and len(ratio["y"]) == 5  # LeNet's 3 Linear and 2 Conv2d layers, in model order
    z = array(ratio["z"])
    assert len(array(ratio["x"])) == z.shape[1] >= 8 and -6 < z[0, -1] < 0  # log10(update / weight) over time
    assert any("Gradient norm" in k for k in figures)
    dead = next(v for k, v in figures.items() if "Dead ReLU" in k)
    assert [label.split(" · ")[1] for label in dead["y"]] == ["ReLU"] * 4
    assert any("stuck near" in w.value and "ln(10)" in w.value for w in at.warning), [w.value for w in at.warning]
    assert any("Training health" in e.label for e in at.expander)


def test_a_run_without_health_records_still_gets_its_loss_judged(models_root, train_page):
    run = models_root / "old"
    run.mkdir()
    runs.write_config(run, TrainConfig.for_model("lenet5", data="shapes", epochs=1).to_dict(), num_classes=10)
    steps = [{"kind": "step", "epoch": 0, "step": s, "progress": s / 20, "loss": 2.302, "acc": 0.1, "lr": 0.01} for s in range(1, 21)]
    records = [
        {"kind": "status", "status": "running"},
        *steps,
        {"kind": "epoch", "epoch": 1, "train_loss": 2.302, "train_acc": 0.1, "test_loss": 2.302, "test_acc": 0.1},
        {"kind": "status", "status": "finished", "epochs_done": 1, "test_acc": 0.1},
    ]
    (run / runs.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    at = train_page()
    assert not heatmaps(at)
    assert any("stuck near" in w.value for w in at.warning)
    assert any("No health records" in c.value for c in at.caption)


def lr_chart(at: AppTest) -> dict:
    return next(
        json.loads(el.proto.spec)
        for el in at.get("plotly_chart")
        if "learning rate grows" in json.loads(el.proto.spec)["layout"].get("title", {}).get("text", "")
    )


def sweep_falling_between(low: float, high: float):
    """A stand-in for lr_find whose loss is flat, falls steadily from lr `low` to `high`, then blows up."""

    def fake(config: TrainConfig, steps: int, on_step=None) -> dict:
        lrs = [lr for lr in (10 ** (-7 + 8 * i / 99) for i in range(100)) if lr < 6 * high]
        fall = [(math.log10(lr / low)) / math.log10(high / low) for lr in lrs]
        raw = [2.3 if lr < low else 2.3 - 1.3 * f if lr < high else 1.0 + 30 * (lr / high - 1) for lr, f in zip(lrs, fall)]
        return report(config, lrs, raw, stopped_early=True, seconds=0.1)

    return fake


def flat_sweep(config: TrainConfig, steps: int, on_step=None) -> dict:
    """A stand-in for lr_find whose loss never falls before it blows up at 1e-2."""
    lrs = [lr for lr in (10 ** (-7 + 8 * i / 99) for i in range(100)) if lr < 2e-2]
    return report(config, lrs, [2.3 + (30 * (lr - 1e-2) if lr > 1e-2 else 0) for lr in lrs], stopped_early=True, seconds=0.1)


def test_a_real_sweep_that_says_nothing_leaves_the_recipes_learning_rate(models_root, train_page, monkeypatch):
    # Issue #18: 40 steps of cifar10_quick on shapes hardly move the loss. The old finder still filled in a tenth of
    # where the loss blew up (1e-3), which trained worse than the recipe's 3e-3.
    monkeypatch.setattr(lr_finder, "STEPS", 40)  # the page's sweep, shorter for the test
    at = train_page()
    at.select_slider(key="shapes_n").set_value(600)
    at.run()
    assert at.number_input(key="hp-cifar10_quick-lr").value == pytest.approx(3e-3)  # the recipe's
    at.button(key="lr-find").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    found = at.session_state[lr_finder.RESULT_KEY]["result"]
    assert found["steps"] <= 40 and found["suggested_lr"] is None and found["suggested_by"] == "no_descent", found
    assert at.number_input(key="hp-cifar10_quick-lr").value == pytest.approx(3e-3)  # untouched
    (said,) = [i.value for i in at.info if "inconclusive" in i.value]
    assert "the recipe's learning rate (0.003) is kept" in said and "never fell by 5%" in said, said
    chart = lr_chart(at)
    assert chart["layout"]["xaxis"]["type"] == "log" and not any(t.get("name") == "suggestion" for t in chart["data"])
    assert not [b for b in at.button if b.label.startswith("Use the recipe's lr")]  # the field holds it already


def test_a_clear_sweep_fills_in_its_suggestion_and_one_click_restores_the_recipes(models_root, train_page, monkeypatch):
    # The loss falls between 1e-2 and 1 (as SGD's would): the recipe's 3e-3, averaging 1.5e-3 over one-cycle, is
    # below where it starts falling.
    monkeypatch.setattr(lr_finder, "lr_find", sweep_falling_between(1e-2, 1.0))
    at = train_page()
    at.select_slider(key="shapes_n").set_value(600)
    at.run()
    at.button(key="lr-find").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    found = at.session_state[lr_finder.RESULT_KEY]["result"]
    # Read off inside the descent (a constant lr); one-cycle averages about half its peak, so the suggested peak is
    # about twice it.
    assert found["suggested_by"] == "valley" and 1e-2 < found["valley_lr"] < 1
    assert found["suggested_lr"] == pytest.approx(found["valley_lr"] / found["mean_lr_factor"], rel=0.03)
    lr = at.number_input(key="hp-cifar10_quick-lr").value
    assert lr == found["suggested_lr"] and lr != pytest.approx(3e-3)
    assert any(t.get("name") == "suggestion" for t in lr_chart(at)["data"])
    assert any(f"Suggested **{lr:g}** (filled in above" in c.value for c in at.caption)
    (back,) = [b for b in at.button if b.label == "Use the recipe's lr (0.003)"]
    back.click()
    at.run()
    assert at.number_input(key="hp-cifar10_quick-lr").value == pytest.approx(3e-3)
    assert not [b for b in at.button if b.label.startswith("Use the recipe's lr")]  # back at the recipe: nothing to undo
    assert any(f"Suggested **{lr:g}** (the field holds the recipe's 0.003)" in c.value for c in at.caption)


def test_a_sweep_that_agrees_with_the_recipe_keeps_its_learning_rate(models_root, train_page, monkeypatch):
    # The loss falls from 1e-4 to 3e-2; the recipe's 3e-3 averages 1.5e-3 over one-cycle, inside that stretch. The
    # read-off point doubled would be a different number, but the sweep cannot tell it apart from the recipe's.
    monkeypatch.setattr(lr_finder, "lr_find", sweep_falling_between(1e-4, 3e-2))
    at = train_page()
    at.number_input(key="hp-cifar10_quick-lr").set_value(0.05)  # typed in before the sweep
    at.run()
    at.button(key="lr-find").click()
    at.run()
    found = at.session_state[lr_finder.RESULT_KEY]["result"]
    assert found["suggested_by"] == "fits" and found["suggested_lr"] == pytest.approx(3e-3), found
    assert at.number_input(key="hp-cifar10_quick-lr").value == pytest.approx(3e-3)
    (said,) = [s.value for s in at.success if "agrees" in s.value]
    assert "recipe's learning rate (0.003), so it stays" in said and "averages 0.0015" in said, said


def test_a_sweep_never_overwrites_a_typed_learning_rate_with_nothing(models_root, train_page, monkeypatch):
    monkeypatch.setattr(lr_finder, "lr_find", flat_sweep)
    at = train_page()
    at.select_slider(key="shapes_n").set_value(600)
    at.number_input(key="hp-cifar10_quick-lr").set_value(0.01)
    at.run()
    at.button(key="lr-find").click()
    at.run()
    assert at.number_input(key="hp-cifar10_quick-lr").value == pytest.approx(0.01)
    assert any("keeps your 0.01 (the recipe's is 0.003)" in i.value for i in at.info), [i.value for i in at.info]
    next(b for b in at.button if b.label == "Use the recipe's lr (0.003)").click()
    at.run()
    assert at.number_input(key="hp-cifar10_quick-lr").value == pytest.approx(3e-3)
    next(b for b in at.button if b.label == "Start training").click()  # the run trains with the field's lr
    at.run()
    (run_dir,) = [p for p in models_root.iterdir() if (p / runs.CONFIG_FILE).exists()]
    assert runs.read_config(run_dir)["lr"] == pytest.approx(3e-3)
    runs.request_stop(run_dir)  # no need to finish it, but leave no trainer behind
    deadline = time.time() + 240
    while runs.run_info(run_dir).status in ("running", "queued", "created") and time.time() < deadline:
        time.sleep(1)


def test_a_narrow_colour_scale_still_labels_its_ends():
    import numpy as np

    from studio.health import _log_ticks

    assert _log_ticks(np.log10(np.array([0.11, 0.34])))["ticktext"] == ["0.11", "0.2", "0.34"]
    assert _log_ticks(np.log10(np.array([0.5, 0.6])))["ticktext"] == ["0.5", "0.6"]
    assert _log_ticks(np.log10(np.array([0.0998, 0.58])))["ticktext"] == ["0.1", "0.2", "0.5"]  # 0.58 would overprint 0.5
    assert _log_ticks(np.log10(np.array([1e-5, 3.0])))["ticktext"] == ["1e-5", "1e-4", "0.001", "0.01", "0.1", "1"]
