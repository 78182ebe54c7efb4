"""The pieces a run builds once before its first step, each a small thing with a name, passed to the loop's
functions that need it (as torchvision's classification reference passes its model, optimizer and loaders):

- `Placement`: where the run computes (device, precisions, its place among torchrun's processes, memory format);
- `RunData`: what it trains and tests on (the dataset, its normalization, image sides, batches, the test split);
- `Learner`: what learns (the model, its loss, optimizer, schedule and EMA, and the fast path's parts still on).

The trainer, the lr finder and the augmentation preview build the data, model and optimizer the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core import device as dev
from core.data.batches import BatchLoader, normalize_batch
from core.data.datasets import Dataset, Split, load_dataset
from core.data.spec import DataSpec
from core.errors import PlaygroundError
from core.models.backbones import preset_input_size, pretrained_normalization
from core.models.build import build
from core.training import fallback, losses
from core.training.config import TrainConfig
from core.training.fallback import Fallbacks
from core.training.fastloop import GraphedStep
from core.training.runlog import Dist


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
    return DataSpec.parse(config.data).stored_side(input_size), input_size


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


# --------------------------------------------------------------------------- where the run computes


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype  # autocast precision of the training steps
    eval_dtype: torch.dtype  # the test pass's: as core.insight.predict scores it, one test accuracy on every CPU
    dist: Dist
    channels_last: bool  # the memory format of the model and its inputs


def place(config: TrainConfig, dist: Dist) -> Placement:
    device = dev.resolve_device(config.device, dist.local_rank if dist.enabled else None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: cuDNN times its algorithms once and keeps the fastest
    if dist.enabled and config.batch_size % dist.world_size:
        raise PlaygroundError(f"The batch size {config.batch_size} must divide evenly across {dist.world_size} processes.")
    return Placement(
        device, dev.resolve_precision(config.precision, device), dev.eval_precision(config.precision, device), dist, config.channels_last
    )


# --------------------------------------------------------------------------- what it trains on


@dataclass
class RunData:
    dataset: Dataset
    norm: Normalization  # the checkpoint's when resuming, so a resumed run sees its images as before
    data_size: int  # the side the images are stored at
    input_size: int  # the side the model sees
    train_loader: BatchLoader  # this process's shard of the training batches, augmented on the device
    test_split: Split  # the test images on the training device, moved there once

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def inputs(self, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        """A uint8 batch as the model takes it: resized to its input side, normalized, in its memory format."""
        return normalize_batch(x, self.norm.mean, self.norm.std, self.input_size, channels_last)


def load_run_data(config: TrainConfig, where: Placement, checkpoint: dict[str, Any] | None) -> RunData:
    ds, norm, data_size, input_size = load_data(config, where.device, checkpoint)
    train_loader = BatchLoader(
        ds.train,
        config.batch_size // where.dist.world_size,
        where.device,
        shuffle=True,
        augment=config.augment,
        crop_padding=config.crop_padding,
        seed=config.seed,
        rank=where.dist.rank,
        world_size=where.dist.world_size,
    )
    test_split = Split(ds.test.images.to(where.device), ds.test.labels.to(where.device))
    return RunData(ds, norm, data_size, input_size, train_loader, test_split)


# --------------------------------------------------------------------------- what learns


@dataclass
class Learner:
    """The loop changes only the weights, and the fast path's parts that fail (core/training/fallback.py switches
    `graphed` and the compiled `step_model` off in place)."""

    model: nn.Module  # the bare model: checkpoints, EMA and evaluation use it
    step_model: nn.Module  # what a training step calls: the model, compiled and/or wrapped in DDP
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel | None
    ema_decay: float | None
    fallbacks: Fallbacks = field(default_factory=Fallbacks)  # the fast path's parts this run switched off
    graphed: GraphedStep | None = None  # CUDA: the step's forward+backward replayed as one CUDA graph

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def compiled(self) -> bool:
        return fallback.compiled_module(self.step_model) is not None


def make_learner(
    config: TrainConfig, data: RunData, where: Placement, total_steps: int, fallbacks: Fallbacks, checkpoint: dict[str, Any] | None
) -> Learner:
    """Model, optimizer, schedule and EMA (restored from the checkpoint when resuming), compiled and DDP-wrapped as
    the config and the world ask. The CUDA graph comes later (the loop's step is what it captures)."""
    model = make_model(config, data.dataset, data.norm, data.input_size, where.device, checkpoint)
    fast = where.device.type in fallback.FAST_DEVICES  # fused optimizer steps (and CUDA graphs)
    optimizer = fallbacks.attempt("fused_optimizer", lambda: make_optimizer(model, config, fused=True)) if fast else None
    optimizer = optimizer or make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(config.schedule, s, total_steps, config.warmup, config.warmup_start)
    )
    ema = None
    if config.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    if checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if ema is not None and "ema" in checkpoint:
            ema.load_state_dict(checkpoint["ema"])
    compiled = fallbacks.attempt("compile", lambda: torch.compile(model)) if config.compile else None
    step_model: nn.Module = model if compiled is None else compiled
    if where.dist.enabled:
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[where.dist.local_rank] if where.device.type == "cuda" else None
        )
    loss_fn = losses.make(config.loss, config.label_smoothing)
    return Learner(model, step_model, loss_fn, optimizer, scheduler, ema, config.ema, fallbacks)
