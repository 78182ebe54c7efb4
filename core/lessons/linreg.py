"""The lesson's first model: fit y = 2x + 3 with a two-parameter nn.Module.

Everything later in the studio (CNNs, optimizers, schedules) is this loop with
a bigger model; seeing w and b walk to 2 and 3 is the whole idea in miniature.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import PlaygroundError

TRUE_W, TRUE_B = 2.0, 3.0

# Shown on the First steps page next to the live chart (with the page's settings filled
# in) and executed by the tests: run as it is, it prints the very w, b and loss the page
# shows, because `lesson()` below draws its random numbers in the same order from the same seed.
LESSON_CODE = """\
import torch
from torch import nn

torch.manual_seed({seed})  # the page's Seed: the same data and start, so the same numbers

x = torch.rand(100, 1) * 4 - 2  # in [-2, 2]
y = 2 * x + 3 + {noise} * torch.randn(100, 1)

class LinearRegression(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1))
        self.b = nn.Parameter(torch.randn(1))

    def forward(self, x):
        return self.w * x + self.b

model = LinearRegression()
loss_fn = nn.MSELoss()
opt = torch.optim.SGD(model.parameters(), lr={lr})

for step in range({steps}):
    loss = loss_fn(model(x), y)  # how wrong?
    opt.zero_grad()    # forget old gradients
    loss.backward()    # d(loss)/dw, d(loss)/db
    opt.step()         # nudge w, b downhill

loss = loss_fn(model(x), y)  # after the last step
print(model.w.item(), model.b.item(), loss.item())  # ~2, ~3, ~noise**2
"""
N_POINTS = 100  # the lesson's data size (written into LESSON_CODE)


def _tidy(value: float) -> float:
    """A slider's 0.30000000000000004 as the 0.3 the code shows, so page and code compute the same."""
    return round(float(value), 6)


def lesson_code(lr: float = 0.05, steps: int = 100, noise: float = 0.5, seed: int = 0) -> str:
    return LESSON_CODE.format(lr=repr(_tidy(lr)), steps=int(steps), noise=repr(_tidy(noise)), seed=int(seed))


class LinearRegression(nn.Module):
    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, generator=generator))
        self.b = nn.Parameter(torch.randn(1, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x + self.b


@dataclass(frozen=True)
class Step:
    step: int  # 0 is the untrained model, before any update
    w: float
    b: float
    loss: float


def make_data(
    n: int = 100, noise: float = 0.5, seed: int = 0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x in [-2, 2] (centred, so w and b converge at similar speeds) and y = 2x + 3 + noise.

    A seeded torch.Generator draws exactly what `torch.manual_seed(seed)` and the global
    generator would, so LESSON_CODE reproduces these numbers without touching global state here.
    """
    if not 2 <= n <= 100_000:
        raise PlaygroundError("Use between 2 and 100,000 points.")
    if noise < 0:
        raise PlaygroundError("Noise must be zero or positive.")
    gen = generator or torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen) * 4 - 2
    y = TRUE_W * x + TRUE_B + noise * torch.randn(n, 1, generator=gen)
    return x, y


def fit(
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float = 0.05,
    steps: int = 100,
    seed: int = 0,
    optimizer: str = "sgd",
    generator: torch.Generator | None = None,
) -> Iterator[Step]:
    """Train step by step, yielding w, b and the loss before the first update and after each one.

    The starting w and b come from `generator` (else one seeded with `seed`). Raises PlaygroundError
    once the loss is no longer finite, after yielding that step.
    """
    if not 0 < lr <= 10:
        raise PlaygroundError("The learning rate must be in (0, 10].")
    if not 1 <= steps <= 100_000:
        raise PlaygroundError("Use between 1 and 100,000 steps.")
    model = LinearRegression(generator or torch.Generator().manual_seed(seed))
    loss_fn = nn.MSELoss()
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        raise PlaygroundError(f"Unknown optimizer {optimizer!r}; use sgd or adam.")
    for step in range(steps + 1):
        loss = loss_fn(model(x), y)
        yield Step(step, model.w.item(), model.b.item(), loss.item())
        if step == steps:
            break
        if not torch.isfinite(loss):
            raise PlaygroundError(
                f"The loss blew up to {loss.item()} at step {step}: the learning rate {lr:g} is too large for this data. Try 10x smaller."
            )
        opt.zero_grad()
        loss.backward()
        opt.step()


@dataclass(frozen=True)
class Lesson:
    """What the First steps page shows for one setting: the data and every step of the fit."""

    x: torch.Tensor
    y: torch.Tensor
    history: list[Step]  # step 0 (the random start) to the last step reached
    steps: int  # planned
    error: str = ""  # why it ended early: the loss stopped being a finite number

    @property
    def diverged(self) -> bool:
        return bool(self.error) or self.history[-1].loss > self.history[0].loss


def lesson(lr: float = 0.05, steps: int = 100, noise: float = 0.5, seed: int = 0) -> Lesson:
    """LESSON_CODE's numbers, step by step: one generator seeded once draws the data, then the
    starting w and b, in that order, as the code's global generator does after torch.manual_seed."""
    gen = torch.Generator().manual_seed(int(seed))
    x, y = make_data(N_POINTS, _tidy(noise), generator=gen)
    history: list[Step] = []
    try:
        history.extend(fit(x, y, lr=_tidy(lr), steps=steps, generator=gen))
    except PlaygroundError as exc:
        if not history:  # a setting out of range: nothing to show
            raise
        return Lesson(x, y, history, int(steps), str(exc))
    return Lesson(x, y, history, int(steps))


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The exact best line (what gradient descent should approach), for reference on the chart."""
    design = torch.cat([x, torch.ones_like(x)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    return float(solution[0]), float(solution[1])
