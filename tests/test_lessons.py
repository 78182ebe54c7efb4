"""The lessons' core: each task's check on real PyTorch objects (a right answer passes, a wrong one gets its hint),
the computations the pages show, and the progress store."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
import torch

from core.lessons import LESSONS, cross_entropy, device_mix, fine_tune, lesson, linreg, loop, new_image, padding, regression, saving
from core.lessons.progress import Progress, clean_learner_id, new_learner_id, progress_path
from studio import charts

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("one_torch_thread")]


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


# --------------------------------------------------------------------------- lesson 2: padding


def test_padding_two_keeps_every_conv_the_same_size_on_the_real_model():
    assert padding.check_same_size((2, 2, 2)).ok
    rows = padding.trace((2, 2, 2)).rows
    assert [r.output for r in rows][-1] == (1, 10)  # the whole model ran: the first Linear got 64 x 4 x 4
    convs = [r for r in rows if "Conv2d" in r.layer]
    assert all(r.input[-2:] == r.output[-2:] for r in convs)
    assert [r.formula for r in convs] == ["(32 + 2·2 − 5) / 1 + 1 = 32", "(16 + 2·2 − 5) / 1 + 1 = 16", "(8 + 2·2 − 5) / 1 + 1 = 8"]


@pytest.mark.parametrize("paddings", [(0, 0, 0), (1, 1, 1), (2, 2, 1), (3, 2, 2)])
def test_a_wrong_padding_names_the_layer_and_shows_the_formula(paddings):
    verdict = padding.check_same_size(paddings)
    assert not verdict.ok and "model[" in verdict.message and "2p" in verdict.message
    for row in padding.trace(paddings).rows:  # the formula predicts what the real layer returned
        if row.formula and row.output:
            assert row.formula.endswith(f"= {row.output[-1]}")


def test_a_model_that_no_longer_fits_shows_pytorchs_own_error():
    result = padding.trace((1, 1, 1))
    assert "mat1 and mat2 shapes cannot be multiplied" in result.error
    assert padding.check_same_size((1, 1, 1)).detail == result.error


# --------------------------------------------------------------------------- lesson 3: loss


def test_cross_entropy_by_hand_is_pytorchs_and_a_softmax_first_cannot_reach_zero():
    r = cross_entropy.by_hand([2.0, 1.0, 0.1], 0)
    assert abs(sum(r.probs) - 1) < 1e-6 and abs(r.by_hand - r.torch_loss) < 1e-5
    confident = cross_entropy.by_hand([8.0, 0.0, 0.0], 0)
    assert confident.torch_loss < 0.001 < 0.55 < confident.softmax_first_floor <= confident.softmax_first


@pytest.mark.parametrize(
    "guess, hint", [(0.1, "probability"), (1.0, "base 10"), (3.32, "base 2"), (-2.3, "sign"), (5.0, "−ln"), (None, "number")]
)
def test_the_uniform_guess_is_ln_c_and_wrong_guesses_get_their_hint(guess, hint):
    assert cross_entropy.check_uniform(2.303, 10).ok and cross_entropy.check_uniform(1.099, 3).ok
    verdict = cross_entropy.check_uniform(guess, 10)
    assert not verdict.ok and hint in verdict.message


def test_a_fresh_networks_first_losses_are_near_ln_c():
    run = cross_entropy.first_steps(steps=5)
    assert run.classes == 10 and len(run.losses) == 5
    assert abs(run.losses[0] - math.log(10)) < 0.6  # a fresh net is close to a uniform guess, not certain of anything


# --------------------------------------------------------------------------- lesson 4: the loop


def test_without_zero_grad_the_gradient_is_the_sum_of_every_steps_own():
    kept = loop.gradient_steps(zero_grad=True)
    assert all(r.grad_w == pytest.approx(r.fresh_w) for r in kept)
    summed = loop.gradient_steps(zero_grad=False)
    assert summed[2].grad_w == pytest.approx(sum(r.fresh_w for r in summed[:3]), rel=1e-5)
    assert loop.check_accumulate("sum", zero_grad=False).ok
    wrong = loop.check_accumulate("latest", zero_grad=False)
    assert not wrong.ok and "does not overwrite" in wrong.message
    assert "Untick" in loop.check_accumulate("sum", zero_grad=True).message  # the task is about the loop without it


def test_optimizer_zero_grad_clears_only_the_optimizers_parameters():
    table = loop.zero_grad_difference()
    assert table["model.zero_grad()"] == dict.fromkeys(["0.weight", "0.bias", "1.weight", "1.bias"], "None (cleared)")
    assert table["optimizer.zero_grad()"]["0.weight"] == "still set" and table["optimizer.zero_grad()"]["1.weight"] == "None (cleared)"


def test_steps_per_epoch_is_a_real_dataloaders_length():
    assert loop.steps_per_epoch(50_000, 32, False) == 1563 and loop.steps_per_epoch(10_000, 32, False) == 313
    assert loop.steps_per_epoch(203, 16, True) == 12
    assert loop.check_steps(1563, 50_000, 32, False).ok
    assert "test set" in loop.check_steps(313, 50_000, 32, False).message  # the learner's 313
    assert "nothing halves it" in loop.check_steps(781, 50_000, 32, False).message  # what he expected
    assert "smaller batch is a step too" in loop.check_steps(1562, 50_000, 32, False).message
    assert "drop_last" in loop.check_steps(13, 203, 16, True).message


# --------------------------------------------------------------------------- lesson 5: the device


def test_the_loop_as_written_fails_with_pytorchs_device_message():
    outcome = device_mix.run(device_mix.program(marks=True))
    assert "device" in outcome.error and not outcome.loss_device


@pytest.mark.parametrize(
    "statement, slot, hint",
    [
        ("images.to(device)", "A", "returns a moved copy"),
        ("images = images.to(device)", "A", "labels still on the CPU"),
        ("images, labels = images.to(device), labels.to(device)", "B", "Too late"),
        ("labels = labels.to(device)", "A", "pictures from the CPU"),
        (None, "A", "Choose"),
    ],
)
def test_the_right_to_in_the_right_line_runs_and_the_rest_get_hints(statement, slot, hint):
    right = device_mix.check_to_device("images, labels = images.to(device), labels.to(device)", "A")
    assert right.ok and device_mix.lesson_device().type in right.message
    wrong = device_mix.check_to_device(statement, slot)
    assert not wrong.ok and hint in wrong.message
    if statement:
        assert "device" in wrong.detail  # PyTorch's own message, from running the loop


# --------------------------------------------------------------------------- lesson 6: saving


def test_both_ways_of_saving_and_what_weights_only_refuses():
    model, _ = saving.original()
    ways = saving.both_ways(model)
    assert ways.whole_model_bytes > ways.state_dict_bytes > 0
    assert "1.running_mean" in ways.state_dict_keys and "Sequential" in ways.whole_model_refused
    assert ways.pickle_ran == os.getpid()  # loading with weights_only=False called the file's function
    assert "getpid" in ways.pickle_refused


@pytest.mark.parametrize(
    "build, load, mode, hint",
    [
        ("model = tiny_net(num_classes=3)", saving.LOAD[0], "(nothing)", "training mode"),
        ("model = tiny_net(num_classes=10)", saving.LOAD[0], "model.eval()", "3 outputs"),
        (list(saving.BUILD)[2], saving.LOAD[0], "model.eval()", "same architecture"),
        ("model = tiny_net(num_classes=3)", saving.LOAD[1], "model.eval()", "not a model"),
        ("model = tiny_net(num_classes=3)", saving.LOAD[2], "model.eval()", "not a file name"),
    ],
)
def test_reloading_a_state_dict_gives_the_same_prediction_and_mistakes_get_hints(build, load, mode, hint):
    assert saving.check_reload("model = tiny_net(num_classes=3)", saving.LOAD[0], "model.eval()").ok
    verdict = saving.check_reload(build, load, mode)
    assert not verdict.ok and hint in verdict.message


# --------------------------------------------------------------------------- lesson 7: a new image


def test_the_training_transform_answers_differently_and_the_eval_one_the_same():
    picture = new_image.sample_picture()
    random = new_image.guesses(picture, "training")
    fixed = new_image.guesses(picture, "eval")
    assert len({g.seen.tobytes() for g in random}) == new_image.TRIES  # five different crops
    assert len({(g.index, g.prob) for g in fixed}) == 1 and fixed[0].label == "cross"  # one answer, the right one
    assert new_image.model_run().accuracy() > 0.6


@pytest.mark.parametrize("name, hint", [("training", "random"), ("no_normalize", "normalized"), ("imagenet", "ImageNet")])
def test_the_eval_transform_passes_and_the_others_get_hints(name, hint):
    picture = new_image.sample_picture()
    assert new_image.check_eval_transform("eval", picture).ok
    verdict = new_image.check_eval_transform(name, picture)
    assert not verdict.ok and hint in verdict.message


def test_normalize_uses_the_training_pictures_statistics():
    run = new_image.model_run()
    mean, std = new_image.training_stats(run)
    pixels = run.data.train.images.float().div(255)
    assert torch.allclose(torch.tensor(mean), pixels.mean(dim=(0, 2, 3)), atol=1e-3)
    assert torch.allclose(torch.tensor(std), pixels.std(dim=(0, 2, 3)), atol=1e-3)


# --------------------------------------------------------------------------- lesson 8: fine-tuning


def test_freezing_everything_stops_backward_and_a_new_head_is_all_that_trains():
    demo = fine_tune.freeze_demo(steps=3)
    assert "does not require grad" in demo.all_frozen_error
    parameters = {k: v for k, v in demo.changed.items() if "running" not in k and "num_batches" not in k}
    assert {k for k, v in parameters.items() if v} == {"14.weight", "14.bias"}
    assert demo.changed["1.running_mean"]  # a buffer: train mode still updates it


@pytest.mark.parametrize(
    "freeze, replace, order, hint",
    [
        ("every parameter", "model.classifier[6]", "replace, then freeze", "Nothing trains"),
        ("model.features only", "model.classifier[6]", "freeze, then replace", "classifier.1.weight"),
        ("every parameter", "keep the head", "freeze, then replace", "1000"),
        ("every parameter", "model.classifier[4]", "freeze, then replace", "forward pass breaks"),
        ("nothing", "model.classifier[6]", "freeze, then replace", "features.0.weight"),
    ],
)
def test_exactly_the_head_trains_on_the_real_alexnet(freeze, replace, order, hint):
    right = fine_tune.check_head_only("every parameter", "model.classifier[6]", "freeze, then replace")
    assert right.ok and "20,485" in right.message
    setup = fine_tune.apply("every parameter", "model.classifier[6]", "freeze, then replace")
    assert setup.trainable == ["classifier.6.weight", "classifier.6.bias"] and setup.output == (1, fine_tune.CLASSES)
    wrong = fine_tune.check_head_only(freeze, replace, order)
    assert not wrong.ok and hint in wrong.message + wrong.detail


# --------------------------------------------------------------------------- progress


def test_progress_is_kept_per_workspace_and_survives_a_bad_file(tmp_path):
    mine, theirs = (Progress(progress_path(workspace=code, data_dir=tmp_path)) for code in ("k7qm-3xpa", "zz22-abcd"))
    mine.mark("padding.same_size")
    mine.mark("padding.same_size")  # a second pass changes nothing
    assert set(mine.passed()) == {"padding.same_size"} and theirs.passed() == {}
    assert [item.slug for item in mine.lessons_done()] == ["padding"]
    mine.mark("regression.converge")
    assert not mine.lesson_done(lesson("regression"))  # one of its two tasks
    with pytest.raises(KeyError):
        mine.mark("no.such_task")
    mine.path.write_text("{not json")
    assert mine.passed() == {}  # unreadable: no progress, no crash
    mine.mark("loss.uniform")
    assert set(mine.passed()) == {"loss.uniform"}
    mine.reset()
    assert mine.passed() == {}


def test_a_browsers_learner_id_names_its_own_file_and_nothing_else_passes_for_one(tmp_path):
    one, two = new_learner_id(), new_learner_id()
    assert one != two and clean_learner_id(f" {one} ") == one
    Progress(progress_path(learner=one, data_dir=tmp_path)).mark("padding.same_size")
    assert progress_path(learner=one, data_dir=tmp_path) == tmp_path / "lessons" / f"{one}.json"
    assert Progress(progress_path(learner=two, data_dir=tmp_path)).passed() == {}  # a classmate's browser
    for forged in ("../../etc/passwd", "ABCDEF0123456789", "0123", "", None):  # a cookie is the browser's to change
        assert clean_learner_id(forged) is None
        with pytest.raises(ValueError, match="not a learner id"):
            progress_path(learner=forged, data_dir=tmp_path)


def test_every_lesson_has_a_task_and_a_page():
    from studio import lessons as view

    assert [item.number for item in LESSONS] == list(range(1, 9))
    assert all(item.tasks for item in LESSONS)
    assert set(view.PAGES) == set(view.STUDIO) == {item.slug for item in LESSONS}
    assert all((ROOT / path).exists() for path, _ in view.PAGES.values())
