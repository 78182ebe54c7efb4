"""Training curves shaped for drawing: bounded in size however long the run.

A page that redraws a run a few times per second must neither re-read the whole
metrics file each time nor keep every step of a long run in memory. `RunTail`
reads only the lines appended since its last look and folds step records into
at most `max_points` buckets (merging neighbours pairwise when full), so a
million-step run and a 50-step run cost the same to draw.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from core.serving import runs

STEP_FIELDS = ("step", "progress", "loss", "acc", "lr", "img_per_s", "time")
EPOCH_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "img_per_s", "elapsed")
MAX_POINTS = 2000
HEALTH_POINTS = 240  # health records kept per run (each holds every layer): columns of the page's heatmaps


class Thinned:
    """The newest record always, and at most about `limit` records in all, evenly spread over the run:
    when full, every other kept record is dropped and from then on only every `stride`-th new one is kept."""

    def __init__(self, limit: int):
        self.limit = max(2, limit)
        self.stride, self.seen = 1, 0
        self.kept: list[dict[str, Any]] = []
        self.last: dict[str, Any] | None = None

    def add(self, record: dict[str, Any]) -> None:
        step = _number(record.get("step"))
        if self.last is not None and step is not None and step <= _number(self.last.get("step"), -1):
            self.rewind(step)
        self.last = record
        self.seen += 1
        if self.seen % self.stride == 0:
            self.kept.append(record)
            if len(self.kept) > self.limit:
                self.kept = self.kept[::-1][::2][::-1]  # every other one, the newest kept
                self.stride *= 2

    def rewind(self, step: float) -> None:
        """A resumed run replays steps after its last checkpoint: forget what it is about to redo."""
        self.kept = [r for r in self.kept if _number(r.get("step"), -1) < step]
        self.last = self.kept[-1] if self.kept else None

    def items(self) -> list[dict[str, Any]]:
        return self.kept + ([self.last] if self.last is not None and (not self.kept or self.kept[-1] is not self.last) else [])


class Curves:
    """Step and epoch curves folded from metrics records (see core.serving.runs for the record kinds)."""

    def __init__(self, max_points: int = MAX_POINTS):
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self.max_points = max_points
        self.stride = 1  # raw step records per kept point
        self.points: list[dict[str, float]] = []
        self._bucket: list[dict[str, float]] = []
        self.epochs: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {}
        self.last_step: dict[str, Any] = {}
        self.steps_per_epoch: int | None = None
        self.total_steps: int | None = None
        self._segment_start: tuple[float, float] | None = None  # (time, progress) when this process began stepping
        self._health = Thinned(HEALTH_POINTS)  # per-layer health records (core.training.health), thinned
        self.notices: dict[str, dict[str, Any]] = {}  # what the run switched off (core/training/fallback.py), by `what`

    # ------------------------------------------------------------------ folding

    def add(self, records: Iterable[dict[str, Any]]) -> int:
        n = 0
        for record in records:
            n += 1
            kind = record.get("kind")
            if kind == "step":
                self._add_step(record)
            elif kind == "epoch":
                self._add_epoch(record)
            elif kind == "health":
                self._health.add(record)  # rewinds itself: it is written before its interval's step record
            elif kind == "notice" and record.get("what"):
                self.notices[record["what"]] = record
            elif kind == "status":
                self.status = record
                if record.get("steps_per_epoch"):
                    self.steps_per_epoch = int(record["steps_per_epoch"])
                    self.total_steps = int(record.get("total_steps") or 0) or None
                if record.get("status") == "running":
                    self._segment_start = None
        return n

    def _add_step(self, record: dict[str, Any]) -> None:
        step = _number(record.get("step"))
        if step is None:
            return
        # A resumed run replays the steps after its last checkpoint: draw the path the
        # weights really took, not both attempts on top of each other.
        if self.last_step and step <= _number(self.last_step.get("step"), -1):
            self._rewind(step)
        point = {k: _number(record.get(k)) for k in STEP_FIELDS}
        self.last_step = record
        if self._segment_start is None and point["time"] is not None and point["progress"] is not None:
            self._segment_start = (point["time"], point["progress"])
        self._bucket.append(point)
        if len(self._bucket) >= self.stride:
            self.points.append(_mean_point(self._bucket))
            self._bucket = []
            if len(self.points) > self.max_points:
                self.points = [_mean_point(self.points[i : i + 2]) for i in range(0, len(self.points), 2)]
                self.stride *= 2

    def _rewind(self, step: float) -> None:
        self.points = [p for p in self.points if (p["step"] or 0) < step]
        self._bucket = [p for p in self._bucket if (p["step"] or 0) < step]

    def _add_epoch(self, record: dict[str, Any]) -> None:
        epoch = int(record.get("epoch", 0))
        self.epochs = [e for e in self.epochs if int(e.get("epoch", 0)) < epoch]
        self.epochs.append(record)

    # ------------------------------------------------------------------ views

    def steps_frame(self) -> pd.DataFrame:
        """Kept step points plus the newest one, so the curve always reaches 'now'."""
        rows = list(self.points)
        if self._bucket:
            rows.append(_mean_point(self._bucket))
        return pd.DataFrame(rows, columns=list(STEP_FIELDS))

    def epochs_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: e.get(k) for k in EPOCH_FIELDS} for e in self.epochs], columns=list(EPOCH_FIELDS))

    @property
    def health(self) -> list[dict[str, Any]]:
        """Health records (kind "health"): at most about HEALTH_POINTS spread over the run, and the newest."""
        return self._health.items()

    @property
    def state(self) -> str:
        return str(self.status.get("status", "created"))

    @property
    def final_epoch(self) -> dict[str, Any]:
        """The newest epoch record that carries per-class results (the last epoch has the confusion matrix)."""
        for record in reversed(self.epochs):
            if "per_class" in record:
                return record
        return {}

    def eta_seconds(self, epochs: int, now: float | None = None) -> float | None:
        """Seconds left, from wall-clock progress since this training process started stepping
        (so evaluation time is included and a resumed run is not judged by its old speed)."""
        if not self.last_step or self._segment_start is None:
            return None
        t0, p0 = self._segment_start
        t1 = _number(self.last_step.get("time"))
        p1 = _number(self.last_step.get("progress"))
        if t1 is None or p1 is None or p1 <= p0 or t1 <= t0:
            return None
        rate = (p1 - p0) / (t1 - t0)
        left = max(0.0, (epochs - p1) / rate)
        if now is not None:
            left = max(0.0, left - (now - t1))
        return left


class RunTail(Curves):
    """Curves of one run folder, read incrementally: `update()` parses only new lines."""

    def __init__(self, run_dir: str | os.PathLike, max_points: int = MAX_POINTS):
        super().__init__(max_points)
        self.run_dir = Path(run_dir)
        self.offset = 0
        self.changed_at = time.time()  # when new lines last arrived: a silent 'running' run may be dead

    def update(self) -> int:
        records, self.offset = runs.read_metrics(self.run_dir, self.offset)
        if records:
            self.changed_at = time.time()
        return self.add(records)


def curves_of(records: Iterable[dict[str, Any]], max_points: int = MAX_POINTS) -> Curves:
    curves = Curves(max_points)
    curves.add(records)
    return curves


def ema(values: Iterable[float | None], weight: float) -> list[float | None]:
    """TensorBoard-style smoothing: an exponential moving average, debiased so the
    start is not dragged towards zero. weight 0 returns the values unchanged."""
    if not 0 <= weight < 1:
        raise ValueError("weight must be in [0, 1)")
    out: list[float | None] = []
    avg, n = 0.0, 0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(None)
            continue
        n += 1
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**n) if weight else v)
    return out


def downsample(frame: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Every k-th row (always keeping the last) so at most about `max_points` rows remain."""
    if len(frame) <= max_points:
        return frame
    k = math.ceil(len(frame) / max_points)
    index = list(range(0, len(frame), k))
    if index[-1] != len(frame) - 1:
        index.append(len(frame) - 1)
    return frame.iloc[index]


def format_duration(seconds: float | None) -> str:
    """83 -> '1:23', 3725 -> '1:02:05'; None -> '–'."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _number(value: Any, default: float | None = None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def _mean_point(points: list[dict[str, float | None]]) -> dict[str, float | None]:
    if len(points) == 1:
        return dict(points[0])
    out: dict[str, float | None] = {}
    for key in STEP_FIELDS:
        values = [p[key] for p in points if p.get(key) is not None and math.isfinite(p[key])]
        out[key] = sum(values) / len(values) if values else None
    # The x position is where the bucket ends, so the newest point sits at the newest step.
    out["step"] = points[-1]["step"]
    out["progress"] = points[-1]["progress"]
    out["time"] = points[-1]["time"]
    out["img_per_s"] = points[-1]["img_per_s"]  # the run's throughput so far (core.training.loop.Progress): the newest is the truest
    return out
