"""The pieces a run builds once before its first step: the data and its normalization, the model, the optimizer
and the learning-rate schedule. The trainer, the lr finder and the augmentation preview build them the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.data.batches import normalize_batch
from core.data.datasets import Dataset, load_dataset
from core.errors import PlaygroundError
from core.models.backbones import preset_input_size, pretrained_normalization
from core.models.build import build
from core.training.config import TrainConfig


def lr_factor(schedule: str, step: int, total: int, warmup: float, warmup_start: float = 0.1) -> float:
    """Multiplier of the base learning rate at `step` of `total`."""
    warm = int(warmup * total)
    if step < warm:
        return warmup_start + (1 - warmup_start) * step / warm
    progress = (step - warm) / max(1, total - warm)
    if schedule == "onecycle":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.1 ** (int(progress >= 0.5) + int(progress >= 0.75))
    return 1.0


def make_optimizer(model: nn.Module, config: TrainConfig, *, fused: bool = False) -> torch.optim.Optimizer:
    """fused: one kernel per parameter group (CUDA) instead of a few per tensor."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise PlaygroundError("Every parameter is frozen, so nothing would train; unfreeze the head (or the backbone).")
    if hasattr(model, "param_groups"):
        groups = model.param_groups(config.lr, config.weight_decay)
    else:
        # Weight decay on biases and norm scales only hurts small models.
        decay = [p for p in trainable if p.ndim > 1]
        no_decay = [p for p in trainable if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            **({"fused": True} if fused else {}),
        )
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr, **({"fused": True} if fused else {}))


@dataclass
class Normalization:
    mean: torch.Tensor
    std: torch.Tensor

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def image_sides(config: TrainConfig) -> tuple[int, int]:
    """(the side images are stored at, the side the model sees): folders are loaded at the model's size."""
    input_size = config.image_size or preset_input_size(config.model)
    return (input_size if config.data.startswith("imagefolder:") else 32), input_size


def load_data(config: TrainConfig, device: torch.device, checkpoint: dict[str, Any] | None) -> tuple[Dataset, Normalization, int, int]:
    """The dataset, its normalization (the checkpoint's when resuming), the stored and the model's image sides."""
    data_size, input_size = image_sides(config)
    ds = load_dataset(config.data, image_size=data_size, seed=config.seed, data_dir=config.data_dir)
    pretrained = pretrained_normalization(config.model, config.weights)
    if checkpoint:
        mean, std = checkpoint["normalization"]["mean"], checkpoint["normalization"]["std"]
    elif pretrained:
        mean, std = pretrained  # pretrained features expect their weights' own statistics (ImageNet's)
    else:
        mean, std = ds.channel_stats()
    norm = Normalization(torch.tensor(mean, device=device), torch.tensor(std, device=device))
    return ds, norm, data_size, input_size


def make_model(
    config: TrainConfig, ds: Dataset, norm: Normalization, input_size: int, device: torch.device, checkpoint: dict[str, Any] | None
) -> nn.Module:
    """Built on the CPU, then moved once (the only .to(device) in the loop's life); the checkpoint's weights when resuming."""
    spec_or_name = config.layers if config.model == "custom" else config.model
    model = build(
        spec_or_name,
        num_classes=len(ds.classes),
        in_channels=3,
        freeze=config.freeze_backbone,
        input_size=input_size,
        weights=checkpoint.get("train_model", checkpoint["model"]) if checkpoint else config.weights,
        widths=config.widths,
    )
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    if checkpoint:
        model.load_state_dict(checkpoint.get("train_model", checkpoint["model"]))
    elif hasattr(model, "init_from_data"):
        sample = ds.train.images[:5000].to(device)
        model.init_from_data(normalize_batch(sample, norm.mean, norm.std, input_size, config.channels_last))
    return model
