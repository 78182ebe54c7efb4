"""The loss functions a run can train with: the tutorial's loss lesson as a choice on the Train page.

Each entry is the module the training loop calls on (logits, labels) and the line of code that builds
it, so the Train page's code panel and the trainer cannot disagree. The test loss stays cross-entropy
whatever the run trains with, so runs with different losses compare on one scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import PlaygroundError


class NLLOnLogSoftmax(nn.Module):
    """nn.CrossEntropyLoss in its two textbook steps: log-probabilities, then the negative log-likelihood."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(logits, dim=1), labels)


class MSEOnSoftmax(nn.Module):
    """Squared distance between the softmax probabilities and the one-hot label (why classifiers avoid it:
    a confidently wrong answer gets a tiny gradient)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return F.mse_loss(F.softmax(logits, dim=1), target)


@dataclass(frozen=True)
class Loss:
    title: str
    help: str
    code: str  # builds it; {label_smoothing} filled in


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss(
        "Cross-entropy",
        "nn.CrossEntropyLoss: softmax and negative log-likelihood in one, the standard "
        "for classification. Label smoothing > 0 trains towards 0.9 instead of 1: less overconfident.",
        "nn.CrossEntropyLoss(label_smoothing={label_smoothing})",
    ),
    "nll": Loss(
        "NLL on log_softmax",
        "F.log_softmax, then nn.NLLLoss: the same maths as cross-entropy written in two steps "
        "(a model ending in LogSoftmax trains with NLLLoss).",
        "lambda logits, labels: F.nll_loss(F.log_softmax(logits, dim=1), labels)",
    ),
    "mse": Loss(
        "MSE on softmax",
        "Mean squared error between the probabilities and the one-hot label: it trains, slowly. "
        "Compare its curve with cross-entropy's to see why classifiers use cross-entropy.",
        "lambda logits, labels: F.mse_loss(F.softmax(logits, dim=1), F.one_hot(labels, logits.shape[1]).float())",
    ),
}


def check(name: str, label_smoothing: float = 0.0) -> None:
    if name not in LOSSES:
        raise PlaygroundError(f"Unknown loss {name!r}; choose one of {', '.join(LOSSES)}.")
    if label_smoothing and name != "cross_entropy":
        raise PlaygroundError(f"Label smoothing works with the cross_entropy loss only; set it to 0 for {name}.")


def make(name: str, label_smoothing: float = 0.0) -> nn.Module:
    """The module a training step calls as loss_fn(logits, labels)."""
    check(name, label_smoothing)
    if name == "nll":
        return NLLOnLogSoftmax()
    if name == "mse":
        return MSEOnSoftmax()
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def code(name: str, label_smoothing: float = 0.0) -> str:
    """The Python expression that builds it (needs `torch.nn as nn` and `torch.nn.functional as F`)."""
    check(name, label_smoothing)
    return LOSSES[name].code.format(label_smoothing=f"{label_smoothing:g}")
