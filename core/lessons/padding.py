"""Lesson 2, nn.Sequential and conv padding: the CIFAR-10 quick model (core.models) with the learner's paddings.

The check builds the real model, sets each conv's padding, and runs a 1x3x32x32 tensor through it layer by layer:
what each layer really outputs, next to the formula out = (in + 2p - k) / s + 1 with the numbers filled in. A
padding that shrinks the picture shows where it goes wrong, and, when the sizes no longer fit the first Linear
layer (made for 64 x 4 x 4 inputs), PyTorch's own error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.lessons import Verdict
from core.models.presets import cifar10_quick

INPUT = (1, 3, 32, 32)


def quick_model(paddings: Sequence[int]) -> nn.Sequential:
    """The tutorial's cifar10_quick with these paddings on its three convs, in order."""
    model = cifar10_quick()
    convs = [layer for layer in model if isinstance(layer, nn.Conv2d)]
    if len(paddings) != len(convs):
        raise ValueError(f"{len(convs)} paddings needed, got {len(paddings)}")
    for conv, p in zip(convs, paddings):
        conv.padding = (int(p), int(p))  # what forward() reads: the same as building it with padding=p
    return model


def formula(size: int, kernel: int, stride: int, padding: int) -> tuple[str, int]:
    """'(32 + 2·2 − 5) / 1 + 1 = 32' and its value (PyTorch rounds the division down)."""
    out = (size + 2 * padding - kernel) // stride + 1
    return f"({size} + 2·{padding} − {kernel}) / {stride} + 1 = {out}", out


@dataclass(frozen=True)
class Row:
    index: int  # model[index]
    layer: str  # as PyTorch prints it
    input: tuple[int, ...]
    output: tuple[int, ...] | None  # None: this layer raised
    formula: str = ""  # convs: the size formula with this layer's numbers


@dataclass(frozen=True)
class Trace:
    rows: list[Row]
    error: str = ""  # PyTorch's message, when a layer could not take its input


def trace(paddings: Sequence[int]) -> Trace:
    """Run one 32x32 picture through the quick model with these paddings, layer by layer."""
    model = quick_model(paddings)
    x = torch.zeros(INPUT)
    rows: list[Row] = []
    with torch.no_grad():
        for index, layer in enumerate(model):
            text = ""
            if isinstance(layer, nn.Conv2d):
                text, _ = formula(x.shape[-1], layer.kernel_size[0], layer.stride[0], layer.padding[0])
            try:
                y = layer(x)
            except RuntimeError as exc:
                rows.append(Row(index, repr(layer), tuple(x.shape), None, text))
                return Trace(rows, str(exc).strip())
            rows.append(Row(index, repr(layer), tuple(x.shape), tuple(y.shape), text))
            x = y
    return Trace(rows)


def check_same_size(paddings: Sequence[int]) -> Verdict:
    result = trace(paddings)
    for row in result.rows:
        if "Conv2d" not in row.layer:
            continue
        if row.output is None:
            break
        if row.output[-2:] != row.input[-2:]:
            side_in, side_out = row.input[-1], row.output[-1]
            change = "shrinks" if side_out < side_in else "grows"
            return Verdict(
                False,
                f"model[{row.index}] {change} {side_in}×{side_in} to {side_out}×{side_out}: {row.formula}. A 5×5 kernel "
                "loses k − 1 = 4 pixels across; the padding adds p on each side. Choose p so that 2p makes up for them.",
                result.error,
            )
    if result.error:
        return Verdict(False, "A layer could not take what reached it; see PyTorch's message.", result.error)
    return Verdict(True, "Every conv keeps its size: 32×32, 16×16 and 8×8 in, the same out; only the pools halve it.")
