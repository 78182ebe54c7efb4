"""The training loop and `python -m core.train`.

Read it top to bottom: TrainConfig; the pieces (schedule, optimizer,
`evaluate()`); `setup()`, which returns a `Setup` (data, loader, model,
optimizer, schedule, EMA, normalization, the run folder's log);
`train_one_epoch()` with its per-batch `train_step()` and per-interval
`log_interval()`; `outcome()`, which maps how the loop ended to a status and
message; and `train()`, which is those in order. The same code runs in the
studio (a child process), on the command line and under torchrun
(DistributedDataParallel).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core import device as dev
from core import fallback, losses, runs
from core.classes import test_split_warning
from core.data import BatchLoader, Dataset, Split, load_dataset, normalize_batch
from core.errors import PlaygroundError
from core.fallback import EndsTheRun, Fallbacks, is_oom
from core.fastloop import CheckpointWriter, GraphedStep, IntervalReads
from core.health import Probe, Watcher
from core.models import PRESETS, build, count_parameters, is_torchvision, preset_input_size, pretrained_normalization, recipe_for
from core.predict import eval_batch_size, tta_logits

OPTIMIZERS = ("sgd", "adam", "adamw")
HEALTH_RECORDS_PER_EPOCH = 10  # at most about this many health records an epoch (each costs a few ms; see Setup)
SCHEDULES = ("onecycle", "cosine", "step", "constant")
DIST_TIMEOUT_S = int(os.environ.get("PLAYGROUND_DIST_TIMEOUT", 180))


@dataclass
class TrainConfig:
    """Everything that defines a run; round-trips through config.json."""

    model: str = "cifar10_quick"  # a preset name, "custom" with `layers`, or a torchvision model name ("efficientnet_b0")
    layers: list[dict[str, Any]] | None = None
    weights: str | None = None  # torchvision weights name ("DEFAULT") or a .pth/.safetensors path
    freeze_backbone: bool = False
    data: str = "shapes"
    epochs: int = 10
    batch_size: int = 128  # the global batch: split across torchrun processes
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    loss: str = "cross_entropy"  # a key of core.losses.LOSSES
    schedule: str = "onecycle"
    warmup: float = 0.15  # fraction of all steps spent ramping the learning rate up
    warmup_start: float = 0.1  # the ramp starts at this fraction of lr, so the first steps are not wasted
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    time_limit: float | None = None  # seconds of training before stopping with a checkpoint
    image_size: int | None = None  # model input side; None: the preset's own
    augment: bool = True  # random crop (with padding) and horizontal flip, per batch on the device
    crop_padding: int = 4
    ema: float | None = None  # per-step EMA decay of the weights used for evaluation
    tta: int = 0  # test-time augmentation of the final evaluation: 0 none, 1 (or true) + mirror, 2 + 1-pixel shifts
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = True  # on CUDA, replay each step's forward+backward as one CUDA graph (core/fastloop.py)
    widths: list[int] | None = None  # speedrun: channels of its three conv groups; None: its CPU widths (32/128/128)
    data_dir: str | None = None
    log_every: int = 0  # steps between step records; 0: about 25 per epoch
    health: bool = True  # per-layer gradient/weight/update norms and dead ReLUs at log intervals, ~10 an epoch (core.health)
    sweep: dict[str, Any] | None = None  # a sweep's run: {"id", "settings"} (core.sweep); None for a run of its own

    @classmethod
    def for_model(cls, model: str, **overrides: Any) -> TrainConfig:
        """The recipe a preset trains best with (`Preset.recipe`) on the device the run will use, then the caller's overrides."""
        recipe = recipe_for(model, overrides.get("device") or "auto")
        return cls(**{"model": model, **recipe, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.model not in PRESETS and self.model != "custom" and not is_torchvision(self.model):
            raise PlaygroundError(
                f"Unknown model {self.model!r}; choose one of {', '.join(PRESETS)}, 'custom' with layers, "
                "or any torchvision classification model (e.g. efficientnet_b0)."
            )
        if self.model == "custom" and not self.layers:
            raise PlaygroundError("A custom model needs a layer spec (`layers`).")
        if self.optimizer not in OPTIMIZERS:
            raise PlaygroundError(f"Unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise PlaygroundError(f"Unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.lr > 0 and math.isfinite(self.lr), "the learning rate must be a positive number"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (0 <= self.warmup < 1, "warmup must be a fraction in [0, 1)"),
            (0 <= self.warmup_start <= 1, "warmup_start must be a fraction in [0, 1]"),
            (self.ema is None or 0 < self.ema < 1, "ema must be a decay in (0, 1)"),
            (self.tta in (0, 1, 2), "tta must be 0 (none), 1 (mirror) or 2 (mirror and shifts)"),
            (
                self.widths is None
                or (self.model == "speedrun" and len(self.widths) == 3 and all(isinstance(w, int) and w > 0 for w in self.widths)),
                "widths must be three positive channel counts, and only the speedrun preset has them",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise PlaygroundError(message[0].upper() + message[1:] + ".")
        losses.check(self.loss, self.label_smoothing)


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}

# --------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        """torchrun sets these; a plain `python -m core.train` is a world of one."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()


# --------------------------------------------------------------------------- pieces of the loop


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


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    norm: Normalization,
    input_size: int,
    device: torch.device,
    dtype: torch.dtype,
    *,
    tta: int = 0,
    num_classes: int,
    dist: Dist | None = None,
    batch_size: int = 500,
    channels_last: bool = True,
) -> dict[str, Any]:
    """Test loss, accuracy, per-class accuracy and the confusion matrix (counts), with `tta` (see `tta_logits`).

    Sums stay on the device until the one read at the end (no wait per batch).
    """
    dist = dist or Dist()
    loader = BatchLoader(split, batch_size, device, shuffle=False, rank=dist.rank, world_size=dist.world_size, drop_last=False)
    # [loss sum, then the confusion counts]: one tensor, so distributed runs reduce it in one call
    sums = torch.zeros(1 + num_classes * num_classes, dtype=torch.float64, device=device)
    with dev.eval_mode(model):
        for x, y in loader.epoch(0):
            x = normalize_batch(x, norm.mean, norm.std, input_size, channels_last)
            with dev.autocast(device, dtype):
                logits = tta_logits(model, x, int(tta))
            logits = logits.float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum")
            # index_add_, not bincount: bincount reads its input's maximum on the host (a sync per batch on CUDA)
            sums[1:].index_add_(0, y * num_classes + logits.argmax(1), torch.ones_like(y, dtype=sums.dtype))
    if dist.enabled:
        torch.distributed.all_reduce(sums)
    sums = sums.cpu()
    cm = sums[1:].view(num_classes, num_classes).long()
    n = int(cm.sum())
    per_class = (cm.diag().double() / cm.sum(1).clamp_min(1)).tolist()
    return {
        "test_loss": float(sums[0]) / max(1, n),
        "test_acc": float(cm.diag().sum()) / max(1, n),
        "n": n,
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


class StopRequested(EndsTheRun):
    pass


def _versions() -> dict[str, str]:
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The live tensors; the CheckpointWriter copies them (contiguous, on the host) before training goes on."""
    inner = getattr(model, "module", model)  # DDP wraps the model
    inner = getattr(inner, "_orig_mod", inner)  # and torch.compile too
    return {k: v.detach() for k, v in inner.state_dict().items()}


# --------------------------------------------------------------------------- set-up


def init_distributed(config: TrainConfig) -> Dist:
    """Join the torchrun job, if there is one."""
    dist = Dist.from_env()
    if dist.enabled and not torch.distributed.is_initialized():
        backend = dev.distributed_backend(config.device)  # one GPU per process, or a one-line error
        if backend == "nccl":
            torch.cuda.set_device(dist.local_rank)
        # A bounded timeout: a rank that dies or hangs ends the job instead of stalling it for 30 minutes.
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=DIST_TIMEOUT_S))
    return dist


class RunLog:
    """The trainer's side of the run folder: records go to metrics.jsonl (rank 0 only) and to `on_record`.

    Every record gets `elapsed`, the run's seconds so far; a resumed run's clock continues where it stopped.
    """

    def __init__(
        self, run_dir: Path, dist: Dist, on_record: Callable[[dict[str, Any]], None] | None, *, started: float, elapsed_before: float = 0.0
    ):
        self.run_dir = run_dir
        self.started = started  # time.perf_counter() when this process began the run
        self.elapsed_before = elapsed_before
        self.on_record = on_record if dist.main else None
        self._writer = runs.MetricsWriter(run_dir) if dist.main else None

    @classmethod
    def open(
        cls,
        config: TrainConfig,
        run_dir: str | os.PathLike | None,
        dist: Dist,
        *,
        resume: bool,
        started: float,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        name: str | None = None,
    ) -> RunLog:
        run_dir = Path(run_dir) if run_dir else runs.MODELS_DIR / runs.new_run_id(config.model, config.data)
        elapsed_before = float(runs.summarize(runs.read_metrics(run_dir)[0]).get("seconds") or 0.0) if resume else 0.0
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume and not (run_dir / runs.CONFIG_FILE).exists():
                # Provisional, so a run that fails while loading data is still listed with its error.
                runs.write_config(run_dir, config.to_dict())
            if name:
                runs.write_meta(run_dir, name=name)
        return cls(run_dir, dist, on_record, started=started, elapsed_before=elapsed_before)

    @property
    def seconds(self) -> float:
        """Seconds since this process began the run (what the time limit counts)."""
        return time.perf_counter() - self.started

    def emit(self, record: dict[str, Any]) -> None:
        record.setdefault("elapsed", round(self.elapsed_before + self.seconds, 3))
        if self._writer:
            self._writer.write(record)
        if self.on_record:
            self.on_record(record)

    def close(self) -> None:
        if self._writer:
            self._writer.close()


@dataclass
class StopCheck:
    """Asked before every batch: the caller's event (the studio), the STOP file (any other process), the time limit.

    Host-only checks (an event, a file stat, the clock), so asking costs the device nothing; under torchrun the
    ranks must agree, which takes an all-reduce, so the loop asks only at log intervals there.
    """

    stop_file: Path
    event: threading.Event | None
    deadline: float | None  # a time.perf_counter() value
    dist: Dist
    device: torch.device

    def timed_out(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def requested(self) -> bool:
        flag = bool(self.event is not None and self.event.is_set()) or self.stop_file.exists() or self.timed_out()
        if self.dist.enabled:  # every rank must leave the loop at the same step
            flag = self.dist.all_reduce_sum([float(flag)], self.device)[0] > 0
        return flag


@dataclass
class Setup:
    """What the loop works with; made once by `setup()`; the loop changes only the weights and the fast parts that fail (core/fallback.py)."""

    config: TrainConfig
    dist: Dist
    device: torch.device
    dtype: torch.dtype  # autocast precision
    log: RunLog
    stop: StopCheck
    data: Dataset
    norm: Normalization
    data_size: int  # the side the images are stored at
    input_size: int  # the side the model sees
    train_loader: BatchLoader
    log_every: int  # steps between step records
    health_every: int  # steps between health records: a multiple of log_every (see HEALTH_RECORDS_PER_EPOCH)
    model: nn.Module  # the bare model: checkpoints, EMA and evaluation use it
    step_model: nn.Module  # what a training step calls: the model, compiled and/or wrapped in DDP
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel | None
    resumed: bool
    health: Probe | None = None  # rank 0 only: the other ranks' gradients are the same after DDP's all-reduce
    start_epoch: int = 0  # where the loop begins: 0, or the checkpoint's epoch and batch
    start_step: int = 0
    start_global_step: int = 0
    # The parts that keep a GPU busy (core/fastloop.py); setup() makes them.
    test_split: Split | None = None  # the test images on the training device, moved there once
    graphed: GraphedStep | None = None  # CUDA: the step's forward+backward replayed as one CUDA graph
    reads: IntervalReads | None = None  # the log interval's figures, read without waiting for the device
    checkpoints: CheckpointWriter | None = None  # checkpoints written in the background
    fallbacks: Fallbacks = field(default_factory=Fallbacks)  # the fast path's parts this run switched off (core/fallback.py)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def logs_after(self, step: int) -> bool:
        """Whether batch `step` (1-based, in its epoch) ends a log interval; the epoch's last batch always does."""
        return step % self.log_every == 0 or step == self.steps_per_epoch

    def watches_health_after(self, step: int) -> bool:
        """Whether batch `step` ends a log interval that also gets a health record."""
        return self.health is not None and step % self.health_every == 0


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


def setup(config: TrainConfig, log: RunLog, dist: Dist, *, resume: bool = False, stop_event: threading.Event | None = None) -> Setup:
    """Device, data, model, optimizer, schedule and EMA (restored from the checkpoint when resuming); writes config.json."""
    device = dev.resolve_device(config.device, dist.local_rank if dist.enabled else None)
    dtype = dev.resolve_precision(config.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: cuDNN times its algorithms once and keeps the fastest
    if dist.enabled and config.batch_size % dist.world_size:
        raise PlaygroundError(f"The batch size {config.batch_size} must divide evenly across {dist.world_size} processes.")
    checkpoint = runs.load_checkpoint(log.run_dir) if resume else None
    torch.manual_seed(config.seed)
    fallbacks = Fallbacks(log.emit if dist.main else None)
    fast = device.type in fallback.FAST_DEVICES  # CUDA graphs and fused optimizer steps

    ds, norm, data_size, input_size = load_data(config, device, checkpoint)
    train_loader = BatchLoader(
        ds.train,
        config.batch_size // dist.world_size,
        device,
        shuffle=True,
        augment=config.augment,
        crop_padding=config.crop_padding,
        seed=config.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.epochs

    model = make_model(config, ds, norm, input_size, device, checkpoint)
    optimizer = fallbacks.attempt("fused_optimizer", lambda: make_optimizer(model, config, fused=True)) if fast else None
    optimizer = optimizer or make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(config.schedule, s, total_steps, config.warmup, config.warmup_start)
    )
    ema = None
    if config.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    start_epoch, start_step, start_global_step = 0, 0, 0
    if checkpoint:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if ema is not None and "ema" in checkpoint:
            ema.load_state_dict(checkpoint["ema"])
        start_epoch, start_step = int(checkpoint["epoch"]), int(checkpoint.get("step_in_epoch", 0))
        start_global_step = int(checkpoint.get("global_step", start_epoch * steps_per_epoch + start_step))
    compiled = fallbacks.attempt("compile", lambda: torch.compile(model)) if config.compile else None
    step_model: nn.Module = model if compiled is None else compiled
    if dist.enabled:
        step_model = torch.nn.parallel.DistributedDataParallel(step_model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    loss_fn = losses.make(config.loss, config.label_smoothing)

    deadline = log.started + config.time_limit if config.time_limit is not None else None
    log_every = config.log_every or max(1, steps_per_epoch // 25)
    # Health at log intervals, but at most about HEALTH_RECORDS_PER_EPOCH an epoch: a small net's step is so cheap
    # (LeNet: ~15 ms on 2 CPU cores) that measuring every 4th step would cost more than the 5% it may.
    health_every = log_every * math.ceil(max(1, steps_per_epoch // HEALTH_RECORDS_PER_EPOCH) / log_every)
    s = Setup(
        config=config,
        dist=dist,
        device=device,
        dtype=dtype,
        log=log,
        stop=StopCheck(log.run_dir / runs.STOP_FILE, stop_event, deadline, dist, device),
        data=ds,
        norm=norm,
        data_size=data_size,
        input_size=input_size,
        train_loader=train_loader,
        log_every=log_every,
        health_every=health_every,
        model=model,
        step_model=step_model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        ema=ema,
        resumed=checkpoint is not None,
        start_epoch=start_epoch,
        start_step=start_step,
        start_global_step=start_global_step,
        test_split=Split(ds.test.images.to(device), ds.test.labels.to(device)),
        reads=IntervalReads(device),
        checkpoints=CheckpointWriter(runs.save_checkpoint, device, lambda exc: fallbacks.switch_off("background_checkpoints", exc)),
        fallbacks=fallbacks,
    )
    if fast and config.cuda_graphs and not dist.enabled:  # DDP's gradient all-reduce stays eager
        s.graphed = fallbacks.attempt(
            "cuda_graphs",
            lambda: GraphedStep(
                lambda x, y: forward_backward(s, x, y, autocast_cache=False), model, optimizer, before_capture=s.checkpoints.wait
            ),
        )
    if config.health and dist.main:  # rank 0 only: the other ranks' gradients are the same after DDP's all-reduce
        # Forward hooks do not run in a compiled or CUDA-graphed step (and adding them would make torch.compile
        # recompile): no dead-unit counts there; the norms and update sizes are read outside the step and still work.
        s.health = Probe(model, dead_units=compiled is None and s.graphed is None)
    if dist.main and not checkpoint:
        write_run_config(s)
    return s


def write_run_config(s: Setup) -> None:
    """The full config.json: the config plus what the run found out (classes, sizes, normalization, parameters, env)."""
    trainable, total = count_parameters(s.model)
    per_rank_batch = s.train_loader.batch_size
    runs.write_config(
        s.log.run_dir,
        s.config.to_dict(),
        classes=s.data.classes,
        num_classes=len(s.data.classes),
        input_size=s.input_size,
        data_size=s.data_size,
        # float32 on the device; 6 decimals give back the (4-decimal) statistics as they were computed
        normalization={k: [round(v, 6) for v in values] for k, values in s.norm.as_dict().items()},
        dataset={
            "n_train": len(s.data.train),
            "n_test": len(s.data.test),
            "skipped": s.data.skipped,
            "has_test_split": s.data.has_test_split,
            # the accuracy's caveat, for every page and export that shows it
            "test_split_warning": test_split_warning(len(s.data.test), own_split=s.data.has_test_split),
        },
        params={"trainable": trainable, "total": total},
        env={
            "device": str(s.device),
            "precision": dev.precision_name(s.dtype),
            "eval_precision": dev.precision_name(dev.eval_precision(s.config.precision, s.device)),
            "world_size": s.dist.world_size,
            "per_rank_batch_size": per_rank_batch,
            "effective_batch_size": per_rank_batch * s.dist.world_size,
            "lr_scaling": "none: the global batch is split across processes, so the lr is unchanged",
            "host": socket.gethostname(),
            **_versions(),
        },
    )


# --------------------------------------------------------------------------- one epoch


@dataclass
class Progress:
    """Where the loop stands; advanced by `train_one_epoch`, saved in checkpoints."""

    epoch: int = 0  # the epoch in progress = epochs completed
    step: int = 0  # batches done in this epoch
    global_step: int = 0
    # Throughput, one definition everywhere (step and epoch records, the CLI, the pages): training images per second of
    # training since this process began, steady state: its first log interval (warm-up, graph capture), evaluations and
    # checkpoints (taken between epochs) are not counted.
    counted_images: int = 0
    counted_time: float = 0.0
    warmed_up: bool = False  # this process has trained its first (warm-up) interval
    last_eval: dict[str, Any] = field(default_factory=dict)

    @property
    def img_per_s(self) -> float | None:
        return round(self.counted_images / self.counted_time, 1) if self.counted_time else None


class Meter:
    """Train loss and accuracy: summed on the device within a log interval (no host sync per step), on the host per epoch."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.n = 0
        self.epoch_loss, self.epoch_correct, self.epoch_n = 0.0, 0.0, 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss.detach() * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        self.n += len(y)

    def epoch_metrics(self) -> dict[str, float]:
        return {"train_loss": self.epoch_loss / max(1, self.epoch_n), "train_acc": self.epoch_correct / max(1, self.epoch_n)}


def forward_backward(s: Setup, x: torch.Tensor, y: torch.Tensor, *, autocast_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """zero_grad, forward, loss and backward of a batch of uint8 images; returns (loss, logits), still on the device.

    What `GraphedStep` captures (autocast's weight cache must be off inside a CUDA graph).
    """
    x = normalize_batch(x, s.norm.mean, s.norm.std, s.input_size, s.config.channels_last)
    with dev.autocast(s.device, s.dtype, cache=autocast_cache):
        logits = s.step_model(x)
        loss = s.loss_fn(logits.float(), y)
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss, logits


def train_step(s: Setup, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch of uint8 images; returns (loss, logits) still on the device, unread.

    Each fast part that fails is switched off and its work done again the plain way (core/fallback.py).
    """
    loss, logits = fallback.forward_backward(s, x, y, forward_backward)
    fallback.optimizer_step(s)
    s.scheduler.step()  # host arithmetic only: the lr goes to the fused kernel as an argument
    if s.ema is not None:
        fallback.ema_step(s)
    return loss, logits


def log_interval(s: Setup, progress: Progress, meter: Meter) -> None:
    """Once per log interval: queue the interval's loss and accuracy for reading (all-reduced under torchrun), then
    write the step records whose figures have arrived. The device is never waited for here (see IntervalReads).

    The per-layer health values (core.health) are measured here, right after the step while every .grad still holds its
    gradients, and ride along in the same read; their record follows the interval's step record.
    """
    values = torch.stack([meter.loss, meter.correct])
    if s.dist.enabled:
        torch.distributed.all_reduce(values)
    meta = {
        "epoch": progress.epoch,
        "step": progress.global_step,
        "progress": round(progress.epoch + progress.step / s.steps_per_epoch, 4),
        "lr": s.scheduler.get_last_lr()[0],
        "n": meter.n * s.dist.world_size,
        "warmup": not progress.warmed_up,
    }
    if s.health is not None and s.health.pending:  # rank 0 only, hence after the all-reduce; read with the loss, no wait of its own
        health_values, meta["health"] = s.health.collect()
        values = torch.cat([values, health_values.to(values.device, values.dtype)])
    s.reads.push(values, meta)
    progress.warmed_up = True
    meter.loss.zero_()
    meter.correct.zero_()
    meter.n = 0
    # Under torchrun every rank must see a NaN at the same step (or they part ways), so there the read waits; the
    # all-reduce above has made the ranks wait for each other anyway.
    write_step_records(s, progress, meter, wait=s.dist.enabled)


def write_step_records(s: Setup, progress: Progress, meter: Meter, *, wait: bool = False) -> None:
    """Step records for the intervals whose figures have arrived (wait=True: all of them; once an epoch)."""
    for floats, meta, seconds in s.reads.ready(block=wait):
        (loss_sum, correct), health_values, health_rows = floats[:2], floats[2:], meta.pop("health", None)
        n = meta.pop("n")
        if not math.isfinite(loss_sum):
            raise FloatingPointError
        if not meta.pop("warmup"):  # the run's first interval is warm-up (and graph capture), not throughput
            progress.counted_images += n
            progress.counted_time += seconds
        # img_per_s: the run's one throughput figure so far (Progress.img_per_s), not this interval's own (noisy) rate
        s.log.emit({"kind": "step", **meta, "loss": loss_sum / n, "acc": correct / n, "img_per_s": progress.img_per_s})
        if health_rows is not None:
            s.log.emit({"kind": "health", **meta, "loss": loss_sum / n, "layers": health_rows(health_values)})
        meter.epoch_loss += loss_sum
        meter.epoch_correct += correct
        meter.epoch_n += int(n)


def train_one_epoch(s: Setup, progress: Progress) -> dict[str, float]:
    """Train epoch `progress.epoch` from batch `progress.step` on (0, or where a resumed run stopped).

    Returns the epoch's train loss and accuracy. Raises StopRequested (checked before every batch; at log
    intervals under torchrun) and FloatingPointError (the loss is not finite at a log interval). Between log
    intervals nothing here reads a value back from the device, so the host can queue steps ahead of an
    accelerator.
    """
    if hasattr(s.model, "on_epoch_start"):
        s.model.on_epoch_start(progress.epoch, s.config.epochs)
    s.step_model.train()
    meter = Meter(s.device)
    s.reads.restart()
    for x, y in s.train_loader.epoch(progress.epoch, start_step=progress.step):
        if (not s.dist.enabled or progress.step % s.log_every == 0) and s.stop.requested():
            write_step_records(s, progress, meter, wait=True)  # a stopped run keeps the records of what it trained
            raise StopRequested
        # Known before the step, so that a logged step can also watch the step itself (activations, the update).
        logged = s.logs_after(progress.step + 1)
        if logged and s.watches_health_after(progress.step + 1):
            s.health.begin()  # hooks and a copy of the weights for this one step; log_interval reads them
        loss, logits = train_step(s, x, y)
        progress.step += 1
        progress.global_step += 1
        meter.add(loss, logits, y)
        if logged:
            log_interval(s, progress, meter)
    write_step_records(s, progress, meter, wait=True)
    return meter.epoch_metrics()


def evaluate_run(s: Setup, *, final: bool) -> dict[str, Any]:
    """`evaluate` on the test split with the weights checkpoints keep (the EMA's when there is one).

    Test-time augmentation costs 2-6 forward passes, so it is kept for the evaluation that ends a run (the last
    epoch, or a stop); the evaluations between epochs are single views, a cheap progress check.
    """
    return evaluate(
        s.eval_model,
        s.test_split,
        s.norm,
        s.input_size,
        s.device,
        dev.eval_precision(s.config.precision, s.device),  # as core.predict scores it: one test accuracy on every CPU
        tta=s.config.tta if final else 0,
        num_classes=len(s.data.classes),
        dist=s.dist,
        channels_last=s.config.channels_last,
        batch_size=eval_batch_size(s.config.batch_size),
    )


def epoch_record(s: Setup, progress: Progress, train_metrics: dict[str, float], eval_seconds: float) -> dict[str, Any]:
    last, metrics = progress.epoch + 1 == s.config.epochs, progress.last_eval
    record = {
        "kind": "epoch",
        "epoch": progress.epoch + 1,
        **train_metrics,
        "test_loss": metrics["test_loss"],
        "test_acc": metrics["test_acc"],
        "tta": int(s.config.tta) if last else 0,
        "lr": s.scheduler.get_last_lr()[0],
        "img_per_s": progress.img_per_s,
        "eval_seconds": round(eval_seconds, 3),
    }
    if last or len(s.data.classes) <= 20:
        record["per_class"] = metrics["per_class"]
    if last and len(s.data.classes) <= 50:
        record["confusion"] = metrics["confusion"]
    return record


def save_checkpoint(s: Setup, epoch: int, step_in_epoch: int, global_step: int, metrics: dict[str, Any], *, wait: bool = False) -> None:
    """Rank 0 writes checkpoint.pt atomically: plain tensors and values, loadable with weights_only=True.

    Written in the background (CheckpointWriter) from a snapshot taken now; wait=True returns once it is on disk.
    """
    if not s.dist.main:
        return
    payload = {
        "model": _state_dict(s.eval_model),
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "classes": s.data.classes,
        "normalization": s.norm.as_dict(),
        "image_size": s.data_size,
        "input_size": s.input_size,
        "config": s.config.to_dict(),
        "metrics": metrics,
    }
    if s.ema is not None:
        payload["train_model"] = _state_dict(s.model)
        payload["ema"] = s.ema.state_dict()
    s.checkpoints.save(s.log.run_dir / runs.CHECKPOINT_FILE, payload, wait=wait)


# --------------------------------------------------------------------------- how a run ends


@dataclass
class Outcome:
    status: str  # one of runs.FINAL_STATUSES
    message: str = ""
    unexpected: bool = False  # a bug, not a user's mistake: recorded as failed, then re-raised with its traceback


def outcome(
    exc: BaseException | None,
    config: TrainConfig,
    progress: Progress,
    *,
    timed_out: bool = False,
    device: str = "",
    steps_per_epoch: int = 0,
) -> Outcome:
    """The run's final status and message, from the exception that ended the loop (None: it finished)."""
    if exc is None:
        return Outcome("finished")
    if isinstance(exc, StopRequested):
        why = "Time limit reached" if timed_out else "Stopped by request"
        where = runs.position(progress.epoch, progress.step, config.epochs, steps_per_epoch)
        return Outcome("stopped", f"{why}; checkpoint saved at {where}. Resume to continue.")
    if isinstance(exc, FloatingPointError):
        return Outcome(
            "diverged",
            f"The loss became NaN/inf at step {progress.global_step}: the learning rate ({config.lr:g}) "
            "is probably too high. Lower it (e.g. by 10x) and start again; the last good checkpoint is kept.",
        )
    if isinstance(exc, KeyboardInterrupt):
        return Outcome("interrupted", "Interrupted; resume from the last checkpoint.")
    if isinstance(exc, PlaygroundError):
        return Outcome("failed", str(exc))
    if isinstance(exc, torch.distributed.DistError):
        return Outcome(
            "failed",
            f"Another training process stopped or stopped answering ({str(exc).splitlines()[0][:200]}); "
            "the job was ended. Resume from the last checkpoint.",
        )
    if isinstance(exc, RuntimeError) and is_oom(exc):
        return Outcome(
            "failed",
            f"Out of memory at batch size {config.batch_size} on {device}. Use a smaller batch size "
            "(or a smaller image size / model). The last checkpoint is kept.",
        )
    first_line = (str(exc).splitlines() or [""])[0]
    return Outcome("failed", f"{type(exc).__name__}: {first_line}", unexpected=True)


# --------------------------------------------------------------------------- train


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    stop_event: threading.Event | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) one run into `run_dir` and return the CLI's result dict; `name`: the run's short name (meta.json)."""
    started = time.perf_counter()
    config.validate()
    name = runs.check_name(name or "")  # a bad name fails before any work
    dist = init_distributed(config)
    log = RunLog.open(config, run_dir, dist, resume=resume, started=started, on_record=on_record, name=name)
    s: Setup | None = None
    progress = Progress()
    caveat: str | None = None  # a test split too small for its accuracy to mean much (core.classes)
    error: BaseException | None = None
    try:
        s = setup(config, log, dist, resume=resume, stop_event=stop_event)
        progress = Progress(epoch=s.start_epoch, step=s.start_step, global_step=s.start_global_step)
        caveat = test_split_warning(len(s.data.test), own_split=s.data.has_test_split)
        log.emit(
            {
                "kind": "status",
                "status": "running",
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "resumed_from_epoch": s.start_epoch if s.resumed else None,
                "device": str(s.device),
                "precision": dev.precision_name(s.dtype),
                "steps_per_epoch": s.steps_per_epoch,
                "total_steps": s.total_steps,
                "num_classes": len(s.data.classes),
                "n_test": len(s.data.test),
                "test_split_warning": caveat,
            }
        )
        while progress.epoch < config.epochs:
            train_metrics = train_one_epoch(s, progress)
            eval_started = time.perf_counter()
            progress.last_eval = evaluate_run(s, final=progress.epoch + 1 == config.epochs)
            log.emit(epoch_record(s, progress, train_metrics, time.perf_counter() - eval_started))
            save_checkpoint(s, progress.epoch + 1, 0, progress.global_step, {"test_acc": progress.last_eval["test_acc"]})
            progress.epoch, progress.step = progress.epoch + 1, 0
        s.checkpoints.wait()  # a finished run's checkpoint is on disk before its status says so
    except (Exception, KeyboardInterrupt) as exc:
        error = exc

    end = outcome(
        error,
        config,
        progress,
        timed_out=s is not None and s.stop.timed_out(),
        device=str(s.device if s else config.device),
        steps_per_epoch=s.steps_per_epoch if s else 0,
    )
    if end.status == "stopped" and s is not None:
        progress.last_eval = evaluate_run(s, final=True)
        save_checkpoint(s, progress.epoch, progress.step, progress.global_step, {"test_acc": progress.last_eval["test_acc"]}, wait=True)
        if dist.main:
            # Consumed only now: a Stop pressed while the trainer was still starting up is not lost.
            s.stop.stop_file.unlink(missing_ok=True)
    if s is not None and s.checkpoints is not None:
        try:
            s.checkpoints.close()  # whatever the outcome, no write is left half-way
        except PlaygroundError as exc:
            if error is None or end.status == "stopped":
                error, end = exc, outcome(exc, config, progress)
    result = finish(log, end, progress, caveat)
    if end.unexpected:
        raise error  # type: ignore[misc]  # with its own traceback
    if end.status == "failed":
        raise PlaygroundError(end.message)
    return result


def finish(log: RunLog, end: Outcome, progress: Progress, caveat: str | None = None) -> dict[str, Any]:
    """The final status record (the run folder's last line), then the CLI's result."""
    final = {
        "kind": "status",
        "status": end.status,
        "message": end.message,
        "epochs_done": progress.epoch,
        "test_acc": progress.last_eval.get("test_acc"),
        "seconds": round(log.seconds, 3),
    }
    if progress.last_eval and len(progress.last_eval["per_class"]) <= 50:  # a stopped run still gets its per-class results
        final.update(per_class=progress.last_eval["per_class"], confusion=progress.last_eval["confusion"])
    log.emit(final)
    log.close()
    return {
        "run_dir": str(log.run_dir),
        "status": end.status,
        "epochs": progress.epoch,
        "val_acc": progress.last_eval.get("test_acc"),
        "train_img_per_s": progress.img_per_s,
        "seconds": round(log.seconds, 2),
        "test_split_warning": caveat,
    }


def resume(run_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Continue a run to its configured number of epochs from its last checkpoint."""
    config = TrainConfig.from_dict(runs.read_config(run_dir))
    return train(config, run_dir, resume=True, **kwargs)


# --------------------------------------------------------------------------- command line


def _progress_printer(stream=sys.stderr, config: dict[str, Any] | None = None) -> Callable[[dict[str, Any]], None]:
    tty = stream.isatty()
    watcher: list[Watcher] = []  # made when the running status says how many classes there are
    caveat: list[tuple[int, str]] = []  # (test images, warning) when the test split is too small to mean much

    def show(r: dict[str, Any]) -> None:
        if r["kind"] == "status" and r.get("num_classes"):
            watcher[:] = [Watcher(int(r["num_classes"]), config)]
            caveat[:] = [(r["n_test"], r["test_split_warning"])] if r.get("test_split_warning") else []
        if r["kind"] == "step" and tty:
            speed = f"{r['img_per_s']:.0f} img/s " if r.get("img_per_s") else ""  # none yet while warming up
            stream.write(f"\repoch {r['epoch'] + 1} step {r['step']}  loss {r['loss']:.3f}  acc {r['acc']:.3f}  lr {r['lr']:.2e}  {speed}")
        elif r["kind"] == "epoch":
            stream.write(
                ("\n" if tty else "") + f"epoch {r['epoch']}: train loss {r['train_loss']:.3f} acc {r['train_acc']:.3f} | "
                f"test loss {r['test_loss']:.3f} acc {r['test_acc']:.3f}{f' (of {caveat[0][0]} images)' if caveat else ''} | "
                f"{r['elapsed']:.1f}s\n"
            )
        elif r["kind"] == "status":
            stream.write(f"{r['status']}" + (f": {r['message']}" if r.get("message") else "") + "\n")
            if caveat:  # when training starts, and beside the final result
                stream.write(f"warning: {caveat[0][1]}\n")
        for warning in watcher[0].add(r) if watcher else []:  # each health warning once (core.health)
            stream.write(("\n" if tty and r["kind"] == "health" else "") + f"health {warning.level}: {warning.message}\n")
        stream.flush()

    return show


# The options every command that builds a TrainConfig takes (core.train, core.lr_find), and the fields they set.
SHARED_OPTIONS = ("data", "batch_size", "optimizer", "weights", "freeze_backbone", "image_size", "device", "precision", "seed", "data_dir")


def add_shared_options(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    """--model/--layers and SHARED_OPTIONS: the model, its data and how it runs."""
    p.add_argument(
        "--model",
        required=required,
        help=f"preset name ({', '.join(PRESETS)}), 'custom' with --layers, or any "
        "torchvision classification model (efficientnet_b0, mobilenet_v3_small, ...)",
    )
    p.add_argument("--layers", help="custom model: a JSON layer spec or a path to one")
    p.add_argument("--data", required=required, help="cifar10 | shapes | imagefolder:PATH (folder or .zip)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--weights", help="torchvision weights name (DEFAULT) or a .pth/.safetensors file")
    p.add_argument("--freeze-backbone", action="store_true", default=None)
    p.add_argument("--image-size", type=int)
    p.add_argument("--device", choices=dev.DEVICE_CHOICES)
    p.add_argument("--precision", choices=dev.PRECISION_CHOICES)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-dir")


def layers_option(value: str) -> list[dict[str, Any]]:
    """--layers: a JSON layer spec, or the path of a file holding one (json.JSONDecodeError when it is neither)."""
    return json.loads(Path(value).read_text() if Path(value).is_file() else value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.train", description="Train an image classifier into a run folder.")
    add_shared_options(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--loss", choices=list(losses.LOSSES), help="training loss (the test loss is always cross-entropy)")
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--time-limit", type=float, metavar="SECONDS")
    p.add_argument("--compile", action="store_true", default=None)
    p.add_argument(
        "--health",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="record per-layer training health at log intervals, about 10 an epoch (default on; --no-health: off)",
    )
    p.add_argument("--out", metavar="RUN_DIR", help="the run folder itself (default models/<run-id>)")
    p.add_argument("--config", metavar="JSON", help="a config.json to start from (the studio uses this)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run to its configured epochs")
    p.add_argument("--name", help=f"a short name for the run (up to {runs.NAME_MAX} characters; kept in meta.json)")
    return p


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (torchrun stopping the other ranks, `kill`) saves nothing mid-step but records the run as interrupted.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.resume:
            result = resume(args.resume, on_record=_progress_printer(config=runs.read_config(args.resume)), name=args.name)
        else:
            overrides = {
                k: getattr(args, k)
                for k in (
                    *SHARED_OPTIONS,
                    "epochs",
                    "lr",
                    "weight_decay",
                    "label_smoothing",
                    "loss",
                    "schedule",
                    "time_limit",
                    "compile",
                    "health",
                )
            }
            if args.config:
                base = TrainConfig.from_dict(json.loads(Path(args.config).read_text())).to_dict()
                config = TrainConfig.from_dict(
                    {**base, **{k: v for k, v in overrides.items() if v is not None}, **({"model": args.model} if args.model else {})}
                )
            else:
                if not args.model or not args.data:
                    raise PlaygroundError("--model and --data are required (or --resume RUN_DIR).")
                if args.layers:
                    overrides["layers"] = layers_option(args.layers)
                config = TrainConfig.for_model(args.model, **overrides)
            result = train(config, args.out, on_record=_progress_printer(config=config.to_dict()), name=args.name)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"error: the layer spec / config is not valid JSON ({exc}).", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # A stopped run's StopRequested traceback keeps the DDP model (and its gloo work) alive in a reference
            # cycle; freed at interpreter exit instead, it aborted a rank ("terminate called without an active
            # exception"). Collected now, the process group goes down with nothing still using it.
            gc.collect()
            torch.distributed.destroy_process_group()
    if Dist.from_env().main:
        print(json.dumps(result))
    return 0 if result["status"] in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
