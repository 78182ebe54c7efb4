"""The small network and data that lessons 3, 6, 7 and 8 train, in seconds on a laptop CPU.

A few classes of the studio's generated shapes (core.data: offline, no download) and a three-block CNN with
BatchNorm and Dropout, so that `model.eval()` matters (lesson 6) and the network learns something in a hundred
steps (lesson 7). The loop is the tutorial's plain one; every seed is fixed, so a lesson shows the same numbers
each time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from core.data.batches import normalize_batch
from core.data.datasets import SHAPES_CLASSES, Dataset, Split, shapes_dataset

CLASSES = ("circle", "cross", "stripes")  # three shapes a tiny net tells apart after a hundred steps
SIDE = 32


def tiny_net(num_classes: int = len(CLASSES)) -> nn.Sequential:
    """Three conv blocks (32 -> 16 -> 8 -> 4 pixels), then Dropout and one Linear: 15 K parameters."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 32), nn.Flatten(), nn.Dropout(0.3), nn.Linear(32 * 4 * 4, num_classes))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global random numbers seeded inside, and put back after: the same weights every time, and the
    studio's other users of the generator (a page in another tab) are not disturbed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_net(num_classes: int = len(CLASSES), seed: int = 0) -> nn.Sequential:
    with seeded(seed):
        return tiny_net(num_classes)


@lru_cache(maxsize=4)
def shapes_subset(classes: Sequence[str] = CLASSES, per_class: int = 150, seed: int = 0) -> Dataset:
    """`per_class` training and a third as many test images of each of `classes`, as a Dataset of their own.
    Kept for the next lesson that asks (drawing them takes a second or two): read it, never change it."""
    n = len(SHAPES_CLASSES)
    full = shapes_dataset(n_train=per_class * n, n_test=max(per_class // 3, 1) * n, seed=seed)
    index = torch.tensor([SHAPES_CLASSES.index(c) for c in classes])
    remap = torch.full((n,), -1, dtype=torch.long)
    remap[index] = torch.arange(len(classes))

    def keep(split: Split) -> Split:
        chosen = torch.isin(split.labels, index)
        return Split(split.images[chosen], remap[split.labels[chosen]])

    return Dataset("shapes", list(classes), keep(full.train), keep(full.test))


def as_input(images: torch.Tensor, data: Dataset) -> torch.Tensor:
    """uint8 pictures -> what the network takes: floats normalized with the training images' mean and std."""
    mean, std = (torch.tensor(v) for v in data.channel_stats())
    return normalize_batch(images, mean, std, SIDE, channels_last=False)


def train_steps(model: nn.Module, data: Dataset, steps: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """The tutorial's loop for `steps` batches drawn at random (seeded); returns each step's loss."""
    gen = torch.Generator().manual_seed(seed)
    inputs, labels = as_input(data.train.images, data), data.train.labels
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    model.train()
    with seeded(seed):  # Dropout's dice
        for _ in range(steps):
            pick = torch.randint(0, len(labels), (batch_size,), generator=gen)
            loss = loss_fn(model(inputs[pick]), labels[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    return losses


@dataclass
class TinyRun:
    model: nn.Sequential
    data: Dataset
    losses: list[float]

    def accuracy(self) -> float:
        with torch.no_grad():
            guesses = self.model.eval()(as_input(self.data.test.images, self.data)).argmax(1)
        return (guesses == self.data.test.labels).float().mean().item()


def trained(steps: int = 120, seed: int = 0) -> TinyRun:
    """The tiny net after `steps` steps on CLASSES (about 80% right on their test images)."""
    data = shapes_subset(seed=seed)
    model = make_net(len(data.classes), seed)
    return TinyRun(model, data, train_steps(model, data, steps, seed=seed))
