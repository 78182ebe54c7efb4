"""Lesson 4, the training loop: forward, loss, zero_grad, backward, step on First steps' two-parameter model with
every gradient shown; what goes wrong without zero_grad; optimizer.zero_grad() against model.zero_grad(); and how
many steps an epoch has (len of a real DataLoader)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from core.lessons import Verdict, linreg

LR = 0.1
STEPS = 5


@dataclass(frozen=True)
class GradStep:
    step: int  # 1 is the first update
    w: float  # before this step's update
    b: float
    loss: float
    fresh_w: float  # d(loss)/dw of this step's loss alone
    fresh_b: float
    grad_w: float  # w.grad after this step's backward(): what optimizer.step() uses
    grad_b: float


def gradient_steps(zero_grad: bool, steps: int = STEPS, seed: int = 0) -> list[GradStep]:
    """First steps' loop for a few steps, with or without `optimizer.zero_grad()`: each step's own gradient
    (computed on the side with torch.autograd.grad, which leaves .grad alone) next to what .grad holds."""
    gen = torch.Generator().manual_seed(seed)
    x, y = linreg.make_data(linreg.N_POINTS, 0.5, generator=gen)
    model = linreg.LinearRegression(gen)
    loss_fn = nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    rows = []
    for step in range(1, steps + 1):
        loss = loss_fn(model(x), y)
        fresh = torch.autograd.grad(loss, [model.w, model.b], retain_graph=True)
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        rows.append(
            GradStep(
                step,
                model.w.item(),
                model.b.item(),
                loss.item(),
                fresh[0].item(),
                fresh[1].item(),
                model.w.grad.item(),
                model.b.grad.item(),
            )
        )
        optimizer.step()
    return rows


ANSWERS = {
    "latest": "only the gradient of step 3's loss",
    "sum": "the gradients of steps 1, 2 and 3, added up",
    "mean": "the mean of the gradients of steps 1, 2 and 3",
    "zero": "zero: the gradients cancel out",
}


def check_accumulate(answer: str, zero_grad: bool) -> Verdict:
    """What w.grad holds after step 3's backward() without zero_grad, read off the real run."""
    if zero_grad:
        return Verdict(False, "Untick optimizer.zero_grad() first: the question is about the loop without it.")
    rows = gradient_steps(zero_grad=False, steps=3)
    fresh = [r.fresh_w for r in rows]
    held = rows[-1].grad_w
    values = {"latest": fresh[-1], "sum": sum(fresh), "mean": sum(fresh) / 3, "zero": 0.0}
    if answer not in values:
        return Verdict(False, "Choose one of the answers.")
    right = [key for key, value in values.items() if math.isclose(value, held, rel_tol=1e-4, abs_tol=1e-6)]
    if answer in right:
        return Verdict(
            True,
            f"w.grad = {held:.3f} = {' + '.join(f'({v:.3f})' for v in fresh)}: backward() adds each new gradient to what "
            ".grad already holds, so every step without zero_grad pushes with all the old gradients too.",
        )
    return Verdict(
        False,
        f"After step 3, w.grad is {held:.3f}, not {values[answer]:.3f}. Compare it with the column of each step's own "
        "gradient: backward() does not overwrite .grad.",
    )


# ----------------------------------------------------------------- optimizer.zero_grad() or model.zero_grad()?


def zero_grad_difference() -> dict[str, dict[str, str]]:
    """Which gradients each call clears when the optimizer holds only some of the model's parameters (here: only
    the last layer, as when the rest is trained by another optimizer or not at all). With `optimizer =
    SGD(model.parameters())` the two calls clear the very same tensors."""

    def fresh() -> tuple[nn.Sequential, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
        optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)
        model(torch.randn(4, 2)).sum().backward()
        return model, optimizer

    table: dict[str, dict[str, str]] = {}
    with torch.random.fork_rng(devices=[]):
        for call in ("optimizer.zero_grad()", "model.zero_grad()"):
            model, optimizer = fresh()
            (optimizer if call.startswith("optimizer") else model).zero_grad()
            table[call] = {name: "None (cleared)" if p.grad is None else "still set" for name, p in model.named_parameters()}
    return table


# ----------------------------------------------------------------- steps per epoch

# (what the data is, images, batch size, drop_last): the first is the learner's own puzzle (he counted 313 steps
# for CIFAR-10's training set and batch 32; 10,000 / 32 rounds up to 313: his loop ran over the test set).
PROBLEMS = (
    ("CIFAR-10's training set", 50_000, 32, False),
    ("CIFAR-10's test set", 10_000, 32, False),
    ("the studio's shapes, training split", 12_000, 128, False),
    ("your own classes: 203 pictures", 203, 16, True),
    ("MNIST's training set", 60_000, 100, False),
)


def steps_per_epoch(images: int, batch_size: int, drop_last: bool) -> int:
    """len() of a real DataLoader over that many items: the number of batches, so of optimizer steps, per epoch."""
    return len(torch.utils.data.DataLoader(range(images), batch_size=batch_size, drop_last=drop_last))


def check_steps(answer: int | None, images: int, batch_size: int, drop_last: bool) -> Verdict:
    truth = steps_per_epoch(images, batch_size, drop_last)
    if answer is None:
        return Verdict(False, "Type a number first.")
    if answer == truth:
        how = (
            "rounded down: drop_last=True drops the last, partial batch"
            if drop_last
            else "rounded up: the last, partial batch is a step too"
        )
        return Verdict(True, f"len(loader) = {truth}: {images:,} / {batch_size} = {images / batch_size:g}, {how}.")
    if answer == math.ceil(10_000 / batch_size) and images != 10_000:
        return Verdict(False, f"{answer} steps is 10,000 images' worth: a loop over the test set's loader, not this one.")
    if answer == truth + 1 and drop_last:
        return Verdict(False, "Close. drop_last=True: the last batch, smaller than the others, is left out.")
    if answer == truth - 1 and not drop_last and images % batch_size:
        return Verdict(False, f"Close. {images:,} is not a multiple of {batch_size}: the last, smaller batch is a step too.")
    if answer in (images // batch_size // 2, truth // 2):
        return Verdict(False, "Every image is seen once per epoch, in batches of batch_size: nothing halves it.")
    return Verdict(False, "One step per batch: how many batches of batch_size do the images make?")
