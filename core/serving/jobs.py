"""Training runs as child processes, in a fair queue that outlives the app.

The studio never trains inside Streamlit's script thread, and starting a run never
fails because another one is training: Start writes the run folder with a "queued"
status record and the queue takes it from there. At most K runs train at once per
device (Settings.runs_per_device: 1 per GPU and 1 for the CPU unless configured),
first come first served, workspaces taking turns (JobRegistry.queued); a run that needs several GPUs waits for
them instead of being overtaken by smaller ones.

The run folders are the queue's only state, so a restarted app, or a second app
process on the same models folder, finds every queued and running run again:

- queued:  {"status": "queued", "queued_at", "mode": "start"|"resume", "nproc", "device",
           "workspace"}; no process owns the run yet.
- running: a dispatcher, holding ROOT/.queue/lock, hands the run to a process and writes
           {"status": "running", "dispatched": true, "pid", "slots"} before it lets go of the
           lock; the trainer then writes its own "running" record, steps, epochs and a final
           status. Counting the slots in use is a read of the folders under that same lock, so
           two app processes never start more than K runs between them.
- A training process holds RUN/train.lock (core.serving.worker.claim) for its whole life: a run handed
  out twice (a crash between handing it over and writing the record, two dispatchers) trains
  once. A process that dies before training began puts the run back at its place in the queue
  (core.serving.runs.run_info reads it so); after MAX_ATTEMPTS such deaths it is marked failed.

Every process is a new session (`start_new_session`): Streamlit's reruns and Ctrl+C in its
terminal do not reach a trainer, closing the tab or restarting the app loses nothing, a
crash or out-of-memory ends one run only, and Stop is a file the trainer looks for every
batch. The registry keeps one spare worker warm (core.serving.worker: torch and the trainer
imported, CUDA initialised) so a run starts without those seconds of imports.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import json
import logging
import os
import signal
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.spec import DataSpec
from core.errors import PlaygroundError
from core.files import write_json
from core.serving import runs
from core.serving.processes import QUEUE_DIR, Workers
from core.serving.shared import Settings, check_quota
from core.serving.worker import last_error, run_locked
from core.training.config import TrainConfig

REQUEST_FILE = "request.json"
MAX_ATTEMPTS = 3  # processes that may die before a run's training begins, before it is marked failed
TICK_S = 0.5  # how often the dispatcher looks for finished runs and free devices
log = logging.getLogger("torch_playground.jobs")


# --------------------------------------------------------------------------- devices


def device_pools() -> dict[str, list[str]]:
    """The slots runs can be given on this machine: 'cpu' always, 'cuda:i' per GPU, 'mps'."""
    import torch

    from core.device import mps_available

    pools = {"cpu": ["cpu"]}
    if torch.cuda.is_available():
        pools["cuda"] = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    elif mps_available():
        pools["mps"] = ["mps"]
    return pools


def default_pool(pools: dict[str, list[str]]) -> str:
    return "cuda" if "cuda" in pools else "mps" if "mps" in pools else "cpu"


def _pool_of_device(device: str | None, pools: dict[str, list[str]]) -> str:
    """The pool a run's device setting draws on; an unavailable one fails fast in the trainer, on the CPU's turn."""
    kind = str(device or "auto").split(":")[0]
    if kind == "auto":
        return default_pool(pools)
    return kind if kind in pools else "cpu"


@contextlib.contextmanager
def queue_lock(root: Path, wait_s: float) -> Iterator[bool]:
    """The one lock every dispatcher of `root` takes (across processes); yields False if not had in `wait_s`."""
    (root / QUEUE_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(root / QUEUE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.02)
        yield True
    finally:
        os.close(fd)


@dataclass
class QueueSpot:
    """Where a queued run stands: its place in line for its device and when it should start."""

    position: int  # 1: next to start
    pool: str  # "cpu", "cuda", "mps"
    training: int  # runs training now on that pool
    capacity: int  # runs that may train at once on that pool
    eta_s: float | None  # seconds until it starts, from the durations of finished runs; None: no basis yet


# --------------------------------------------------------------------------- the registry


class JobRegistry:
    """The queue and the training processes of one models folder, as seen from one app process."""

    def __init__(
        self, root: str | os.PathLike | None = None, settings: Settings | None = None, *, warm: bool | None = None, autostart: bool = True
    ):
        self.root = Path(root or runs.MODELS_DIR)
        self.settings = settings or Settings.load()
        self.pools = device_pools()
        self.workers = Workers(self.root, self.settings.warm_worker if warm is None else warm)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._host = socket.gethostname()
        self.workers.ensure_spare()
        if autostart:
            self.ensure_dispatcher()  # runs queued before a restart start as soon as the app is back

    def for_workspace(self, workspace: str | None, *, operator: bool = False) -> WorkspaceJobs:
        return WorkspaceJobs(self, workspace, operator=operator)

    # ------------------------------------------------------------------ starting

    def enqueue(self, config: TrainConfig, *, nproc: int = 1, workspace: str | None = None) -> Path:
        """Create the run folder and put it in the queue; returns the folder at once."""
        return self.enqueue_many([config], nproc=nproc, workspace=workspace)[0]

    def enqueue_many(self, configs: list[TrainConfig], *, nproc: int = 1, workspace: str | None = None) -> list[Path]:
        """Queue several runs at once (a sweep's): all of them or, past a quota, none."""
        for config in configs:
            config.validate()
        # Under the queue's lock: two quick clicks from one workspace cannot both slip under its quota.
        with queue_lock(self.root, 10.0) as locked:
            if not locked:
                raise PlaygroundError("The queue is busy; press Start again in a moment.")
            if self.settings.shared and workspace:
                check_quota(runs.list_runs(self.root, workspace), self.settings, new_runs=len(configs))
            folders = []
            for config in configs:
                run_dir = self.root / runs.new_run_id(config.model, config.data)
                run_dir.mkdir()  # exist_ok=False: two sessions can never share a folder
                write_json(run_dir / REQUEST_FILE, config.to_dict())
                # A provisional config.json so the run is listed at once; the trainer rewrites it in full.
                runs.write_config(run_dir, config.to_dict())
                self._queue(run_dir, "start", nproc, config.device, workspace)
                folders.append(run_dir)
        return folders

    def start_many(self, configs: list[TrainConfig], *, workspace: str | None = None) -> list[Path]:
        """Queue several runs and start what the devices have room for."""
        folders = self.enqueue_many(configs, workspace=workspace)
        self.dispatch()
        self.ensure_dispatcher()
        return folders

    def start(self, config: TrainConfig, *, nproc: int = 1, workspace: str | None = None) -> Path:
        """Queue a run and start it now if its device has a free slot (else it waits its turn)."""
        run_dir = self.enqueue(config, nproc=nproc, workspace=workspace)
        self.dispatch()
        self.ensure_dispatcher()
        return run_dir

    def resume(self, run_dir: str | os.PathLike, *, workspace: str | None = None, restart: bool = False) -> Path:
        """Queue a stopped run to continue from its checkpoint; `restart`: one that never saved a checkpoint (it
        was stopped in the queue or while starting) is queued from the beginning instead."""
        run_dir = Path(run_dir)
        info = runs.run_info(run_dir)
        if info.active:
            raise PlaygroundError(f"Run {info.run_id} is already {'queued' if info.status == 'queued' else 'training'}.")
        if not info.has_checkpoint and restart and (run_dir / REQUEST_FILE).exists():
            with queue_lock(self.root, 10.0) as locked:
                if not locked:
                    raise PlaygroundError("The queue is busy; try again in a moment.")
                self._queue(run_dir, "start", 1, info.config.get("device", "auto"), info.workspace)
            self.dispatch()
            self.ensure_dispatcher()
            return run_dir
        if not info.has_checkpoint:
            raise PlaygroundError(f"Run {info.run_id} has no checkpoint to resume from; start it again instead.")
        if info.epochs_done >= int(info.config.get("epochs", 0)):
            raise PlaygroundError(f"Run {info.run_id} already finished all {info.config.get('epochs')} epochs.")
        world = int(info.config.get("env", {}).get("world_size", 1))
        with queue_lock(self.root, 10.0) as locked:
            if not locked:
                raise PlaygroundError("The queue is busy; press Resume again in a moment.")
            if runs.run_info(run_dir).active:  # a second click, or another session
                raise PlaygroundError(f"Run {info.run_id} is already queued or training.")
            if self.settings.shared and workspace:
                check_quota(runs.list_runs(self.root, workspace), self.settings, new_runs=0)
            self._queue(run_dir, "resume", world, info.config.get("device", "auto"), info.workspace)
        self.dispatch()
        self.ensure_dispatcher()
        return run_dir

    def _queue(self, run_dir: Path, mode: str, nproc: int, device: str, workspace: str | None) -> None:
        (run_dir / runs.STOP_FILE).unlink(missing_ok=True)  # a stale request must not stop the new process
        runs.append_status(
            run_dir,
            {"status": "queued", "queued_at": time.time(), "mode": mode, "nproc": int(nproc), "device": device, "workspace": workspace},
        )

    # ------------------------------------------------------------------ stopping

    def stop(self, run_dir: str | os.PathLike) -> None:
        """A queued run leaves the queue; a training one stops after the current batch, saving a checkpoint."""
        run_dir = Path(run_dir)
        with self._lock, queue_lock(self.root, 10.0) as locked:
            if not locked:
                raise PlaygroundError("The queue is busy; press Stop again in a moment.")
            info = runs.run_info(run_dir)
            if info.status == "queued" and not run_locked(run_dir):
                message = "Removed from the queue before it started."
                message += " Resume when you like." if info.resumable or info.has_checkpoint else " Start it again when you like."
                runs.append_status(run_dir, {"status": "stopped", "message": message, "epochs_done": info.epochs_done})
                return
        runs.request_stop(run_dir)

    def kill(self, run_dir: str | os.PathLike) -> None:
        """Last resort for a trainer that does not answer Stop: SIGTERM its process group."""
        run_dir = Path(run_dir)
        proc = self.workers.children.get(run_dir.name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            return
        info = runs.run_info(run_dir)  # started by another app process, or before a restart
        if info.status == "running" and info.pid and info.host == self._host:
            pid = int(info.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:  # a session leader we started: end torchrun's ranks too
                    os.killpg(pid, signal.SIGTERM)
                else:
                    os.kill(pid, signal.SIGTERM)

    def delete(self, run_dir: str | os.PathLike) -> None:
        runs.delete_run(run_dir, self.root)

    # ------------------------------------------------------------------ the queue

    def queued(self, infos: list[runs.RunInfo] | None = None) -> list[runs.RunInfo]:
        """Runs waiting, in the order they will start: first come first served, taking turns across workspaces.

        A workspace's waiting runs go in rounds: its first in round 1, its second in round 2, and so on, each
        pushed back by one round for every run of that workspace that has started since the longest-waiting run
        was queued (it has had that many turns already). Rounds go in order; within a round the earlier request
        goes first. One student's sweep of nine therefore never makes another student's single run wait behind
        all nine. Outside shared mode every run is in one workspace: plain first come first served.
        """
        infos = runs.list_runs(self.root) if infos is None else infos
        waiting = sorted(
            (r for r in infos if r.status == "queued" and r.queue), key=lambda r: (float(r.queue.get("queued_at") or 0), r.run_id)
        )
        if not waiting:
            return []
        since = float(waiting[0].queue.get("queued_at") or 0)
        turns = Counter(r.workspace for r in infos if r.status != "queued" and r.started is not None and r.started >= since)
        order = []
        for r in waiting:
            order.append((turns[r.workspace], float(r.queue.get("queued_at") or 0), r.run_id, r))
            turns[r.workspace] += 1
        return [r for *_, r in sorted(order, key=lambda o: o[:3])]

    def _slots_of(self, info: runs.RunInfo) -> list[str]:
        """The slots a running run holds: recorded by the queue, else read off its device (a CLI run)."""
        if info.slots:
            return list(info.slots)
        env = info.config.get("env") or {}
        device = str(env.get("device") or info.config.get("device") or "auto")
        pool = _pool_of_device(device, self.pools)
        if pool != "cuda":
            return [pool]
        first = int(device.split(":")[1]) if ":" in device else 0
        world = int(env.get("world_size", 1))
        return [f"cuda:{(first + i) % len(self.pools['cuda'])}" for i in range(world)]

    def _capacity(self, pool: str) -> int:
        return self.settings.runs_per_device * len(self.pools.get(pool, ["cpu"]))

    def _used(self, infos: list[runs.RunInfo]) -> Counter:
        used: Counter = Counter()
        for info in infos:
            if info.status == "running" and info.host in (None, self._host):
                used.update(self._slots_of(info))
        return used

    def _free_slots(self, pool: str, nproc: int, used: Counter) -> list[str] | None:
        k = self.settings.runs_per_device
        if pool == "cuda":
            free = sorted((s for s in self.pools["cuda"] if used[s] < k), key=lambda s: (used[s], s))
            return free[:nproc] if len(free) >= nproc else None
        return [pool] if used[pool] < k else None

    def dispatch(self, wait_s: float = 5.0) -> list[Path]:
        """Start queued runs on free slots, in queue order; returns the runs started."""
        started: list[Path] = []
        with self._lock, queue_lock(self.root, wait_s) as locked:
            if not locked or self._closed:
                return started
            infos = runs.list_runs(self.root)
            used = self._used(infos)
            blocked: set[str] = set()
            for info in self.queued(infos):
                pool = _pool_of_device(info.queue.get("device"), self.pools)
                if pool in blocked:
                    continue  # first come first served: nobody overtakes the head of its pool's line
                if info.attempts >= MAX_ATTEMPTS:
                    runs.append_status(
                        info.path,
                        {
                            "status": "failed",
                            "epochs_done": info.epochs_done,
                            "message": f"Its training process died {info.attempts} times before training began "
                            f"(last output: {last_error(info.path) or 'none'}); see train.log in the run folder.",
                        },
                    )
                    continue
                if run_locked(info.path):
                    # A process owns it although no record says so (its dispatcher crashed in between):
                    # it is training, and its device is taken.
                    used.update([pool if pool != "cuda" else self.pools["cuda"][0]])
                    continue
                nproc = int(info.queue.get("nproc", 1))
                slots = self._free_slots(pool, nproc, used)
                if slots is None:
                    blocked.add(pool)
                    continue
                self._launch(info, slots, sharing=sum(used[s] for s in slots))
                used.update(slots)
                started.append(info.path)
        if started:
            self.workers.spare_later()
        return started

    def _launch(self, info: runs.RunInfo, slots: list[str], sharing: int) -> None:
        run_dir, queue = info.path, info.queue
        nproc = int(queue.get("nproc", 1))
        argv = (
            ["--resume", str(run_dir)]
            if queue.get("mode") == "resume"
            else ["--config", str(run_dir / REQUEST_FILE), "--out", str(run_dir)]
        )
        job = {
            "run_dir": str(run_dir),
            "argv": argv,
            "nproc": nproc,
            "sharing": sharing,
            "cuda_devices": [int(s.split(":")[1]) for s in slots if s.startswith("cuda:")],
        }
        record = {
            "status": "running",
            "dispatched": True,
            "host": self._host,
            "slots": slots,
            "queue_wait_s": round(time.time() - float(queue.get("queued_at") or time.time()), 3),
        }
        self.workers.start(run_dir, job, record)

    def poll(self) -> None:
        """Reap finished children so they do not linger as zombies (which look alive)."""
        self.workers.reap()

    def spare_ready(self, timeout: float = 0.0) -> bool:
        """True once the spare worker has finished warming up (the start-up benchmark waits for this)."""
        return self.workers.spare_ready(timeout)

    def ensure_dispatcher(self) -> None:
        """A background thread dispatches while anything is queued or training (then it ends)."""
        with self._lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._dispatch_loop, name=f"queue:{self.root.name}", daemon=True)
            self._thread.start()

    def _dispatch_loop(self) -> None:
        idle = 0
        while not self._closed:
            try:
                self.poll()
                self.dispatch(wait_s=0.0)
                busy = self.workers.busy or any(r.active for r in runs.list_runs(self.root))
            except Exception:
                log.exception("queue dispatch failed")
                busy = True
            idle = 0 if busy else idle + 1
            if idle > 4:
                with self._lock:
                    self._thread = None
                return
            time.sleep(TICK_S)

    def active(self) -> list[str]:
        """Run ids queued or training on this machine: ours, and those other app processes started."""
        self.poll()
        return sorted(set(self.workers.children) | {r.run_id for r in runs.list_runs(self.root) if r.active})

    def wait(self, run_dir: str | os.PathLike, timeout: float | None = None) -> int | None:
        proc = self.workers.children.get(Path(run_dir).name)
        return proc.wait(timeout) if proc else None

    def close(self) -> None:
        """Stop dispatching and end the spare worker; runs already training go on (they are their own sessions)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self.workers.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    # ------------------------------------------------------------------ where a queued run stands

    def queue_spots(self, infos: list[runs.RunInfo] | None = None, now: float | None = None) -> dict[str, QueueSpot]:
        """Every queued run's place in line and estimated start, simulating the queue on the durations
        of finished runs like it (same model and data first) and the progress of the running ones."""
        infos = runs.list_runs(self.root) if infos is None else infos
        now = time.time() if now is None else now
        finished = [r for r in infos if r.status == "finished" and r.seconds and r.epochs_done]
        spots: dict[str, QueueSpot] = {}
        by_pool: dict[str, list[runs.RunInfo]] = {}
        for info in self.queued(infos):
            by_pool.setdefault(_pool_of_device(info.queue.get("device"), self.pools), []).append(info)
        for pool, waiting in by_pool.items():
            capacity = self._capacity(pool)
            training = [
                r
                for r in infos
                if r.status == "running" and pool in {s.split(":")[0] for s in self._slots_of(r)} and r.host in (None, self._host)
            ]
            # One entry per slot: when it frees up (inf: unknown, e.g. nothing has finished yet to judge by).
            free_at = [now] * capacity
            for i, r in enumerate(training[:capacity]):
                left = _remaining_s(r, finished, now)
                free_at[i] = now + left if left is not None else float("inf")
            heapq.heapify(free_at)
            for position, info in enumerate(waiting, start=1):
                nproc = min(int(info.queue.get("nproc", 1)), capacity) if pool == "cuda" else 1
                taken = [heapq.heappop(free_at) for _ in range(nproc)]
                begin = max(taken)
                duration = _estimate_s(info, finished)
                end = begin + duration if duration is not None else float("inf")
                for _ in taken:
                    heapq.heappush(free_at, end)
                spots[info.run_id] = QueueSpot(
                    position, pool, len(training), capacity, None if begin == float("inf") else max(0.0, begin - now)
                )
        return spots


class WorkspaceJobs:
    """What one browser session may do: its workspace's runs only (all of them for the operator, or
    when the studio is not shared)."""

    def __init__(self, registry: JobRegistry, workspace: str | None, *, operator: bool = False):
        self.registry, self.workspace, self.operator = registry, workspace, operator

    def _own(self, run_dir: str | os.PathLike) -> Path:
        run_dir = Path(run_dir)
        if self.registry.settings.shared and not self.operator:
            owner = runs.run_info(run_dir).workspace
            if owner != self.workspace:
                raise PlaygroundError(f"Run {run_dir.name} belongs to another workspace; you can only change your own runs.")
        return run_dir

    def start(self, config: TrainConfig, *, nproc: int = 1) -> Path:
        return self.registry.start(config, nproc=nproc, workspace=self.workspace)

    def resume(self, run_dir: str | os.PathLike) -> Path:
        return self.registry.resume(self._own(run_dir), workspace=None if self.operator else self.workspace)

    def stop(self, run_dir: str | os.PathLike) -> None:
        self.registry.stop(self._own(run_dir))

    def kill(self, run_dir: str | os.PathLike) -> None:
        self.registry.kill(self._own(run_dir))

    def delete(self, run_dir: str | os.PathLike) -> None:
        self.registry.delete(self._own(run_dir))


# --------------------------------------------------------------------------- estimates


def _seconds_per_epoch(info: runs.RunInfo) -> float:
    return float(info.seconds) / max(1, int(info.epochs_done))


def _n_train(info: runs.RunInfo) -> int | None:
    n = (info.config.get("dataset") or {}).get("n_train")
    if n:
        return int(n)
    data = DataSpec.parse(str(info.config.get("data", "")))
    return data.shapes_train if data.kind == "shapes" else None


def _estimate_s(info: runs.RunInfo, finished: list[runs.RunInfo]) -> float | None:
    """Seconds a run will train for (the rest of it), judged by finished runs most like it."""
    c = info.config
    epochs_left = max(1, int(c.get("epochs", 1)) - int(info.epochs_done))
    tiers = [
        [r for r in finished if all(r.config.get(k) == c.get(k) for k in ("model", "data", "batch_size", "device"))],
        [r for r in finished if r.config.get("model") == c.get("model")],
        finished,
    ]
    for tier in tiers:
        if not tier:
            continue
        scale = 1.0
        mine, theirs = _n_train(info), [_n_train(r) for r in tier]
        if tier is not tiers[0] and mine and all(theirs):
            scale = mine / statistics.median(theirs)
        return statistics.median(_seconds_per_epoch(r) for r in tier) * scale * epochs_left
    return None


def estimate_s(config: dict[str, Any], infos: list[runs.RunInfo]) -> float | None:
    """Seconds a new run with this config would train, judged by runs like it that finished here (None: no basis)."""
    finished = [r for r in infos if r.status == "finished" and r.seconds and r.epochs_done]
    return _estimate_s(runs.RunInfo(run_id="", path=Path(), config=config, status="queued"), finished)


def _remaining_s(info: runs.RunInfo, finished: list[runs.RunInfo], now: float) -> float | None:
    """Seconds until a running run ends: from its own pace once it has stepped, else from runs like it."""
    epochs = int(info.config.get("epochs", 1))
    steps, segment_start = [], None
    for r in info.records:
        if r.get("kind") == "status" and r.get("status") == "running":
            steps, segment_start = [], r.get("time")
        elif r.get("kind") == "step" and r.get("progress") is not None and r.get("time") is not None:
            steps.append(r)
    if len(steps) >= 2 and steps[-1]["progress"] > steps[0]["progress"]:
        (t0, p0), (t1, p1) = (steps[0]["time"], steps[0]["progress"]), (steps[-1]["time"], steps[-1]["progress"])
        return max(0.0, (epochs - p1) * (t1 - t0) / (p1 - p0) - (now - t1))
    estimate = _estimate_s(info, finished)
    if estimate is None:
        return None
    return max(0.0, estimate - (now - float(segment_start or now)))


# --------------------------------------------------------------------------- small helpers


def read_request(run_dir: str | os.PathLike) -> TrainConfig:
    return TrainConfig.from_dict(json.loads((Path(run_dir) / REQUEST_FILE).read_text()))


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """`python -m core.jobs [ROOT]`: dispatch ROOT's queue until nothing is queued or training;
    prints {"root", "finished", "failed", "other"} (a headless server, or a queue to finish after a restart)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.jobs", description=main.__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default=str(runs.MODELS_DIR), help="the models folder (default: models/)")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    args = parser.parse_args(argv)
    registry = JobRegistry(args.root, autostart=False)
    deadline = None if args.timeout is None else time.time() + args.timeout
    try:
        while deadline is None or time.time() < deadline:
            registry.poll()
            registry.dispatch(wait_s=1.0)
            infos = runs.list_runs(args.root)
            if not registry.workers.children and not any(r.active for r in infos):
                break
            time.sleep(TICK_S)
    finally:
        registry.close()
    statuses = Counter(r.status for r in runs.list_runs(args.root))
    print(
        json.dumps(
            {"root": str(args.root), "finished": statuses.pop("finished", 0), "failed": statuses.pop("failed", 0), "other": dict(statuses)}
        )
    )
    return 0
