"""Where a run's process stands among others and what it tells the world: the torchrun group it belongs to
(`Dist`), its records in the run folder (`RunLog`), when the loop writes them (`Cadence`) and what it measures then
(`Records`), and the ways it may be asked to stop (`StopCheck`).
"""

from __future__ import annotations

import datetime
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core import device as dev
from core.serving import runs
from core.training.config import TrainConfig
from core.training.fastloop import IntervalReads
from core.training.health import Probe

HEALTH_RECORDS_PER_EPOCH = 10  # at most about this many health records an epoch (each costs a few ms; see Cadence)
DIST_TIMEOUT_S = int(os.environ.get("PLAYGROUND_DIST_TIMEOUT", 180))


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


@dataclass(frozen=True)
class Cadence:
    """When the loop looks up from training: a step record every `log_every` steps (and every epoch's last), a
    health record every `health_every` (a multiple of log_every)."""

    epochs: int
    steps_per_epoch: int
    log_every: int
    health_every: int

    @classmethod
    def for_run(cls, config: TrainConfig, steps_per_epoch: int) -> Cadence:
        log_every = config.log_every or max(1, steps_per_epoch // 25)
        # Health at log intervals, but at most about HEALTH_RECORDS_PER_EPOCH an epoch: a small net's step is so cheap
        # (LeNet: ~15 ms on 2 CPU cores) that measuring every 4th step would cost more than the 5% it may.
        health_every = log_every * math.ceil(max(1, steps_per_epoch // HEALTH_RECORDS_PER_EPOCH) / log_every)
        return cls(config.epochs, steps_per_epoch, log_every, health_every)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def logs_after(self, step: int) -> bool:
        """Whether batch `step` (1-based, in its epoch) ends a log interval; the epoch's last batch always does."""
        return step % self.log_every == 0 or step == self.steps_per_epoch

    def health_after(self, step: int) -> bool:
        """Whether the log interval that batch `step` ends also gets a health record."""
        return step % self.health_every == 0


@dataclass
class Records:
    """What the loop writes while it trains: where (`log`), when (`cadence`), the log intervals' figures on their way
    from the device (`reads`, core/training/fastloop.py) and the per-layer health probe (`health`, rank 0 only: the
    other ranks' gradients are the same after DDP's all-reduce)."""

    log: RunLog
    cadence: Cadence
    reads: IntervalReads
    health: Probe | None = None
