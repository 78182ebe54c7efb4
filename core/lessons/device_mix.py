"""Lesson 5, the device: a model on the GPU fed a batch from the CPU, the error it gives, and the `.to(device)` that
fixes it.

The lesson runs the real thing on a second device. With an NVIDIA GPU that is "cuda" and PyTorch says the
learner's words: "Input type (torch.FloatTensor) and weight type (torch.cuda.FloatTensor) should be the same";
on a Mac it is "mps" and the message's MPS twin. A machine with only a CPU has no second device to mix up, so the
lesson uses "meta", PyTorch's device of shapes without numbers: tensors on it and on the CPU do not mix either,
and PyTorch says so in its own words. The tiny model starts with a Linear layer on purpose: a conv layer on
"meta" quietly accepts a CPU input (a quirk of its CPU kernel), a Linear layer checks.

The task's program is put together from the page's fixed choices (never from typed text) and run as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.device import resolve_device
from core.lessons import Verdict

# What PyTorch prints on an NVIDIA machine (the learner's message); shown as a quote where there is no GPU.
CUDA_MESSAGE = (
    "Input type (torch.FloatTensor) and weight type (torch.cuda.FloatTensor) should be the same or input should be "
    "a MKLDNN tensor and weight is a dense tensor"
)

STATEMENTS = {
    "images = images.to(device)": "moves the pictures",
    "images.to(device)": "moves the pictures?",
    "images, labels = images.to(device), labels.to(device)": "moves the pictures and the labels",
    "labels = labels.to(device)": "moves the labels",
}
SLOTS = {"A": "before outputs = model(images)", "B": "before loss = loss_fn(outputs, labels)"}

PROGRAM = """\
{device_note}device = torch.device({device!r})
model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4))
model.to(device)  # a module moves in place: its weights now live on the device
loss_fn = nn.CrossEntropyLoss()

for images, labels in loader:  # a DataLoader gives CPU tensors
{slot_a}    outputs = model(images)
{slot_b}    loss = loss_fn(outputs, labels)
    loss.backward()
"""


def lesson_device() -> torch.device:
    """The second device: the GPU when there is one, else meta (see the module's docstring)."""
    device = resolve_device("auto")
    return torch.device(device.type) if device.type != "cpu" else torch.device("meta")


def program(statement: str | None = None, slot: str | None = None, device: torch.device | None = None, marks: bool = False) -> str:
    """The loop with `statement` put in `slot` (neither: the loop as the learner wrote it, which fails); `marks`
    shows where the slots are, as comments."""
    device = device or lesson_device()
    if statement is not None and statement not in STATEMENTS:
        raise ValueError(statement)
    note = "# no GPU here: meta (PyTorch's device of shapes without numbers) stands in for cuda\n" if device.type == "meta" else ""
    lines = {name: f"    {statement}\n" if statement and slot == name else f"    # ({name})\n" if marks else "" for name in SLOTS}
    return PROGRAM.format(device=device.type, device_note=note, slot_a=lines["A"], slot_b=lines["B"])


@dataclass(frozen=True)
class Outcome:
    error: str  # PyTorch's message ("" when the loop ran)
    loss_device: str  # where the last loss was computed ("" when it failed)


def run(code: str) -> Outcome:
    """Run the loop over two small CPU batches."""
    gen = torch.Generator().manual_seed(0)
    loader = [(torch.rand(4, 3, 8, 8, generator=gen), torch.randint(0, 4, (4,), generator=gen)) for _ in range(2)]
    scope = {"torch": torch, "nn": nn, "loader": loader}
    try:
        exec(compile(code, "<lesson 5>", "exec"), scope)  # noqa: S102 - the code is the page's own template and options
    except RuntimeError as exc:
        return Outcome(str(exc).strip().splitlines()[0], "")
    return Outcome("", scope["loss"].device.type)


def conv_message(device: torch.device) -> str | None:
    """The learner's error itself, from a conv layer on the GPU fed a CPU picture; None where there is no GPU."""
    if device.type not in ("cuda", "mps"):
        return None
    try:
        nn.Conv2d(3, 8, 3).to(device)(torch.zeros(1, 3, 8, 8))
    except RuntimeError as exc:
        return str(exc).strip()
    return None


def check_to_device(statement: str | None, slot: str | None) -> Verdict:
    device = lesson_device()
    if statement not in STATEMENTS or slot not in SLOTS:
        return Verdict(False, "Choose a line and where it goes.")
    outcome = run(program(statement, slot, device))
    if not outcome.error:
        return Verdict(True, f"It runs: the pictures and the labels meet the model on {outcome.loss_device}.")
    if statement == "images.to(device)":
        hint = "tensor.to(device) returns a moved copy and leaves the tensor where it was (a module's .to moves the module itself). Keep the copy: x = x.to(device)."
    elif slot == "B":
        hint = "Too late: model(images) already ran with the pictures on the CPU. Move them before the forward pass."
    elif statement == "images = images.to(device)":
        hint = "The forward pass works now. Read the message: the loss compares outputs on the device with labels still on the CPU."
    elif statement == "labels = labels.to(device)":
        hint = "The labels are ready for the loss, but the model still gets the pictures from the CPU."
    else:
        hint = "Read PyTorch's message: which tensor is on which device?"
    return Verdict(False, hint, outcome.error)
