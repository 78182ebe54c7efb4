"""Lesson 7, validating on a new image: why a photo got a different answer on every try (RandomResizedCrop at
inference), the deterministic transform that fixes it, and where Normalize's mean and std come from.

The model is the tiny net trained on three shapes classes (a few seconds); the photo is the learner's upload (or
a shapes picture drawn larger). The transforms are torchvision's own, applied to the real picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from core.data.batches import IMAGENET_MEAN, IMAGENET_STD
from core.lessons import Verdict, tiny

TRIES = 5


@lru_cache(maxsize=1)
def model_run() -> tiny.TinyRun:
    """The tiny net after 200 steps on circle, cross and stripes (the same every time; read it, never train it)."""
    return tiny.trained(steps=200)


def training_stats(run: tiny.TinyRun) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Each colour channel's mean and standard deviation over the training pictures, in [0, 1]."""
    return run.data.channel_stats()


def sample_picture(label: str = "cross", side: int = 160) -> Image.Image:
    """One of the net's test pictures of `label`, drawn larger, for a learner without a photo at hand: the first
    that the network, seeing it through the eval transform, calls `label` (so the lesson starts from a right answer)."""
    run = model_run()
    pictures = [
        Image.fromarray(run.data.test.images[i].permute(1, 2, 0).numpy()).resize((side, side), Image.Resampling.BICUBIC)
        for i in (run.data.test.labels == run.data.classes.index(label)).nonzero().flatten().tolist()[:20]
    ]
    return next((p for p in pictures if guesses(p, "eval", tries=1)[0].label == label), pictures[0])


TRANSFORM_CODE = {
    "training": "T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])",
    "eval": "T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor(), T.Normalize(mean, std)])",
    "no_normalize": "T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])",
    "imagenet": "T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])",
}


def transform(name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> T.Compose:
    """The real torchvision transform written in TRANSFORM_CODE[name]."""
    if name == "training":
        return T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    resize = [T.Resize(32), T.CenterCrop(32), T.ToTensor()]
    if name == "eval":
        return T.Compose([*resize, T.Normalize(mean, std)])
    if name == "no_normalize":
        return T.Compose(resize)
    if name == "imagenet":
        return T.Compose([*resize, T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    raise KeyError(name)


@dataclass(frozen=True)
class Guess:
    seen: np.ndarray  # what the model got, as a picture (uint8, H x W x 3): the transform undone for display
    index: int
    label: str
    prob: float


def guesses(picture: Image.Image, name: str, tries: int = TRIES, seed: int = 0) -> list[Guess]:
    """Transform the picture `tries` times (the random ones draw anew each time) and ask the model each time."""
    run = model_run()
    mean, std = training_stats(run)
    chosen = transform(name, mean, std)
    out = []
    with tiny.seeded(seed), torch.no_grad():
        for _ in range(tries):
            x = chosen(picture)
            probs = run.model.eval()(x.unsqueeze(0)).softmax(dim=1)[0]
            index = int(probs.argmax())
            out.append(Guess(_as_picture(x, chosen), index, run.data.classes[index], float(probs[index])))
    return out


def _as_picture(x: torch.Tensor, chosen: T.Compose) -> np.ndarray:
    for step in chosen.transforms:
        if isinstance(step, T.Normalize):
            x = x * torch.tensor(step.std).view(-1, 1, 1) + torch.tensor(step.mean).view(-1, 1, 1)
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def check_eval_transform(name: str | None, picture: Image.Image) -> Verdict:
    """The chosen transform, run on the picture several times and read: the same tensor each time, and the
    Normalize the network was trained with."""
    if name not in TRANSFORM_CODE:
        return Verdict(False, "Choose a transform.")
    run = model_run()
    mean, std = training_stats(run)
    chosen = transform(name, mean, std)
    with tiny.seeded(0):
        tensors = [chosen(picture) for _ in range(TRIES)]
    if any(not torch.equal(tensors[0], t) for t in tensors[1:]):
        return Verdict(
            False,
            f"Run {TRIES} times on your picture, it gave {len({t.numpy().tobytes() for t in tensors})} different tensors: "
            "random crops and flips are for training (new views of the same picture); a prediction must see the "
            "picture one way, every time.",
        )
    normalize = next((step for step in chosen.transforms if isinstance(step, T.Normalize)), None)
    if normalize is None:
        return Verdict(
            False,
            f"The same tensor every time, but in [0, 1]: the network learned from pictures normalized with mean "
            f"{_fmt(mean)} and std {_fmt(std)}, so every input it meets must be normalized the same way.",
        )
    if not np.allclose(normalize.mean, mean, atol=1e-3) or not np.allclose(normalize.std, std, atol=1e-3):
        return Verdict(
            False,
            f"ImageNet's numbers {_fmt(IMAGENET_MEAN)} belong to networks trained on ImageNet (pretrained weights). "
            f"This one learned from the shapes, whose pictures have mean {_fmt(mean)} and std {_fmt(std)}.",
        )
    return Verdict(True, "Deterministic, the network's own input size, and normalized with its training pictures' statistics.")


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
