"""Training health: the per-layer measurements, the warning rules, and the records a run writes."""

from __future__ import annotations

import io
import math
import threading

import pytest
import torch
from torch import nn

from core.models.build import build
from core.serving import runs
from core.training.cli import _progress_printer
from core.training.config import TrainConfig
from core.training.curves import HEALTH_POINTS, Curves, Thinned
from core.training.health import Probe, Watcher, check
from core.training.loop import resume, train


def rows_by_name(rows):
    return {row["name"]: row for row in rows}


def test_norms_and_update_ratio_of_known_tensors():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # ||w|| = 5
        model[0].bias.zero_()
        model[1].weight.copy_(torch.tensor([[1.0, 0.0]]))
    model[0].weight.grad = torch.tensor([[1.0, 2.0], [2.0, 4.0]])  # ||g|| = 5 together with the bias's
    model[0].bias.grad = torch.tensor([0.0, 0.0])
    model[1].weight.grad = torch.tensor([[0.0, 2.0]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model)
    probe.begin()
    optimizer.step()
    rows = rows_by_name(probe.measure())
    assert list(rows) == ["0", "1"] and rows["0"]["type"] == "Linear"  # named as named_modules / core.inspect do
    assert rows["0"]["grad_norm"] == pytest.approx(5.0)
    w_after = torch.tensor([[3.0, 0.0], [0.0, 4.0]]) - 0.1 * torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    assert rows["0"]["weight_norm"] == pytest.approx(float(w_after.norm()), rel=1e-3)
    assert rows["0"]["update_ratio"] == pytest.approx(0.1 * 5.0 / float(w_after.norm()), rel=1e-3)  # lr * ||g|| for plain SGD
    assert rows["1"]["grad_norm"] == pytest.approx(2.0)
    assert rows["1"]["update_ratio"] == pytest.approx(0.2 / math.sqrt(1 + 0.2**2), rel=1e-3)
    assert not probe.pending


def test_weight_norm_and_update_ratio_are_the_weight_matrix_s_and_the_gradient_norm_the_whole_layer_s():
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
        layer.bias.fill_(12.0)
    layer.weight.grad, layer.bias.grad = torch.tensor([[0.0, 3.0]]), torch.tensor([4.0])
    probe = Probe(layer)
    probe.begin()
    with torch.no_grad():
        layer.bias += 1.0  # a bias update does not count as a weight update
    (row,) = probe.measure()
    assert row["name"] == "model" and row["grad_norm"] == pytest.approx(5.0)
    assert row["weight_norm"] == pytest.approx(5.0) and row["update_ratio"] == 0.0 and "vectors_only" not in row
    bn = Probe(nn.BatchNorm2d(3))
    bn.begin()
    assert bn.measure()[0]["vectors_only"]


def test_frozen_layers_are_left_out_and_a_root_with_own_parameters_is_named_as_the_layer_table_names_it():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.body = nn.Linear(3, 3)
            self.frozen = nn.Linear(3, 3).requires_grad_(False)

        def forward(self, x):
            return self.frozen(self.body(x)) * self.scale

    model = Scaled()
    probe = Probe(model)
    probe.begin()
    model(torch.randn(4, 3)).sum().backward()
    rows = rows_by_name(probe.measure())
    assert set(rows) == {"(own parameters)", "body"}
    assert rows["(own parameters)"]["grad_norm"] > 0 and rows["body"]["update_ratio"] == 0.0  # no optimizer step: no update
    assert rows["(own parameters)"]["vectors_only"] and "vectors_only" not in rows["body"]  # a lone scale vs a weight matrix


def test_a_relu_after_a_strongly_negative_bias_is_reported_dead():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every unit of the first ReLU is negative for every input
        model[2].bias[:3] = -100.0  # half the units of the second
        model[2].bias[3:] = 100.0
    probe = Probe(model)
    probe.begin()
    model(torch.randn(16, 4))
    rows = rows_by_name(probe.measure())
    assert rows["1"] == {"name": "1", "type": "ReLU", "dead": 1.0, "units": 8}
    assert rows["3"]["dead"] == 0.5 and rows["3"]["units"] == 6
    warnings = check([{"kind": "health", "step": 1, "layers": list(rows.values())}], num_classes=2)
    assert [(w.level, w.layer) for w in warnings] == [("error", "1")] and "outputs 0 for every image" in warnings[0].message


def test_conv_units_are_channels_and_a_reused_relu_counts_every_call():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.relu = nn.Conv2d(2, 4, 1), nn.Conv2d(4, 4, 1), nn.ReLU()

        def forward(self, x):
            return self.relu(self.b(self.relu(self.a(x))))

    model = Block()
    with torch.no_grad():
        model.a.bias.copy_(torch.tensor([-100.0, -100.0, 100.0, 100.0]))  # 2 of 4 channels dead in the first call
        model.b.bias.fill_(100.0)  # none in the second
    probe = Probe(model)
    probe.begin()
    model(torch.randn(3, 2, 5, 5))
    assert rows_by_name(probe.measure())["relu"] == {"name": "relu", "type": "ReLU", "dead": 0.25, "units": 8}
    model(torch.randn(3, 2, 5, 5))  # without begin() no hook is left behind: nothing is counted
    assert not probe._handles and probe.measure() == []


# --------------------------------------------------------------------------- rules on synthetic records


def health_record(step, *, lr=0.01, loss=1.0, ratio=1e-3, grad=1.0, dead=0.1, epochs_per_step=0.01):
    layers = [{"name": name, "type": "Conv2d", "grad_norm": grad, "weight_norm": 5.0, "update_ratio": ratio} for name in ("0", "2", "4")]
    layers.append({"name": "1", "type": "ReLU", "dead": dead, "units": 32})
    return {"kind": "health", "step": step, "epoch": 0, "progress": step * epochs_per_step, "lr": lr, "loss": loss, "layers": layers}


def healthy_run(n=60):
    """A run that learns: the loss falls from ln(10), updates near 1e-3, steady gradients, few dead units."""
    records = [
        health_record(s, loss=2.3 * math.exp(-s / 20), grad=1.0 + 0.1 * math.sin(s), lr=0.01 * min(1, s / 10)) for s in range(1, n + 1)
    ]
    records += [{"kind": "epoch", "epoch": 1, "train_acc": 0.6, "test_acc": 0.55}]
    return records


def codes(records, **kw):
    return [w.code for w in check(records, num_classes=10, **kw)]


def test_a_healthy_run_gets_no_warning():
    assert codes(healthy_run()) == []


def test_too_small_updates_say_the_learning_rate_may_be_too_low():
    records = [health_record(s, ratio=2e-7, loss=2.3 * math.exp(-s / 20)) for s in range(1, 20)]
    (warning,) = check(records, num_classes=10, config={"lr": 1e-6})
    assert warning.code == "lr_low" and warning.level == "warning"
    assert "learning rate (1e-06) may be too low" in warning.message and "1e-3" in warning.message


def test_small_updates_during_the_final_decay_are_no_problem():
    records = [health_record(s, lr=0.01, loss=2.3 * math.exp(-s / 5)) for s in range(1, 20)]
    # the schedule anneals the lr to 0, and the updates shrink with it
    records += [health_record(s, lr=0.01 * (40 - s) / 20, ratio=1e-3 * (40 - s) / 20, loss=0.1) for s in range(20, 40)]
    assert codes(records) == []


def test_huge_updates_say_the_learning_rate_may_be_too_high():
    assert codes([health_record(s, ratio=0.8, loss=1.0) for s in range(1, 10)]) == ["lr_high"]
    # BatchNorm shifts start at 0 and may have their own large lr (speedrun): not judged by the weights' rule of thumb
    records = [health_record(s, loss=1.0) for s in range(1, 10)]
    for r in records:
        r["layers"] += [
            {"name": f"bn{i}", "type": "BatchNorm2d", "grad_norm": 1.0, "weight_norm": 0.1, "update_ratio": 0.9, "vectors_only": True}
            for i in range(5)
        ]
    assert codes(records) == []


def test_exploding_gradients():
    records = [health_record(s, grad=1.0, loss=1.0) for s in range(1, 10)] + [health_record(10, grad=500.0, loss=1.0)]
    (warning,) = check(records, num_classes=10)
    assert warning.code == "exploding" and warning.level == "error" and "500x" in warning.message
    growing = [health_record(s, grad=1.1**s, loss=1.0) for s in range(1, 60)]  # 280x over the run, 1.6x per 5 records
    assert codes(growing) == []
    records[-1]["layers"][1]["grad_norm"] = float("nan")
    (warning,) = check(records, num_classes=10)
    assert warning.layer == "2" and "inf/NaN" in warning.message


def test_a_rise_from_vanished_gradients_is_not_an_explosion_and_vanishing_has_its_own_words():
    """Issue #18: "Exploding gradients: norm 0.354, 22,309,148x its recent 1.58e-08" on a run that had fitted its
    few training images (loss ~0, gradients ~0): a rise from ~0 is the gradients coming back."""
    fitted = [health_record(s, grad=1.58e-08 / math.sqrt(3), loss=2e-7) for s in range(1, 10)]
    back = fitted + [health_record(10, grad=0.354 / math.sqrt(3), loss=0.6)]
    assert "exploding" not in codes(back)
    (info,) = check(fitted, num_classes=2)
    assert info.code == "fitted" and info.level == "info" and "fits its training images" in info.message
    # a big rise from ~0 is not one either, and neither is a spike while the model fits its batches
    assert "exploding" not in codes(fitted + [health_record(10, grad=40.0, loss=0.6)])
    spiky = [health_record(s, grad=[2e-5, 0.03, 3e-9, 0.3][s % 4], loss=[1e-6, 0.002, 0.0, 0.001][s % 4]) for s in range(1, 10)]
    assert "exploding" not in codes([*spiky, health_record(10, grad=30.0, loss=0.7)])
    # a jump that stays small in itself is not an explosion: clipping's thresholds are 1 to 5
    assert "exploding" not in codes([health_record(s, grad=0.01, loss=1.0) for s in range(1, 10)] + [health_record(10, grad=1.0, loss=1.0)])
    # gradients of ~0 while the loss is still high: the weights get no signal
    (warning,) = check([health_record(s, grad=1e-7, loss=1.5, dead=0.2) for s in range(1, 10)], num_classes=10)
    assert warning.code == "vanishing" and warning.level == "warning" and "still 1.50" in warning.message


def test_small_updates_of_a_model_that_fits_its_batches_do_not_blame_the_learning_rate():
    records = [health_record(s, ratio=2e-7, grad=1e-6, loss=1e-6) for s in range(1, 20)]
    assert codes(records, config={"lr": 0.05}) == ["fitted"]


def test_loss_stuck_at_ln_num_classes():
    stuck = [health_record(s, loss=2.30 - 0.001 * s, epochs_per_step=1 / 15) for s in range(1, 46)]
    (warning,) = check(stuck, num_classes=10)
    assert warning.code == "stuck" and "ln(10) = 2.30" in warning.message and "learning-rate finder" in warning.message
    assert codes(stuck[:10]) == []  # the first epoch: every run starts at ln(10)
    tiny_data = [health_record(s, loss=math.log(2), epochs_per_step=1) for s in range(1, 6)]  # 5 epochs of one step each
    assert [w.code for w in check(tiny_data, num_classes=2)] == []  # a handful of steps is too early to say
    assert codes([health_record(s, loss=math.log(3), epochs_per_step=0.1) for s in range(1, 30)]) == []  # ln 3, judged for 10
    assert [w.code for w in check([{**r, "kind": "step"} for r in stuck], num_classes=10)] == ["stuck"]  # health records off
    for r in stuck[-3:]:  # a layer died (the lr was too high): the advice is not "a higher learning rate"
        r["layers"][-1]["dead"] = 1.0
    dead, stuck_again = check(stuck, num_classes=10)
    assert dead.code == "dead:1" and "fix it first" in stuck_again.message and "higher" not in stuck_again.message


def test_test_accuracy_above_training_accuracy_is_explained_once_with_the_runs_reasons():
    epochs = [{"kind": "epoch", "epoch": e, "train_acc": 0.5 + e / 10, "test_acc": 0.55 + e / 10} for e in (1, 2)]
    (info,) = check(epochs, num_classes=10, config={"augment": True, "model": "alexnet"})
    assert info.level == "info" and "cropped and flipped" in info.message and "dropout" in info.message
    (info,) = check(epochs, num_classes=10, config={"augment": False, "model": "cifar10_quick"})
    assert "cropped" not in info.message and "averaged over the epoch" in info.message
    epochs.append({"kind": "epoch", "epoch": 3, "train_acc": 0.9, "test_acc": 0.8})
    assert codes(epochs) == []  # no longer "all along"
    watcher = Watcher(10)
    said = [w.code for r in epochs[:2] for w in watcher.add(r)]
    assert said == ["test_above_train"]  # the first time only


def test_curves_keep_health_records_bounded_and_replayed_steps_once():
    curves = Curves()
    curves.add(healthy_run(HEALTH_POINTS * 3))
    kept = curves.health
    assert len(kept) <= HEALTH_POINTS + 1 and kept[-1]["step"] == HEALTH_POINTS * 3 and kept[0]["step"] < 10
    steps = [r["step"] for r in kept]
    assert steps == sorted(steps)
    curves.add([health_record(50), {"kind": "step", "step": 50}])  # a resumed run replays from step 50 (health first)
    assert [r["step"] for r in curves.health if r["step"] >= 50] == [50]
    thinned = Thinned(4)
    for s in range(1, 11):
        thinned.add({"step": s})
    assert [r["step"] for r in thinned.items()][-1] == 10 and len(thinned.items()) <= 5


# --------------------------------------------------------------------------- in a real run


def tiny(**overrides) -> TrainConfig:
    base = dict(data="shapes:600", epochs=2, batch_size=50, log_every=3, precision="fp32")
    return TrainConfig.for_model(overrides.pop("model", "lenet5"), **{**base, **overrides})


def test_a_run_writes_one_health_record_per_log_interval_and_resume_keeps_working(models_root):
    stop, seen = threading.Event(), []

    def on_record(r):
        if r["kind"] == "health":
            seen.append(r)
            if len(seen) == 3:
                stop.set()

    assert train(tiny(), models_root / "r", stop_event=stop, on_record=on_record)["status"] == "stopped"
    assert resume(models_root / "r")["status"] == "finished"
    records, _ = runs.read_metrics(models_root / "r")
    steps = [r for r in records if r["kind"] == "step"]
    health = [r for r in records if r["kind"] == "health"]
    assert [r["step"] for r in health] == [r["step"] for r in steps] and len(health) >= 8  # 12 steps/epoch, every 3rd
    layers = rows_by_name(health[-1]["layers"])
    names = [name for name, _ in build("lenet5").named_modules()]
    assert set(layers) <= set(names) and {"0", "3", "7", "9", "11"} <= set(layers) and {"1", "4", "8", "10"} <= set(layers)
    assert all(row["grad_norm"] > 0 and 0 < row["update_ratio"] < 1 for row in layers.values() if "grad_norm" in row)
    assert all(0 <= row["dead"] <= 1 and row["units"] > 0 for row in layers.values() if row["type"] == "ReLU")
    info = runs.run_info(models_root / "r")
    assert info.status == "finished" and info.epochs_done == 2  # summarize reads past the new kind
    curves = Curves()
    curves.add(records)
    assert curves.health[-1]["step"] == health[-1]["step"] and len(curves.steps_frame()) == len({r["step"] for r in steps})


def test_health_can_be_switched_off(models_root):
    train(tiny(epochs=1, health=False), models_root / "off")
    kinds = {r["kind"] for r in runs.read_metrics(models_root / "off")[0]}
    assert "step" in kinds and "health" not in kinds


@pytest.mark.slow
def test_issue_13_lenet_on_2000_shapes_for_3_epochs_gets_the_stuck_loss_warning(models_root):
    """Issue #13: a LeNet copy trained 3 epochs on 2,000 shapes stayed at loss 2.3 and 18.8% with no hint."""
    out = io.StringIO()
    result = train(
        TrainConfig.for_model("lenet5", data="shapes:2000", epochs=3), models_root / "lenet", on_record=_progress_printer(out, config=None)
    )
    assert result["val_acc"] < 0.3  # the case itself: it learned almost nothing
    records, _ = runs.read_metrics(models_root / "lenet")
    warnings = check(records, num_classes=10, config=runs.read_config(models_root / "lenet"))
    assert "stuck" in [w.code for w in warnings]
    assert "health warning: The training loss is stuck near" in out.getvalue()  # the command line says it too


def test_short_steps_get_about_ten_health_records_an_epoch_at_log_intervals(models_root):
    # 100 steps an epoch logged every 4th: health every 12th (a multiple of the log interval), so LeNet's cheap
    # steps are not slowed by more than the 5% the records may cost.
    assert train(tiny(data="shapes:2000", batch_size=20, epochs=1, log_every=0), models_root / "r")["status"] == "finished"
    records, _ = runs.read_metrics(models_root / "r")
    steps = {r["step"] for r in records if r["kind"] == "step"}
    health = [r["step"] for r in records if r["kind"] == "health"]
    assert len(steps) >= 25 and 6 <= len(health) <= 10
    assert set(health) <= steps and all(step % 12 == 0 for step in health)
