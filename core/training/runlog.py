"""Where a run's process stands among others and what it tells the world: the torchrun group it belongs to
(`Dist`), its records in the run folder (`RunLog`) and the ways it may be asked to stop (`StopCheck`).
"""

from __future__ import annotations

import datetime
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
