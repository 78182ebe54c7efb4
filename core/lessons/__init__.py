"""Lessons: the tutorial's chapters as short exercises on real PyTorch objects, each with a task the studio checks.

One small module per lesson holds its computations and its checks (no Streamlit): a check builds or runs the
real thing (the learner's Sequential with their paddings, a DataLoader of their size, a state_dict loaded into a
fresh model) and answers with a `Verdict`: passed, or a hint for the next try. `progress` remembers which tasks a
browser (a workspace, in shared mode) has passed. The catalogue below is the one list of lessons and their tasks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """A task's answer to one try: `ok`, and what to tell the learner (the hint after a wrong try)."""

    ok: bool
    message: str
    detail: str = ""  # PyTorch's own words where they help (an error message, a warning), shown as code


@dataclass(frozen=True)
class Task:
    key: str  # "<lesson slug>.<task>", the progress store's key
    title: str


@dataclass(frozen=True)
class Lesson:
    number: int
    slug: str
    title: str
    summary: str
    tasks: tuple[Task, ...]


def _lesson(number: int, slug: str, title: str, summary: str, *tasks: tuple[str, str]) -> Lesson:
    return Lesson(number, slug, title, summary, tuple(Task(f"{slug}.{key}", text) for key, text in tasks))


LESSONS: tuple[Lesson, ...] = (
    _lesson(
        1,
        "regression",
        "First steps: linear regression from scratch",
        "Two parameters, MSE and SGD: the whole training loop, and the broadcasting trap.",
        ("converge", "Find a learning rate that converges in under 50 steps"),
        ("diverge", "Make it diverge"),
    ),
    _lesson(
        2,
        "padding",
        "nn.Sequential and conv padding",
        "Build the CIFAR-10 quick model and keep 32x32 through every conv.",
        ("same_size", "Choose each conv's padding so its output is as big as its input"),
    ),
    _lesson(
        3,
        "loss",
        "Loss functions",
        "Cross-entropy by hand and by nn.CrossEntropyLoss; why no Softmax goes before it.",
        ("uniform", "Predict the loss of a uniform guess"),
    ),
    _lesson(
        4,
        "loop",
        "The training loop",
        "forward, loss, zero_grad, backward, step, with the gradients shown; steps per epoch.",
        ("accumulate", "Remove zero_grad and say what the gradient holds"),
        ("steps", "Predict the number of steps in an epoch"),
    ),
    _lesson(
        5,
        "device",
        "The device",
        "'Input type and weight type should be the same': reproduce it, then fix it with .to(device).",
        ("to_device", "Put the right .to in the right line"),
    ),
    _lesson(
        6,
        "saving",
        "Saving and loading",
        "The state_dict and the whole pickled model; why one is safe to load and the other is not.",
        ("reload", "Load a state_dict into a fresh model and get the same prediction"),
    ),
    _lesson(
        7,
        "new_image",
        "Validating on a new image",
        "Why RandomResizedCrop at inference gives a different answer each time; where Normalize's numbers come from.",
        ("eval_transform", "Choose the transform for inference"),
    ),
    _lesson(
        8,
        "fine_tuning",
        "Fine-tuning",
        "Freeze the backbone, replace the head, and train exactly the head.",
        ("head_only", "Make exactly the head trainable"),
    ),
)


def lesson(slug: str) -> Lesson:
    for item in LESSONS:
        if item.slug == slug:
            return item
    raise KeyError(slug)


def task_keys() -> set[str]:
    return {task.key for item in LESSONS for task in item.tasks}
