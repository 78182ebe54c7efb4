"""The training processes one app process starts for a models folder: one per run, in its own session, and one
spare kept warm.

Importing torch and the trainer and initialising CUDA take seconds (about 5 s on a 2-core CPU); a spare worker
(core/serving/worker.py) has done all that before it is needed and waits on its stdin for one job, so a run
handed to it starts without them. The queue (core/serving/jobs.py) decides what runs where; this module only
starts, hands over, reaps and ends processes.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core.serving import runs
from core.serving.worker import READY

PROJECT_ROOT = Path(__file__).resolve().parents[2]
QUEUE_DIR = ".queue"  # in the models folder: the dispatchers' lock, and spare workers' output before they have a run
# The next spare starts this long after one was handed a run: its seconds of imports would
# otherwise compete with that run's own start-up for the cores of a small machine.
SPARE_DELAY_S = 5.0
log = logging.getLogger("torch_playground.jobs")


class Workers:
    """This app process's children: `children` (run id -> the process training it, until reaped) and the spare."""

    def __init__(self, root: Path, warm: bool):
        self.root = root
        self.warm = warm  # keep a spare worker ready (Settings.warm_worker)
        self.children: dict[str, subprocess.Popen] = {}
        self._spare: subprocess.Popen | None = None
        self._spare_deaths: list[float] = []
        self._spare_due: float | None = None
        self._lock = threading.RLock()
        self._closed = False

    def start(self, run_dir: Path, job: dict[str, Any], record: dict[str, Any]) -> None:
        """Hand `job` to the spare (a one-process run) or to a fresh worker, recording `record` (+ pid) first."""
        spare = self._take_spare() if int(job.get("nproc", 1)) == 1 else None
        if spare is not None:
            # Recorded before the hand-over: the warm trainer's own records must come after this one.
            runs.append_status(run_dir, {**record, "pid": spare.pid, "warm": True})
            try:
                spare.stdin.write((json.dumps(job) + "\n").encode())
                spare.stdin.close()
                self.children[run_dir.name] = spare
                return
            except OSError:  # it died since we looked: a fresh process instead
                spare = None
        proc = self.spawn(job)
        runs.append_status(run_dir, {**record, "pid": proc.pid, "warm": False})
        self.children[run_dir.name] = proc

    def spawn(self, job: dict[str, Any] | None = None) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PLAYGROUND_MODELS_DIR": str(self.root)}
        args = [sys.executable, "-m", "core.worker"]
        if job is not None:
            args += ["--job", json.dumps(job)]
            if job["nproc"] > 1 and job["cuda_devices"]:  # torchrun's ranks see exactly the GPUs the queue gave
                visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
                ids = [visible[i] if visible != [""] and i < len(visible) else str(i) for i in job["cuda_devices"]]
                env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
                job["cuda_devices"] = []
                args[-1] = json.dumps(job)
        (self.root / QUEUE_DIR).mkdir(parents=True, exist_ok=True)
        with open(self.root / QUEUE_DIR / "workers.log", "ab") as log_file:  # a worker's output before it has a run
            return subprocess.Popen(
                args,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.PIPE if job is None else subprocess.DEVNULL,
                stdout=subprocess.PIPE if job is None else subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
            )

    def ensure_spare(self) -> None:
        with self._lock:
            if self._closed or not self.warm:
                return
            if self._spare is not None and self._spare.poll() is None:
                return
            if self._spare is not None:  # it died without a job
                self._spare_deaths = [t for t in self._spare_deaths if time.time() - t < 60] + [time.time()]
                if len(self._spare_deaths) >= 3:
                    log.warning("spare training workers keep dying (see %s); starting runs cold", self.root / QUEUE_DIR / "workers.log")
                    self.warm, self._spare = False, None
                    return
            self._spare = self.spawn()

    def _take_spare(self) -> subprocess.Popen | None:
        with self._lock:
            spare, self._spare = self._spare, None
        return spare if spare is not None and spare.poll() is None else None

    def spare_ready(self, timeout: float = 0.0) -> bool:
        """True once the spare worker has finished warming up (the start-up benchmark waits for this)."""
        spare = self._spare
        if spare is None or spare.poll() is not None:
            return False
        if getattr(spare, "_ready", False):
            return True
        readable, _, _ = select.select([spare.stdout], [], [], timeout)
        if readable and spare.stdout.read(len(READY)) == READY:
            spare._ready = True  # type: ignore[attr-defined]
        return getattr(spare, "_ready", False)

    def spare_later(self) -> None:
        """A spare was (or may have been) handed a run: the next one starts SPARE_DELAY_S from now."""
        if self.warm:
            self._spare_due = time.monotonic() + SPARE_DELAY_S

    @property
    def busy(self) -> bool:
        """Children to reap, or a spare still to start."""
        return bool(self.children) or self._spare_due is not None

    def reap(self) -> None:
        """Reap finished children so they do not linger as zombies (which look alive); replace a dead or due spare."""
        with self._lock:
            for name, proc in list(self.children.items()):
                if proc.poll() is not None:
                    del self.children[name]
            if self._spare is not None and self._spare.poll() is not None:
                self.ensure_spare()
            if self._spare_due is not None and time.monotonic() >= self._spare_due:
                self._spare_due = None
                self.ensure_spare()

    def close(self) -> None:
        """End the spare; children already training go on (they are their own sessions)."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            spare.stdin.close()  # EOF: the spare leaves by itself
            try:
                spare.wait(10)
            except subprocess.TimeoutExpired:
                spare.kill()
                spare.wait()
