"""Lesson 8, fine-tuning: freeze the backbone, replace the head, train exactly the head.

The freezing is shown on the tiny net, trained for real for a few steps (what changed is read off the tensors).
The task runs on torchvision's AlexNet built on the "meta" device: its real modules and parameter names, its real
forward pass (shapes only), and no 61 million numbers to allocate or download.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from core.lessons import Verdict, tiny

CLASSES = 5  # the learner's own five classes
HEAD = "classifier.6"

# The 2012 paper's network against torchvision's, which follows Krizhevsky's 2014 "One weird trick for
# parallelizing convolutional neural networks" (hence its weights file, alexnet-owt-7be5be79.pth: "owt").
PAPER_VS_TORCHVISION = (
    ("conv filters", "96, 256, 384, 384, 256", "64, 192, 384, 256, 256"),
    ("two GPUs", "each layer split in two halves; conv2, 4, 5 see only their own GPU's half", "one tower"),
    ("local response normalization", "after conv1 and conv2", "none"),
    ("before the classifier", "fixed 6×6 maps from a 224 (227) pixel input", "AdaptiveAvgPool2d((6, 6)): any input size"),
    ("classifier", "4096, 4096, 1000, with dropout", "the same"),
)


def alexnet() -> nn.Module:
    """torchvision's AlexNet on the meta device: real modules and shapes, no weights allocated (weights=None)."""
    with torch.device("meta"):
        return torchvision.models.alexnet(weights=None)


# ----------------------------------------------------------------- freezing, on a net that really trains


@dataclass(frozen=True)
class FreezeDemo:
    all_frozen_error: str  # loss.backward() with every parameter frozen
    changed: dict[str, bool]  # after training the replaced head: which tensors (parameters and buffers) changed


def freeze_demo(steps: int = 10) -> FreezeDemo:
    data = tiny.shapes_subset(per_class=32)
    model = tiny.make_net(len(data.classes))
    for p in model.parameters():
        p.requires_grad = False
    x = tiny.as_input(data.train.images[:8], data)
    try:
        nn.CrossEntropyLoss()(model(x), data.train.labels[:8]).backward()
        error = ""
    except RuntimeError as exc:
        error = str(exc).strip()
    with tiny.seeded(1):
        model[-1] = nn.Linear(model[-1].in_features, len(data.classes))  # a new head: trainable, as new modules are
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tiny.train_steps(model, data, steps)
    after = model.state_dict()
    return FreezeDemo(error, {k: not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point()})


# ----------------------------------------------------------------- the task

FREEZE = {
    "nothing": "",
    "every parameter": "for p in model.parameters():\n    p.requires_grad = False",
    "model.features only": "for p in model.features.parameters():\n    p.requires_grad = False",
}
REPLACE = {
    "keep the head": "",
    "model.classifier[6]": f"model.classifier[6] = nn.Linear(4096, {CLASSES})",
    "model.classifier[4]": f"model.classifier[4] = nn.Linear(4096, {CLASSES})",
}
ORDER = ("freeze, then replace", "replace, then freeze")


def task_code(freeze: str, replace: str, order: str) -> str:
    parts = [FREEZE[freeze], REPLACE[replace]]
    if order == ORDER[1]:
        parts.reverse()
    return "\n".join(["model = torchvision.models.alexnet(weights=None)", *(p for p in parts if p)])


@dataclass(frozen=True)
class Setup:
    model: nn.Module
    trainable: list[str]
    output: tuple[int, ...] | None  # the forward pass's output shape; None when it failed
    error: str


def apply(freeze: str, replace: str, order: str) -> Setup:
    """The learner's lines run on a real (meta) AlexNet, then one 224x224 picture through it."""
    model = alexnet()
    steps = [lambda: _freeze(model, freeze), lambda: _replace(model, replace)]
    if order == ORDER[1]:
        steps.reverse()
    for step in steps:
        step()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    try:
        with torch.no_grad():
            out: tuple[int, ...] | None = tuple(model(torch.zeros(1, 3, 224, 224, device="meta")).shape)
        error = ""
    except RuntimeError as exc:
        out, error = None, str(exc).strip()
    return Setup(model, trainable, out, error)


def _freeze(model: nn.Module, freeze: str) -> None:
    part = {"every parameter": model, "model.features only": model.features}.get(freeze)
    if part is not None:
        for p in part.parameters():
            p.requires_grad = False


def _replace(model: nn.Module, replace: str) -> None:
    if replace != "keep the head":
        index = int(replace[-2])
        with torch.device("meta"):
            model.classifier[index] = nn.Linear(4096, CLASSES)


def check_head_only(freeze: str, replace: str, order: str) -> Verdict:
    if freeze not in FREEZE or replace not in REPLACE or order not in ORDER:
        return Verdict(False, "Choose one option of each.")
    setup = apply(freeze, replace, order)
    if setup.error:
        return Verdict(
            False,
            "The forward pass breaks: classifier[4] now gives 5 numbers, and classifier[6] still expects 4096. "
            "The head is the last layer, the one that gives the class scores.",
            setup.error,
        )
    if setup.output != (1, CLASSES):
        return Verdict(
            False,
            f"The model still answers {setup.output[-1] if setup.output else '?'} ImageNet classes; yours are {CLASSES}. Replace the head.",
        )
    head = {f"{HEAD}.weight", f"{HEAD}.bias"}
    if not setup.trainable:
        return Verdict(
            False,
            "Nothing trains: the new head was frozen with the rest (a new layer is trainable when it is made, and "
            "the freezing loop then switched it off). Freeze first, then replace the head.",
        )
    extra = [name for name in setup.trainable if name not in head]
    if extra:
        return Verdict(
            False,
            f"{len(extra)} other tensors still train ({', '.join(extra[:4])}{', ...' if len(extra) > 4 else ''}). "
            "The classifier's hidden Linear layers belong to the backbone too: freeze every parameter.",
        )
    trains = sum(p.numel() for p in setup.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in setup.model.parameters())
    return Verdict(True, f"Only {HEAD}.weight and {HEAD}.bias train: {trains:,} of the model's {total:,} parameters.")
