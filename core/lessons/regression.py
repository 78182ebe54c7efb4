"""Lesson 1, linear regression from scratch: First steps' fit (core.linreg), its two tasks, and the broadcasting trap.

The tasks run the page's own fit (the same data and start for its noise and seed) with the learner's learning rate.
The trap is a learner's real bug: targets of shape [1, 30] against nn.Linear's outputs of shape [30, 1]. MSELoss
warns, broadcasts both to [30, 30] (every output against every target) and the best it can do is a flat line
through the targets' mean.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from core.lessons import Verdict, linreg

CLOSE = 0.01  # w and b this close to the best line's count as converged (the page shows them to 3 decimals)
FAST = 50  # "converges in under 50 steps"
LOOK_AHEAD = 400  # how far the hint looks for a slow learning rate
DIVERGE_STEPS = 100


def converged_at(result: linreg.Lesson) -> int | None:
    """The first step at which w and b are both within CLOSE of the least-squares line, or None."""
    best_w, best_b = linreg.least_squares(result.x, result.y)
    return next((h.step for h in result.history if abs(h.w - best_w) < CLOSE and abs(h.b - best_b) < CLOSE), None)


def check_converges(lr: float, noise: float, seed: int) -> Verdict:
    result = linreg.lesson(lr, LOOK_AHEAD, noise, seed)
    step = converged_at(result)
    if step is not None and step < FAST:
        return Verdict(True, f"With lr = {lr:g}, w and b are within {CLOSE} of the best line after {step} steps.")
    if result.diverged:
        return Verdict(
            False,
            f"With lr = {lr:g} the loss grows instead of shrinking: every step overshoots the bottom of the valley "
            "and lands higher up on the other side. Somewhere between this and where it was slow is the fast one.",
        )
    when = f"only after {step} steps" if step is not None else f"not even in {LOOK_AHEAD} steps"
    return Verdict(
        False,
        f"With lr = {lr:g}, w and b reach the best line {when}. Each step moves them by lr times the gradient: take bigger steps.",
    )


def check_diverges(lr: float, noise: float, seed: int) -> Verdict:
    result = linreg.lesson(lr, DIVERGE_STEPS, noise, seed)
    if result.diverged:
        last = result.history[-1]
        where = f"is not a number any more after {last.step} steps" if result.error else f"is {last.loss:.3g} after {last.step} steps"
        return Verdict(True, f"With lr = {lr:g} the loss started at {result.history[0].loss:.3g} and {where}: diverged.")
    step = converged_at(result)
    return Verdict(
        False,
        f"With lr = {lr:g} the loss still goes down"
        + (f" (w and b reach the best line after {step} steps)" if step is not None else "")
        + ". Diverging needs steps so big that each overshoots by more than it corrects: a much larger learning rate.",
    )


# ----------------------------------------------------------------- the broadcasting trap

N_TRAP = 30
OUTPUT_SHAPES = {"[30, 1]: what nn.Linear(1, 1) returns": (N_TRAP, 1), "[30]: after .squeeze(1)": (N_TRAP,)}
TARGET_SHAPES = {"[30, 1]": (N_TRAP, 1), "[1, 30]": (1, N_TRAP), "[30]": (N_TRAP,)}

TRAP_CODE = """\
x = torch.rand(30, 1) * 4 - 2  # 30 points: [30, 1]
y = 2 * x + 3 + 0.3 * torch.randn(30, 1)
targets = y.reshape({target})  # {target_list}
model = nn.Linear(1, 1)
outputs = model(x){squeeze}  # {output_list}
loss = nn.MSELoss()(outputs, targets)
# {verdict}
"""


@dataclass(frozen=True)
class TrapResult:
    output_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    compared_shape: tuple[int, ...]  # what MSELoss really averaged over, after broadcasting
    warning: str  # MSELoss's own warning, or "" when the shapes match
    w: float
    b: float
    best: tuple[float, float]  # the least-squares line: what a right fit reaches
    x: list[float]
    y: list[float]

    @property
    def wrong_fit(self) -> bool:
        return abs(self.w - self.best[0]) > 0.1 or abs(self.b - self.best[1]) > 0.1


def trap_code(output_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> str:
    compared = torch.broadcast_shapes(output_shape, target_shape)
    verdict = (
        "same shapes: one output per target"
        if output_shape == target_shape
        else f"warns, broadcasts both to {list(compared)}"
        + (" (every output against every target)" if math.prod(compared) > N_TRAP else " (element by element: luckily right)")
    )
    return TRAP_CODE.format(
        target=", ".join(map(str, target_shape)),
        target_list=list(target_shape),
        squeeze=".squeeze(1)" if len(output_shape) == 1 else "",
        output_list=list(output_shape),
        verdict=verdict,
    )


def broadcast_trap(output_shape: tuple[int, ...], target_shape: tuple[int, ...], steps: int = 300, seed: int = 0) -> TrapResult:
    """Fit nn.Linear(1, 1) to 30 points with the outputs and targets in these shapes; MSELoss's warning and the fit."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(N_TRAP, 1, generator=gen) * 4 - 2
    y = 2 * x + 3 + 0.3 * torch.randn(N_TRAP, 1, generator=gen)
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.normal_(generator=gen)
        model.bias.normal_(generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.MSELoss()
    targets = y.reshape(target_shape)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(steps):
            outputs = model(x).reshape(output_shape)
            loss = loss_fn(outputs, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
    warning = next((str(w.message) for w in caught if "target size" in str(w.message)), "")
    return TrapResult(
        tuple(output_shape),
        tuple(target_shape),
        tuple(torch.broadcast_shapes(output_shape, target_shape)),
        warning,
        model.weight.item(),
        model.bias.item(),
        linreg.least_squares(x, y),
        x.squeeze(1).tolist(),
        y.squeeze(1).tolist(),
    )
