"""The training loop, to read top to bottom: `train()` is the whole run.

`start()` builds the pieces a run needs once (core/training/parts.py: where it computes, its data, the learner;
core/training/runlog.py: its records and stop checks). Then every epoch is `train_one_epoch()`, with its
per-batch `train_step()` and per-interval `log_interval()`, then `score_test_split()` and a checkpoint;
`outcome()` maps how the loop ended to a status and message, and `finish()` writes it. Each function takes the
pieces it uses, as torchvision's classification reference does. The same code runs in the studio (a child
process), on the command line and under torchrun (DistributedDataParallel).
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
from core.data.datasets import Split
from core.errors import PlaygroundError
from core.models.build import count_parameters
from core.models.scoring import EVAL_BATCH, eval_batch_size, tta_logits
from core.serving import runs
from core.training import fallback
from core.training.config import TrainConfig
from core.training.fallback import EndsTheRun, Fallbacks, is_oom
from core.training.fastloop import CheckpointWriter, GraphedStep, IntervalReads
from core.training.health import Probe
from core.training.parts import Learner, Normalization, Placement, RunData, load_run_data, make_learner, place
from core.training.runlog import Cadence, Dist, Records, RunLog, StopCheck, init_distributed


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
    batch_size: int = EVAL_BATCH,
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


# --------------------------------------------------------------------------- set-up


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


def start(
    config: TrainConfig, log: RunLog, dist: Dist, *, resume: bool = False, stop_event: threading.Event | None = None
) -> tuple[Placement, RunData, Learner, Records, StopCheck, CheckpointWriter, Progress]:
    """Every piece the loop works with, built once (restored from the checkpoint when resuming); writes config.json."""
    where = place(config, dist)
    checkpoint = runs.load_checkpoint(log.run_dir) if resume else None
    torch.manual_seed(config.seed)
    fallbacks = Fallbacks(log.emit if dist.main else None)
    data = load_run_data(config, where, checkpoint)
    cadence = Cadence.for_run(config, len(data.train_loader))
    learner = make_learner(config, data, where, cadence.total_steps, fallbacks, checkpoint)
    checkpoints = CheckpointWriter(runs.save_checkpoint, where.device, lambda exc: fallbacks.switch_off("background_checkpoints", exc))
    if where.device.type in fallback.FAST_DEVICES and config.cuda_graphs and not dist.enabled:  # DDP's all-reduce stays eager
        learner.graphed = fallbacks.attempt(
            "cuda_graphs",
            lambda: GraphedStep(
                lambda x, y: forward_backward(learner, data, where, x, y, autocast_cache=False),
                learner.model,
                learner.optimizer,
                before_capture=checkpoints.wait,
            ),
        )
    records = Records(log, cadence, IntervalReads(where.device))
    if config.health and dist.main:  # rank 0 only: the other ranks' gradients are the same after DDP's all-reduce
        # Forward hooks do not run in a compiled or CUDA-graphed step (and adding them would make torch.compile
        # recompile): no dead-unit counts there; the norms and update sizes are read outside the step and still work.
        records.health = Probe(learner.model, dead_units=not learner.compiled and learner.graphed is None)
    deadline = log.started + config.time_limit if config.time_limit is not None else None
    stop = StopCheck(log.run_dir / runs.STOP_FILE, stop_event, deadline, dist, where.device)
    progress = Progress()
    if checkpoint:  # the loop begins at the checkpoint's epoch and batch
        progress.epoch, progress.step = int(checkpoint["epoch"]), int(checkpoint.get("step_in_epoch", 0))
        progress.global_step = int(checkpoint.get("global_step", progress.epoch * cadence.steps_per_epoch + progress.step))
    elif dist.main:
        write_run_config(log, config, data, learner.model, where)
    return where, data, learner, records, stop, checkpoints, progress


def _versions() -> dict[str, str]:
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}


def write_run_config(log: RunLog, config: TrainConfig, data: RunData, model: nn.Module, where: Placement) -> None:
    """The full config.json: the config plus what the run found out (classes, sizes, normalization, parameters, env)."""
    trainable, total = count_parameters(model)
    per_rank_batch = data.train_loader.batch_size
    runs.write_config(
        log.run_dir,
        config.to_dict(),
        classes=data.classes,
        num_classes=len(data.classes),
        input_size=data.input_size,
        data_size=data.data_size,
        # float32 on the device; 6 decimals give back the (4-decimal) statistics as they were computed
        normalization={k: [round(v, 6) for v in values] for k, values in data.norm.as_dict().items()},
        dataset={
            "n_train": len(data.dataset.train),
            "n_test": len(data.dataset.test),
            "skipped": data.dataset.skipped,
            "has_test_split": data.dataset.has_test_split,
            # the accuracy's caveat, for every page and export that shows it
            "test_split_warning": test_split_warning(len(data.dataset.test), own_split=data.dataset.has_test_split),
        },
        params={"trainable": trainable, "total": total},
        env={
            "device": str(where.device),
            "precision": dev.precision_name(where.dtype),
            "eval_precision": dev.precision_name(where.eval_dtype),
            "world_size": where.dist.world_size,
            "per_rank_batch_size": per_rank_batch,
            "effective_batch_size": per_rank_batch * where.dist.world_size,
            "lr_scaling": "none: the global batch is split across processes, so the lr is unchanged",
            "host": socket.gethostname(),
            **_versions(),
        },
    )


# --------------------------------------------------------------------------- one epoch


def forward_backward(
    learner: Learner, data: RunData, where: Placement, x: torch.Tensor, y: torch.Tensor, *, autocast_cache: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """zero_grad, forward, loss and backward of a batch of uint8 images; returns (loss, logits), still on the device.

    What `GraphedStep` captures (autocast's weight cache must be off inside a CUDA graph).
    """
    x = data.inputs(x, where.channels_last)
    with dev.autocast(where.device, where.dtype, cache=autocast_cache):
        logits = learner.step_model(x)
        loss = learner.loss_fn(logits.float(), y)
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss, logits


def train_step(learner: Learner, data: RunData, where: Placement, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch of uint8 images; returns (loss, logits) still on the device, unread.

    Each fast part that fails is switched off and its work done again the plain way (core/training/fallback.py).
    """
    loss, logits = fallback.forward_backward(learner, x, y, lambda learner, x, y: forward_backward(learner, data, where, x, y))
    fallback.optimizer_step(learner)
    learner.scheduler.step()  # host arithmetic only: the lr goes to the fused kernel as an argument
    if learner.ema is not None:
        fallback.ema_step(learner)
    return loss, logits


def log_interval(records: Records, dist: Dist, progress: Progress, meter: Meter, lr: float) -> None:
    """Once per log interval: queue the interval's loss and accuracy for reading (all-reduced under torchrun), then
    write the step records whose figures have arrived. The device is never waited for here (see IntervalReads).

    The per-layer health values (core/training/health.py) are measured here, right after the step while every .grad
    still holds its gradients, and ride along in the same read; their record follows the interval's step record.
    """
    values = torch.stack([meter.loss, meter.correct])
    if dist.enabled:
        torch.distributed.all_reduce(values)
    meta = {
        "epoch": progress.epoch,
        "step": progress.global_step,
        "progress": round(progress.epoch + progress.step / records.cadence.steps_per_epoch, 4),
        "lr": lr,
        "n": meter.n * dist.world_size,
        "warmup": not progress.warmed_up,
    }
    if records.health is not None and records.health.pending:  # rank 0 only, hence after the all-reduce; no wait of its own
        health_values, meta["health"] = records.health.collect()
        values = torch.cat([values, health_values.to(values.device, values.dtype)])
    records.reads.push(values, meta)
    progress.warmed_up = True
    meter.loss.zero_()
    meter.correct.zero_()
    meter.n = 0
    # Under torchrun every rank must see a NaN at the same step (or they part ways), so there the read waits; the
    # all-reduce above has made the ranks wait for each other anyway.
    write_step_records(records, progress, meter, wait=dist.enabled)


def write_step_records(records: Records, progress: Progress, meter: Meter, *, wait: bool = False) -> None:
    """Step records for the intervals whose figures have arrived (wait=True: all of them; once an epoch)."""
    for floats, meta, seconds in records.reads.ready(block=wait):
        (loss_sum, correct), health_values, health_rows = floats[:2], floats[2:], meta.pop("health", None)
        n = meta.pop("n")
        if not math.isfinite(loss_sum):
            raise FloatingPointError
        if not meta.pop("warmup"):  # the run's first interval is warm-up (and graph capture), not throughput
            progress.counted_images += n
            progress.counted_time += seconds
        # img_per_s: the run's one throughput figure so far (Progress.img_per_s), not this interval's own (noisy) rate
        records.log.emit({"kind": "step", **meta, "loss": loss_sum / n, "acc": correct / n, "img_per_s": progress.img_per_s})
        if health_rows is not None:
            records.log.emit({"kind": "health", **meta, "loss": loss_sum / n, "layers": health_rows(health_values)})
        meter.epoch_loss += loss_sum
        meter.epoch_correct += correct
        meter.epoch_n += int(n)


def train_one_epoch(
    learner: Learner, data: RunData, where: Placement, records: Records, stop: StopCheck, progress: Progress
) -> dict[str, float]:
    """Train epoch `progress.epoch` from batch `progress.step` on (0, or where a resumed run stopped).

    Returns the epoch's train loss and accuracy. Raises StopRequested (checked before every batch; at log
    intervals under torchrun) and FloatingPointError (the loss is not finite at a log interval). Between log
    intervals nothing here reads a value back from the device, so the host can queue steps ahead of an
    accelerator.
    """
    cadence, health = records.cadence, records.health
    if hasattr(learner.model, "on_epoch_start"):
        learner.model.on_epoch_start(progress.epoch, cadence.epochs)
    learner.step_model.train()
    meter = Meter(where.device)
    records.reads.restart()
    for x, y in data.train_loader.epoch(progress.epoch, start_step=progress.step):
        if (not where.dist.enabled or progress.step % cadence.log_every == 0) and stop.requested():
            write_step_records(records, progress, meter, wait=True)  # a stopped run keeps the records of what it trained
            raise StopRequested
        # Known before the step, so that a logged step can also watch the step itself (activations, the update).
        logged = cadence.logs_after(progress.step + 1)
        if logged and health is not None and cadence.health_after(progress.step + 1):
            health.begin()  # hooks and a copy of the weights for this one step; log_interval reads them
        loss, logits = train_step(learner, data, where, x, y)
        progress.step += 1
        progress.global_step += 1
        meter.add(loss, logits, y)
        if logged:
            log_interval(records, where.dist, progress, meter, learner.scheduler.get_last_lr()[0])
    write_step_records(records, progress, meter, wait=True)
    return meter.epoch_metrics()


def score_test_split(learner: Learner, data: RunData, where: Placement, config: TrainConfig, *, final: bool) -> dict[str, Any]:
    """`evaluate` on the test split with the weights checkpoints keep (the EMA's when there is one).

    Test-time augmentation costs 2-6 forward passes, so it is kept for the evaluation that ends a run (the last
    epoch, or a stop); the evaluations between epochs are single views, a cheap progress check.
    """
    return evaluate(
        learner.eval_model,
        data.test_split,
        data.norm,
        data.input_size,
        where.device,
        where.eval_dtype,
        tta=config.tta if final else 0,
        num_classes=len(data.classes),
        dist=where.dist,
        channels_last=where.channels_last,
        batch_size=eval_batch_size(config.batch_size),
    )


def epoch_record(
    progress: Progress, train_metrics: dict[str, float], eval_seconds: float, *, config: TrainConfig, lr: float, num_classes: int
) -> dict[str, Any]:
    last, metrics = progress.epoch + 1 == config.epochs, progress.last_eval
    record = {
        "kind": "epoch",
        "epoch": progress.epoch + 1,
        **train_metrics,
        "test_loss": metrics["test_loss"],
        "test_acc": metrics["test_acc"],
        "tta": int(config.tta) if last else 0,
        "lr": lr,
        "img_per_s": progress.img_per_s,
        "eval_seconds": round(eval_seconds, 3),
    }
    if last or num_classes <= 20:
        record["per_class"] = metrics["per_class"]
    if last and num_classes <= 50:
        record["confusion"] = metrics["confusion"]
    return record


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The live tensors; the CheckpointWriter copies them (contiguous, on the host) before training goes on."""
    inner = getattr(model, "module", model)  # DDP wraps the model
    inner = getattr(inner, "_orig_mod", inner)  # and torch.compile too
    return {k: v.detach() for k, v in inner.state_dict().items()}


def checkpoint_payload(learner: Learner, data: RunData, config: TrainConfig, progress: Progress, *, epoch_done: bool) -> dict[str, Any]:
    """What checkpoint.pt holds, plain tensors and values that load with weights_only=True: at the end of the epoch in
    progress (epoch_done), or where the loop stopped within it."""
    payload = {
        "model": _state_dict(learner.eval_model),
        "optimizer": learner.optimizer.state_dict(),
        "scheduler": learner.scheduler.state_dict(),
        "epoch": progress.epoch + 1 if epoch_done else progress.epoch,
        "step_in_epoch": 0 if epoch_done else progress.step,
        "global_step": progress.global_step,
        "classes": data.classes,
        "normalization": data.norm.as_dict(),
        "image_size": data.data_size,
        "input_size": data.input_size,
        "config": config.to_dict(),
        "metrics": {"test_acc": progress.last_eval["test_acc"]},
    }
    if learner.ema is not None:
        payload["train_model"] = _state_dict(learner.model)
        payload["ema"] = learner.ema.state_dict()
    return payload


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
    where = data = learner = records = stop = checkpoints = None  # still None if start() fails: recorded as failed
    progress = Progress()
    caveat: str | None = None  # a test split too small for its accuracy to mean much (core/data/classes.py)
    error: BaseException | None = None
    try:
        where, data, learner, records, stop, checkpoints, progress = start(config, log, dist, resume=resume, stop_event=stop_event)
        caveat = test_split_warning(len(data.dataset.test), own_split=data.dataset.has_test_split)
        log.emit(
            {
                "kind": "status",
                "status": "running",
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "resumed_from_epoch": progress.epoch if resume else None,
                "device": str(where.device),
                "precision": dev.precision_name(where.dtype),
                "steps_per_epoch": records.cadence.steps_per_epoch,
                "total_steps": records.cadence.total_steps,
                "num_classes": len(data.classes),
                "n_test": len(data.dataset.test),
                "test_split_warning": caveat,
            }
        )
        while progress.epoch < config.epochs:
            train_metrics = train_one_epoch(learner, data, where, records, stop, progress)
            eval_started = time.perf_counter()
            progress.last_eval = score_test_split(learner, data, where, config, final=progress.epoch + 1 == config.epochs)
            lr = learner.scheduler.get_last_lr()[0]
            log.emit(
                epoch_record(
                    progress, train_metrics, time.perf_counter() - eval_started, config=config, lr=lr, num_classes=len(data.classes)
                )
            )
            if dist.main:  # rank 0 writes checkpoint.pt, in the background from a snapshot taken now
                checkpoints.save(log.run_dir / runs.CHECKPOINT_FILE, checkpoint_payload(learner, data, config, progress, epoch_done=True))
            progress.epoch, progress.step = progress.epoch + 1, 0
        checkpoints.wait()  # a finished run's checkpoint is on disk before its status says so
    except (Exception, KeyboardInterrupt) as exc:
        error = exc

    end = outcome(
        error,
        config,
        progress,
        timed_out=stop is not None and stop.timed_out(),
        device=str(where.device if where else config.device),
        steps_per_epoch=records.cadence.steps_per_epoch if records else 0,
    )
    if end.status == "stopped" and learner is not None:
        progress.last_eval = score_test_split(learner, data, where, config, final=True)
        if dist.main:
            payload = checkpoint_payload(learner, data, config, progress, epoch_done=False)
            checkpoints.save(log.run_dir / runs.CHECKPOINT_FILE, payload, wait=True)
            # Consumed only now: a Stop pressed while the trainer was still starting up is not lost.
            stop.stop_file.unlink(missing_ok=True)
    if checkpoints is not None:
        try:
            checkpoints.close()  # whatever the outcome, no write is left half-way
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
