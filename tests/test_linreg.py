"""The First steps lesson: y = 2x + 3 learned by a two-parameter module."""

import math

import pytest
import torch

from core.errors import PlaygroundError
from core.lessons import linreg


def test_data_is_reproducible_and_on_the_line():
    x, y = linreg.make_data(n=200, noise=0.0, seed=1)
    x2, y2 = linreg.make_data(n=200, noise=0.0, seed=1)
    assert x.shape == y.shape == (200, 1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.allclose(y, 2 * x + 3)
    assert x.min() >= -2 and x.max() <= 2


def test_fit_walks_to_the_least_squares_line():
    x, y = linreg.make_data(noise=0.5, seed=0)
    steps = list(linreg.fit(x, y, lr=0.05, steps=150, seed=0))
    assert [s.step for s in steps] == list(range(151))
    best_w, best_b = linreg.least_squares(x, y)
    assert abs(steps[-1].w - best_w) < 0.02 and abs(steps[-1].b - best_b) < 0.02
    assert abs(best_w - 2) < 0.2 and abs(best_b - 3) < 0.2
    assert steps[-1].loss < steps[0].loss / 10
    # Gradient descent with a small step never makes the loss worse on this convex problem.
    assert all(b.loss <= a.loss + 1e-6 for a, b in zip(steps, steps[1:]))


def test_adam_also_converges():
    x, y = linreg.make_data(noise=0.1, seed=2)
    last = list(linreg.fit(x, y, lr=0.1, steps=300, optimizer="adam"))[-1]
    assert abs(last.w - 2) < 0.1 and abs(last.b - 3) < 0.1


def test_too_large_a_learning_rate_blows_up_with_a_clear_message():
    x, y = linreg.make_data(seed=0)
    seen = []
    with pytest.raises(PlaygroundError, match="learning rate"):
        for step in linreg.fit(x, y, lr=10, steps=2000):
            seen.append(step)
    assert seen and not math.isfinite(seen[-1].loss)


@pytest.mark.parametrize("kwargs", [dict(lr=0), dict(lr=-1), dict(steps=0), dict(optimizer="lbfgs")])
def test_bad_settings_are_user_errors(kwargs):
    x, y = linreg.make_data()
    with pytest.raises(PlaygroundError):
        next(linreg.fit(x, y, **kwargs))


def test_bad_data_settings_are_user_errors():
    with pytest.raises(PlaygroundError):
        linreg.make_data(n=1)
    with pytest.raises(PlaygroundError):
        linreg.make_data(noise=-1)


def test_the_code_shown_on_the_page_runs_and_learns(capsys):
    namespace: dict = {}
    exec(linreg.lesson_code(lr=0.1, steps=200, noise=0.3), namespace)  # noqa: S102 - our own snippet
    model = namespace["model"]
    assert abs(model.w.item() - 2) < 0.15 and abs(model.b.item() - 3) < 0.15
    assert "lr=0.1" in linreg.lesson_code(lr=0.1) and "range(200)" in linreg.lesson_code(steps=200)
    capsys.readouterr()


@pytest.mark.parametrize("settings", [(0.05, 100, 0.5, 0), (0.3, 40, 1.2, 7), (0.9, 30, 0.0, 123)])
def test_the_code_reproduces_the_pages_numbers(settings, capsys):
    """The seed is in the code, so running it prints the very w, b and loss the page shows at the last step."""
    lr, steps, noise, seed = settings
    code = linreg.lesson_code(lr, steps, noise, seed)
    assert f"torch.manual_seed({seed})" in code
    torch.manual_seed(999)  # whatever state the global generator was in
    exec(code, {})  # noqa: S102 - our own snippet
    printed = [float(v) for v in capsys.readouterr().out.split()]
    last = linreg.lesson(lr, steps, noise, seed).history[-1]
    assert printed == pytest.approx([last.w, last.b, last.loss], rel=1e-5)


def test_slider_float_noise_is_written_as_the_page_uses_it():
    assert "0.3 * torch.randn" in linreg.lesson_code(noise=0.1 + 0.2)


def test_a_diverging_lesson_keeps_every_step_until_the_loss_blows_up():
    result = linreg.lesson(lr=1.1, steps=100, noise=0.5, seed=0)
    assert result.diverged and "too large" in result.error
    assert 1 < len(result.history) < 101  # stopped early, yet with all steps until then
    assert [h.step for h in result.history] == list(range(len(result.history)))
    assert sum(math.isfinite(h.loss) for h in result.history) >= len(result.history) - 1
    assert not linreg.lesson(lr=0.05).diverged
