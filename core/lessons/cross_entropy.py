"""Lesson 3, loss functions: cross-entropy of three logits by hand and by nn.CrossEntropyLoss, the Softmax layer
that must not go before it, and the loss of a uniform guess (ln C) in the first steps of a real run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.data.datasets import SHAPES_CLASSES
from core.lessons import Verdict, tiny


@dataclass(frozen=True)
class ByHand:
    logits: list[float]
    target: int
    exps: list[float]  # e^z for each logit
    probs: list[float]  # softmax: e^z / sum
    by_hand: float  # -ln(probs[target])
    torch_loss: float  # nn.CrossEntropyLoss()(logits, target)
    softmax_first: float  # nn.CrossEntropyLoss()(softmax(logits), target): the extra Softmax layer's loss
    softmax_first_floor: float  # the lowest loss possible with the extra Softmax (a perfect, certain answer)


def by_hand(logits: Sequence[float], target: int) -> ByHand:
    z = torch.tensor([list(map(float, logits))])
    label = torch.tensor([int(target)])
    exps = z.exp()[0]
    probs = exps / exps.sum()
    loss_fn = nn.CrossEntropyLoss()
    c = z.shape[1]
    return ByHand(
        logits=z[0].tolist(),
        target=int(target),
        exps=exps.tolist(),
        probs=probs.tolist(),
        by_hand=-math.log(probs[target].item()),
        torch_loss=loss_fn(z, label).item(),
        softmax_first=loss_fn(z.softmax(dim=1), label).item(),
        # Probabilities in [0, 1] used as logits: at best [1, 0, 0], whose softmax is e / (e + C - 1), never 1.
        softmax_first_floor=-math.log(math.e / (math.e + c - 1)),
    )


def check_uniform(guess: float | None, classes: int) -> Verdict:
    """The learner's prediction of the loss of a guess that gives every one of `classes` classes the same probability."""
    truth = nn.CrossEntropyLoss()(torch.zeros(1, classes), torch.tensor([0])).item()  # equal logits: uniform
    if guess is None:
        return Verdict(False, "Type a number first.")
    if math.isclose(guess, truth, abs_tol=0.01):
        return Verdict(
            True, f"ln {classes} = {truth:.3f}: a uniform guess puts 1/{classes} on the right class, and −ln(1/{classes}) = ln {classes}."
        )
    hints = [
        (1 / classes, f"{1 / classes:.3g} is the probability the guess gives the right class; the loss is −ln of that probability."),
        (math.log10(classes), "That is log base 10. PyTorch's cross-entropy uses the natural log, ln."),
        (math.log2(classes), "That is log base 2 (bits). PyTorch's cross-entropy uses the natural log, ln."),
        (-truth, "Check the sign: a probability is at most 1, so its log is at most 0, and the loss is minus that log."),
        (0.0, "A loss of 0 is a certain, right answer. A uniform guess is far from certain."),
    ]
    for value, hint in hints:
        if math.isclose(guess, value, abs_tol=0.01):
            return Verdict(False, hint)
    return Verdict(
        False,
        f"Not quite. With {classes} classes a uniform guess gives every class probability 1/{classes}. Cross-entropy is "
        "−ln(probability of the right class).",
    )


@dataclass(frozen=True)
class FirstSteps:
    classes: int
    losses: list[float]  # the first steps of a real run, from a fresh network

    @property
    def uniform(self) -> float:
        return math.log(self.classes)


def first_steps(steps: int = 25, seed: int = 0) -> FirstSteps:
    """A fresh tiny net's first `steps` training losses on all ten shapes classes: they start near ln 10."""
    data = tiny.shapes_subset(SHAPES_CLASSES, per_class=32, seed=seed)
    model = tiny.make_net(len(data.classes), seed)
    return FirstSteps(len(data.classes), tiny.train_steps(model, data, steps, seed=seed))
