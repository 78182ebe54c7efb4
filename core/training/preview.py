"""A few training images as the model will see them: the run's own data loading and augmentation, undone for display.

Nothing here re-implements the augmentation: the images come from `core.data.batches.BatchLoader` (random crop with
padding, flip) and `normalize_batch` (resize to the model's input, normalization) with the run's config, as in
`core.training.loop.train_step`; only the normalization is undone so they can be shown.
"""

from __future__ import annotations

from typing import Any

import torch

from core.data.batches import BatchLoader, normalize_batch
from core.training.config import TrainConfig
from core.training.parts import load_data


def augmented_samples(config: TrainConfig, n: int = 8, epoch: int = 0) -> dict[str, Any]:
    """The first `n` training images of `epoch` as stored and as the model sees them (uint8 HWC numpy arrays), with
    their class names and the sizes involved."""
    cpu = torch.device("cpu")
    ds, norm, data_size, input_size = load_data(config, cpu, None)
    n = max(1, min(n, len(ds.train)))
    # Same seed and epoch: both loaders draw the same permutation, so `plain` holds the originals of `seen`.
    loaders = [
        BatchLoader(ds.train, n, cpu, shuffle=True, augment=augment, crop_padding=config.crop_padding, seed=config.seed)
        for augment in (False, bool(config.augment))
    ]
    (plain, labels), (seen, _) = (next(loader.epoch(epoch)) for loader in loaders)
    x = normalize_batch(seen, norm.mean, norm.std, input_size, channels_last=False)
    shown = (x * norm.std.view(1, -1, 1, 1) + norm.mean.view(1, -1, 1, 1)).clamp(0, 1).mul(255).round().to(torch.uint8)

    def as_hwc(t: torch.Tensor) -> list:
        return [img.permute(1, 2, 0).numpy() for img in t]

    return {
        "stored": as_hwc(plain),
        "seen": as_hwc(shown),
        "labels": [ds.classes[i] for i in labels.tolist()],
        "data_size": data_size,
        "input_size": input_size,
        "augment": bool(config.augment),
        "crop_padding": config.crop_padding,
        "mean": norm.mean.tolist(),
        "std": norm.std.tolist(),
    }
