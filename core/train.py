"""The training loop and `python -m core.train`.

Read it top to bottom: TrainConfig, then `train()`, which sets up data, model
and optimizer, then runs `train_one_epoch` / `evaluate` per epoch and writes
every record to the run folder. The same code runs in the studio (a child
process), on the command line and under torchrun (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from core import device as dev
from core import runs
from core.data import IMAGENET_MEAN, IMAGENET_STD, BatchLoader, Split, load_dataset, normalize_batch
from core.errors import PlaygroundError
from core.models import PRESETS, build, count_parameters, preset_input_size

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
DIST_TIMEOUT_S = int(os.environ.get("PLAYGROUND_DIST_TIMEOUT", 180))


@dataclass
class TrainConfig:
    """Everything that defines a run; round-trips through config.json."""

    model: str = "cifar10_quick"  # a preset name, or "custom" with `layers`
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
    tta: bool = False  # evaluate on the image and its mirror image
    channels_last: bool = True
    compile: bool = False
    data_dir: str | None = None
    log_every: int = 0  # steps between step records; 0: about 25 per epoch

    @classmethod
    def for_model(cls, model: str, **overrides: Any) -> "TrainConfig":
        """The recipe a preset trains best with, then the caller's overrides."""
        recipe: dict[str, Any] = {}
        if model == "speedrun":
            from core.speedrun import RECIPE

            recipe = {k: v for k, v in RECIPE.items() if k in _FIELDS}
            if isinstance(recipe.get("augment"), str):  # the recipe names its augmentation ("flip+crop")
                recipe["augment"] = recipe["augment"] != "none"
        elif model in ("vgg16", "alexnet", "resnet18"):
            recipe = {"lr": 0.01, "batch_size": 64, "epochs": 5}
        elif model in ("cifar10_quick", "lenet5", "mycnn", "custom"):
            recipe = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4}
        return cls(**{"model": model, **recipe, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.model not in PRESETS and self.model != "custom":
            raise PlaygroundError(f"Unknown model {self.model!r}; choose one of {', '.join(PRESETS)} or 'custom' with layers.")
        if self.model == "custom" and not self.layers:
            raise PlaygroundError("A custom model needs a layer spec (`layers`).")
        if self.optimizer not in OPTIMIZERS:
            raise PlaygroundError(f"Unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise PlaygroundError(f"Unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        checks = [(self.epochs >= 1, "epochs must be at least 1"), (self.batch_size >= 1, "batch size must be at least 1"),
                  (self.lr > 0 and math.isfinite(self.lr), "the learning rate must be a positive number"),
                  (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
                  (0 <= self.warmup < 1, "warmup must be a fraction in [0, 1)"),
                  (0 <= self.warmup_start <= 1, "warmup_start must be a fraction in [0, 1]"),
                  (self.ema is None or 0 < self.ema < 1, "ema must be a decay in (0, 1)")]
        for ok, message in checks:
            if not ok:
                raise PlaygroundError(message[0].upper() + message[1:] + ".")


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
    def from_env(cls) -> "Dist":
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


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
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
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass
class Normalization:
    mean: torch.Tensor
    std: torch.Tensor

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, norm: Normalization, input_size: int, device: torch.device,
             dtype: torch.dtype, *, tta: bool = False, num_classes: int, dist: Dist = Dist(),
             batch_size: int = 500, channels_last: bool = True) -> dict[str, Any]:
    """Test loss, accuracy, per-class accuracy and the confusion matrix (counts)."""
    loader = BatchLoader(split, batch_size, device, shuffle=False, rank=dist.rank, world_size=dist.world_size, drop_last=False)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.float64, device=device)
    loss_sum = 0.0
    with dev.eval_mode(model):
        for x, y in loader.epoch(0):
            x = normalize_batch(x, norm.mean, norm.std, input_size, channels_last)
            with dev.autocast(device, dtype):
                logits = model(x)
                if tta:
                    logits = (logits + model(x.flip(-1))) / 2
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes**2).double()
    if dist.enabled:
        torch.distributed.all_reduce(confusion)
        loss_sum = dist.all_reduce_sum([loss_sum], device)[0]
    cm = confusion.view(num_classes, num_classes).long().cpu()
    n = int(cm.sum())
    per_class = (cm.diag().double() / cm.sum(1).clamp_min(1)).tolist()
    return {"test_loss": loss_sum / max(1, n), "test_acc": float(cm.diag().sum()) / max(1, n), "n": n,
            "per_class": per_class, "confusion": cm.tolist()}


class StopRequested(Exception):
    pass


# --------------------------------------------------------------------------- train


def _versions() -> dict[str, str]:
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    inner = getattr(model, "module", model)  # DDP wraps the model
    inner = getattr(inner, "_orig_mod", inner)  # and torch.compile too
    # Contiguous copies: channels_last weights would otherwise leak into exports (safetensors refuses them).
    return {k: v.detach().cpu().contiguous().clone() for k, v in inner.state_dict().items()}


def train(config: TrainConfig, run_dir: str | os.PathLike | None = None, *, resume: bool = False,
          stop_event: threading.Event | None = None, on_record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) one run into `run_dir` and return the CLI's result dict."""
    started = time.perf_counter()
    config.validate()
    dist = Dist.from_env()
    if dist.enabled and not torch.distributed.is_initialized():
        backend = dev.distributed_backend(config.device)  # one GPU per process, or a one-line error
        if backend == "nccl":
            torch.cuda.set_device(dist.local_rank)
        # A bounded timeout: a rank that dies or hangs ends the job instead of stalling it for 30 minutes.
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=DIST_TIMEOUT_S))
    device = dev.resolve_device(config.device, dist.local_rank if dist.enabled else None)
    dtype = dev.resolve_precision(config.precision, device)
    if dist.enabled and config.batch_size % dist.world_size:
        raise PlaygroundError(f"The batch size {config.batch_size} must divide evenly across {dist.world_size} processes.")

    run_dir = Path(run_dir) if run_dir else runs.MODELS_DIR / runs.new_run_id(config.model, config.data)
    writer = None
    elapsed_before = 0.0  # a resumed run's clock continues where it stopped
    if resume:
        elapsed_before = float(runs.summarize(runs.read_metrics(run_dir)[0]).get("seconds") or 0.0)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and not (run_dir / runs.CONFIG_FILE).exists():
            # Provisional, so a run that fails while loading data is still listed with its error.
            runs.write_json(run_dir / runs.CONFIG_FILE, {**config.to_dict(), "run_id": run_dir.name, "created": time.time()})
        writer = runs.MetricsWriter(run_dir)

    def emit(record: dict[str, Any]) -> None:
        record.setdefault("elapsed", round(elapsed_before + time.perf_counter() - started, 3))
        if writer:
            writer.write(record)
        if on_record and dist.main:
            on_record(record)

    try:
        checkpoint = runs.load_checkpoint(run_dir) if resume else None
        torch.manual_seed(config.seed)

        # ---- data
        input_size = config.image_size or preset_input_size(config.model)
        data_size = input_size if config.data.startswith("imagefolder:") else 32
        ds = load_dataset(config.data, image_size=data_size, seed=config.seed, data_dir=config.data_dir)
        num_classes = len(ds.classes)
        pretrained = config.weights is not None and config.model in ("resnet18", "vgg16", "alexnet") and not Path(str(config.weights)).is_file()
        if checkpoint:
            mean, std = checkpoint["normalization"]["mean"], checkpoint["normalization"]["std"]
        elif pretrained:
            mean, std = IMAGENET_MEAN, IMAGENET_STD  # pretrained features expect ImageNet statistics
        else:
            mean, std = ds.channel_stats()
        norm = Normalization(torch.tensor(mean, device=device), torch.tensor(std, device=device))
        per_rank_batch = config.batch_size // dist.world_size
        train_loader = BatchLoader(ds.train, per_rank_batch, device, shuffle=True, augment=config.augment,
                                   crop_padding=config.crop_padding, seed=config.seed, rank=dist.rank, world_size=dist.world_size)
        steps_per_epoch = len(train_loader)
        total_steps = steps_per_epoch * config.epochs
        log_every = config.log_every or max(1, steps_per_epoch // 25)

        # ---- model (built on the CPU, then moved once: the only .to(device) in the loop's life)
        spec_or_name = config.layers if config.model == "custom" else config.model
        model = build(spec_or_name, num_classes=num_classes, in_channels=3, weights=None if checkpoint else config.weights,
                      freeze=config.freeze_backbone, input_size=input_size)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        model = model.to(device=device, memory_format=memory_format)
        if checkpoint:
            model.load_state_dict(checkpoint.get("train_model", checkpoint["model"]))
        elif hasattr(model, "init_from_data"):
            sample = ds.train.images[:5000].to(device)
            model.init_from_data(normalize_batch(sample, norm.mean, norm.std, input_size, config.channels_last))
        trainable, total = count_parameters(model)
        optimizer = make_optimizer(model, config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config.schedule, s, total_steps, config.warmup, config.warmup_start))
        ema = None
        if config.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
        start_epoch, start_step, global_step = 0, 0, 0
        if checkpoint:
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            if ema is not None and "ema" in checkpoint:
                ema.load_state_dict(checkpoint["ema"])
            start_epoch, start_step = int(checkpoint["epoch"]), int(checkpoint.get("step_in_epoch", 0))
            global_step = int(checkpoint.get("global_step", start_epoch * steps_per_epoch + start_step))
        step_model: nn.Module = model
        if config.compile:
            step_model = torch.compile(model)
        if dist.enabled:
            step_model = torch.nn.parallel.DistributedDataParallel(
                step_model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

        # ---- config.json (rank 0 only)
        if dist.main and not checkpoint:
            runs.write_json(run_dir / runs.CONFIG_FILE, {
                **config.to_dict(), "run_id": run_dir.name, "created": time.time(),
                "classes": ds.classes, "num_classes": num_classes, "input_size": input_size, "data_size": data_size,
                "normalization": {"mean": list(mean), "std": list(std)},
                "dataset": {"n_train": len(ds.train), "n_test": len(ds.test), "skipped": ds.skipped,
                            "has_test_split": ds.has_test_split},
                "params": {"trainable": trainable, "total": total},
                "env": {"device": str(device), "precision": dev.precision_name(dtype), "world_size": dist.world_size,
                        "per_rank_batch_size": per_rank_batch, "effective_batch_size": per_rank_batch * dist.world_size,
                        "lr_scaling": "none: the global batch is split across processes, so the lr is unchanged",
                        "host": socket.gethostname(), **_versions()},
            })
    except PlaygroundError as exc:
        emit({"kind": "status", "status": "failed", "message": str(exc), "epochs_done": 0})
        if writer:
            writer.close()
        raise

    def save(epoch: int, step_in_epoch: int, metrics: dict[str, Any] | None = None) -> None:
        if not dist.main:
            return
        eval_model = ema.module if ema is not None else model
        payload = {"model": _state_dict(eval_model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                   "classes": ds.classes, "normalization": norm.as_dict(), "image_size": data_size, "input_size": input_size,
                   "config": config.to_dict(), "metrics": metrics or {}}
        if ema is not None:
            payload["train_model"] = _state_dict(model)
            payload["ema"] = ema.state_dict()
        runs.save_checkpoint(run_dir / runs.CHECKPOINT_FILE, payload)

    def stop_requested() -> bool:
        flag = bool(stop_event is not None and stop_event.is_set()) or (run_dir / runs.STOP_FILE).exists() or \
            (config.time_limit is not None and time.perf_counter() - started > config.time_limit)
        if dist.enabled:  # every rank must leave the loop at the same step
            flag = dist.all_reduce_sum([float(flag)], device)[0] > 0
        return flag

    emit({"kind": "status", "status": "running", "pid": os.getpid(), "host": socket.gethostname(),
          "resumed_from_epoch": start_epoch if checkpoint else None, "device": str(device),
          "precision": dev.precision_name(dtype), "steps_per_epoch": steps_per_epoch, "total_steps": total_steps})

    counted_images, counted_time = 0, 0.0  # steady-state throughput: every log interval but the first
    last_eval: dict[str, Any] = {}
    epoch = start_epoch
    status, message = "finished", ""
    try:
        for epoch in range(start_epoch, config.epochs):
            if hasattr(model, "on_epoch_start"):
                model.on_epoch_start(epoch, config.epochs)
            step_model.train()
            first = epoch == start_epoch
            interval_loss = torch.zeros((), device=device)
            interval_correct = torch.zeros((), device=device)
            interval_n, epoch_loss, epoch_correct, epoch_n = 0, 0.0, 0.0, 0
            interval_start = time.perf_counter()
            step = start_step if first else 0
            for x, y in train_loader.epoch(epoch, start_step=step):
                if stop_requested():
                    raise StopRequested
                x = normalize_batch(x, norm.mean, norm.std, input_size, config.channels_last)
                with dev.autocast(device, dtype):
                    logits = step_model(x)
                    loss = loss_fn(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                global_step += 1
                interval_loss += loss.detach() * len(y)
                interval_correct += (logits.argmax(1) == y).sum()
                interval_n += len(y)
                if step % log_every == 0 or step == steps_per_epoch:
                    loss_sum, correct, n = dist.all_reduce_sum([interval_loss.item(), interval_correct.item(), interval_n], device)
                    now = time.perf_counter()
                    rate = n / max(now - interval_start, 1e-9)
                    if not (first and epoch_n == 0 and epoch == 0):
                        counted_images += n
                        counted_time += now - interval_start
                    if not math.isfinite(loss_sum):
                        raise FloatingPointError
                    emit({"kind": "step", "epoch": epoch, "step": global_step, "progress": round(epoch + step / steps_per_epoch, 4),
                          "loss": loss_sum / n, "acc": correct / n, "lr": scheduler.get_last_lr()[0], "img_per_s": round(rate, 1)})
                    epoch_loss += loss_sum
                    epoch_correct += correct
                    epoch_n += int(n)
                    interval_loss.zero_()
                    interval_correct.zero_()
                    interval_n = 0
                    interval_start = time.perf_counter()
            eval_started = time.perf_counter()
            last_eval = evaluate(ema.module if ema is not None else model, ds.test, norm, input_size, device, dtype,
                                 tta=config.tta, num_classes=num_classes, dist=dist, channels_last=config.channels_last)
            record = {"kind": "epoch", "epoch": epoch + 1, "train_loss": epoch_loss / max(1, epoch_n),
                      "train_acc": epoch_correct / max(1, epoch_n), "test_loss": last_eval["test_loss"],
                      "test_acc": last_eval["test_acc"], "lr": scheduler.get_last_lr()[0],
                      "img_per_s": round(counted_images / counted_time, 1) if counted_time else None,
                      "eval_seconds": round(time.perf_counter() - eval_started, 3)}
            if epoch + 1 == config.epochs or len(ds.classes) <= 20:
                record["per_class"] = last_eval["per_class"]
            if epoch + 1 == config.epochs and len(ds.classes) <= 50:
                record["confusion"] = last_eval["confusion"]
            emit(record)
            save(epoch + 1, 0, {"test_acc": last_eval["test_acc"]})
            epoch += 1
    except StopRequested:
        status = "stopped"
        timed_out = config.time_limit is not None and time.perf_counter() - started > config.time_limit
        message = "Time limit reached" if timed_out else "Stopped by request"
        last_eval = evaluate(ema.module if ema is not None else model, ds.test, norm, input_size, device, dtype,
                             tta=config.tta, num_classes=num_classes, dist=dist, channels_last=config.channels_last)
        save(epoch, step, {"test_acc": last_eval["test_acc"]})
        if dist.main:
            # Consumed only now: a Stop pressed while the trainer was still starting up is not lost.
            (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
        message += f"; checkpoint saved at epoch {epoch} step {step}. Resume to continue."
    except FloatingPointError:
        status = "diverged"
        message = (f"The loss became NaN/inf at step {global_step}: the learning rate ({config.lr:g}) is probably too high. "
                   "Lower it (e.g. by 10x) and start again; the last good checkpoint is kept.")
    except KeyboardInterrupt:
        status, message = "interrupted", "Interrupted; resume from the last checkpoint."
    except PlaygroundError as exc:
        status, message = "failed", str(exc)
    except torch.distributed.DistError as exc:
        status = "failed"
        message = (f"Another training process stopped or stopped answering ({str(exc).splitlines()[0][:200]}); "
                   "the job was ended. Resume from the last checkpoint.")
    except RuntimeError as exc:
        if not _is_oom(exc):
            emit({"kind": "status", "status": "failed", "message": f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                  "epochs_done": epoch})
            raise
        status = "failed"
        message = (f"Out of memory at batch size {config.batch_size} on {device}. Use a smaller batch size "
                   "(or a smaller image size / model). The last checkpoint is kept.")
    seconds = time.perf_counter() - started
    final = {"kind": "status", "status": status, "message": message, "epochs_done": epoch,
             "test_acc": last_eval.get("test_acc"), "seconds": round(seconds, 3)}
    if last_eval and len(ds.classes) <= 50:  # a stopped run still gets its per-class results
        final.update(per_class=last_eval["per_class"], confusion=last_eval["confusion"])
    emit(final)
    if writer:
        writer.close()
    result = {"run_dir": str(run_dir), "status": status, "epochs": epoch, "val_acc": last_eval.get("test_acc"),
              "train_img_per_s": round(counted_images / counted_time, 1) if counted_time else None,
              "seconds": round(seconds, 2)}
    if status == "failed":
        raise PlaygroundError(message)
    return result


def resume(run_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Continue a run to its configured number of epochs from its last checkpoint."""
    config = TrainConfig.from_dict(runs.read_config(run_dir))
    return train(config, run_dir, resume=True, **kwargs)


# --------------------------------------------------------------------------- command line


def _progress_printer(stream=sys.stderr) -> Callable[[dict[str, Any]], None]:
    tty = stream.isatty()

    def show(r: dict[str, Any]) -> None:
        if r["kind"] == "step" and tty:
            stream.write(f"\repoch {r['epoch'] + 1} step {r['step']}  loss {r['loss']:.3f}  acc {r['acc']:.3f}  "
                         f"lr {r['lr']:.2e}  {r['img_per_s']:.0f} img/s ")
        elif r["kind"] == "epoch":
            stream.write(("\n" if tty else "") + f"epoch {r['epoch']}: train loss {r['train_loss']:.3f} acc {r['train_acc']:.3f} | "
                         f"test loss {r['test_loss']:.3f} acc {r['test_acc']:.3f} | {r['elapsed']:.1f}s\n")
        elif r["kind"] == "status":
            stream.write(f"{r['status']}" + (f": {r['message']}" if r.get("message") else "") + "\n")
        stream.flush()

    return show


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.train", description="Train an image classifier into a run folder.")
    p.add_argument("--model", help="preset name (cifar10_quick, speedrun, lenet5, mycnn, resnet18, vgg16, alexnet) or 'custom'")
    p.add_argument("--layers", help="custom model: a JSON layer spec or a path to one")
    p.add_argument("--data", help="cifar10 | shapes | imagefolder:PATH (folder or .zip)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--weights", help="torchvision weights name (DEFAULT) or a .pth/.safetensors file")
    p.add_argument("--freeze-backbone", action="store_true", default=None)
    p.add_argument("--image-size", type=int)
    p.add_argument("--device", choices=dev.DEVICE_CHOICES)
    p.add_argument("--precision", choices=dev.PRECISION_CHOICES)
    p.add_argument("--seed", type=int)
    p.add_argument("--time-limit", type=float, metavar="SECONDS")
    p.add_argument("--compile", action="store_true", default=None)
    p.add_argument("--data-dir")
    p.add_argument("--out", metavar="RUN_DIR", help="the run folder itself (default models/<run-id>)")
    p.add_argument("--config", metavar="JSON", help="a config.json to start from (the studio uses this)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run to its configured epochs")
    return p


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (torchrun stopping the other ranks, `kill`) saves nothing mid-step but records the run as interrupted.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.resume:
            result = resume(args.resume, on_record=_progress_printer())
        else:
            overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "label_smoothing",
                                                        "schedule", "weights", "freeze_backbone", "image_size", "device",
                                                        "precision", "seed", "time_limit", "compile", "data_dir", "data")}
            if args.config:
                base = TrainConfig.from_dict(json.loads(Path(args.config).read_text())).to_dict()
                config = TrainConfig.from_dict({**base, **{k: v for k, v in overrides.items() if v is not None},
                                                **({"model": args.model} if args.model else {})})
            else:
                if not args.model or not args.data:
                    raise PlaygroundError("--model and --data are required (or --resume RUN_DIR).")
                if args.layers:
                    text = Path(args.layers).read_text() if Path(args.layers).is_file() else args.layers
                    overrides["layers"] = json.loads(text)
                config = TrainConfig.for_model(args.model, **overrides)
            result = train(config, args.out, on_record=_progress_printer())
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"error: the layer spec / config is not valid JSON ({exc}).", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if Dist.from_env().main:
        print(json.dumps(result))
    return 0 if result["status"] in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
