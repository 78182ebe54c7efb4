"""Batches made on the training device: a seeded permutation, a gather, a random crop and flip on the whole
batch, and normalization (resize to the model's input, scale, mean/std).

Training, evaluation and prediction all normalize through `normalize_batch`, so what the model sees at inference
is exactly what it saw in training (minus the random crop and flip).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from core.data.datasets import Split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_batch(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, input_size: int | None = None, channels_last: bool = True
) -> torch.Tensor:
    """uint8 (N, C, H, W) -> normalized float, resized to the model's input size.

    Training batches and prediction inputs both go through this function, so
    what the model sees at inference is exactly what it saw in training
    (minus the random crop and flip).
    """
    x = x.float().div_(255)
    if input_size is not None and x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """RandomCrop(size, padding) for a whole batch: each image shifted by up to `padding` pixels, zero-filled."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    shift = torch.randint(0, 2 * padding + 1, (2, n, 1, 1), generator=gen, device=x.device)
    # One flat gather over the padded pixels is far cheaper than 4-D advanced indexing.
    rows = shift[0] + torch.arange(h, device=x.device)[None, :, None]
    cols = shift[1] + torch.arange(w, device=x.device)[None, None, :]
    index = (rows * (w + 2 * padding) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class BatchLoader:
    """Yields (uint8 images, labels) batches from tensors on the training device.

    The epoch's permutation depends only on (seed, epoch), so a resumed run
    replays the same batches, and each torchrun rank takes its own shard of it.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        device: torch.device,
        *,
        shuffle: bool = True,
        augment: bool = False,
        crop_padding: int = 4,
        flip: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle, self.augment, self.crop_padding, self.flip = shuffle, augment, crop_padding, flip
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # Training shards must be equal (DDP syncs every step, a short rank would hang the others);
        # evaluation syncs only once at the end, so its shards cover every image.
        self.equal_shards = drop_last
        n = len(self.labels)
        self.per_rank = n // world_size if drop_last else len(range(rank, n, world_size))
        self.drop_last = drop_last and self.per_rank >= batch_size

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=gen, device=self.device) if self.shuffle else torch.arange(n, device=self.device)
        # Every rank shares the permutation but draws its own crops and flips.
        gen.manual_seed((self.seed * 100_003 + epoch) * 1_009 + self.rank + 1)
        if self.world_size > 1:
            order = order[self.rank :: self.world_size][: self.per_rank]
        for step in range(start_step, len(self)):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment:
                if self.crop_padding:
                    x = random_crop(x, self.crop_padding, gen)
                if self.flip:
                    x = random_flip(x, gen)
            yield x, self.labels[idx]
