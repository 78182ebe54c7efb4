"""The lesson's first model: fit y = 2x + 3 with a two-parameter nn.Module.

Everything later in the studio (CNNs, optimizers, schedules) is this loop with
a bigger model; seeing w and b walk to 2 and 3 is the whole idea in miniature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from core.errors import PlaygroundError

TRUE_W, TRUE_B = 2.0, 3.0

# Shown on the First steps page next to the live chart (with the page's settings filled
# in) and executed by the tests, so the code a learner copies is code that works.
LESSON_CODE = '''\
import torch
from torch import nn

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

print(model.w.item(), model.b.item())  # ~2, ~3
'''


def lesson_code(lr: float = 0.05, steps: int = 100, noise: float = 0.5) -> str:
    return LESSON_CODE.format(lr=f"{lr:g}", steps=int(steps), noise=f"{noise:g}")


class LinearRegression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(1))
        self.b = nn.Parameter(torch.randn(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x + self.b


@dataclass(frozen=True)
class Step:
    step: int  # 0 is the untrained model, before any update
    w: float
    b: float
    loss: float


def make_data(n: int = 100, noise: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x in [-2, 2] (centred, so w and b converge at similar speeds) and y = 2x + 3 + noise."""
    if not 2 <= n <= 100_000:
        raise PlaygroundError("Use between 2 and 100,000 points.")
    if noise < 0:
        raise PlaygroundError("Noise must be zero or positive.")
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen) * 4 - 2
    y = TRUE_W * x + TRUE_B + noise * torch.randn(n, 1, generator=gen)
    return x, y


def fit(x: torch.Tensor, y: torch.Tensor, lr: float = 0.05, steps: int = 100, seed: int = 0,
        optimizer: str = "sgd") -> Iterator[Step]:
    """Train step by step, yielding w, b and the loss before the first update and after each one."""
    if not 0 < lr <= 10:
        raise PlaygroundError("The learning rate must be in (0, 10].")
    if not 1 <= steps <= 100_000:
        raise PlaygroundError("Use between 1 and 100,000 steps.")
    torch.manual_seed(seed)
    model = LinearRegression()
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
            raise PlaygroundError(f"The loss blew up to {loss.item()} at step {step}: the learning rate "
                                  f"{lr:g} is too large for this data. Try 10x smaller.")
        opt.zero_grad()
        loss.backward()
        opt.step()


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The exact best line (what gradient descent should approach), for reference on the chart."""
    design = torch.cat([x, torch.ones_like(x)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    return float(solution[0]), float(solution[1])
