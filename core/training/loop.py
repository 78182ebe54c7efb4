"""The training loop: `train()` reads top to bottom.

`setup()` returns a `Setup` (data, loader, model, optimizer, schedule, EMA, normalization, the run folder's log);
`train_one_epoch()` with its per-batch `train_step()` and per-interval `log_interval()`; `outcome()`, which maps
how the loop ended to a status and message; and `train()`, which is those in order. The same code runs in the
studio (a child process), on the command line and under torchrun (DistributedDataParallel).
"""

from __future__ import annotations

import math
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core import device as dev
from core.data.batches import BatchLoader, normalize_batch
from core.data.classes import test_split_warning
from core.data.datasets import Dataset, Split
from core.errors import PlaygroundError
from core.models.build import count_parameters
from core.models.scoring import eval_batch_size, tta_logits
from core.serving import runs
from core.training import fallback, losses
from core.training.config import TrainConfig
from core.training.fallback import EndsTheRun, Fallbacks, is_oom
from core.training.fastloop import CheckpointWriter, GraphedStep, IntervalReads
from core.training.health import Probe
from core.training.parts import Normalization, load_data, lr_factor, make_model, make_optimizer
from core.training.runlog import Dist, RunLog, StopCheck, init_distributed

HEALTH_RECORDS_PER_EPOCH = 10  # at most about this many health records an epoch (each costs a few ms; see Setup)


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
