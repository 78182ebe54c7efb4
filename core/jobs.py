"""Training runs as child processes that outlive page reloads.

The studio never trains inside Streamlit's script thread: it starts
`python -m core.train` (or `torchrun ... -m core.train`) in its own process
session, and every page reads the run folder. A crash in training cannot take
the app down, Stop is a file the trainer looks for every batch, and closing the
tab or restarting the app loses nothing.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from core import runs
from core.errors import PlaygroundError
from core.train import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _command(config_path: Path, run_dir: Path, nproc: int) -> list[str]:
    train = ["-m", "core.train", "--config", str(config_path), "--out", str(run_dir)]
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *train]
    return [sys.executable, *train]


class JobRegistry:
    """The training processes this app started (one registry per app process)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or runs.MODELS_DIR)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def _spawn(self, run_dir: Path, args: list[str]) -> None:
        (run_dir / runs.STOP_FILE).unlink(missing_ok=True)  # a stale request must not stop the new process
        log = open(run_dir / "train.log", "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PLAYGROUND_MODELS_DIR": str(self.root)}
        # A new session: Streamlit's reruns and Ctrl+C in its terminal do not reach the trainer.
        proc = subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        log.close()
        with self._lock:
            self._procs[run_dir.name] = proc
        runs.MetricsWriter(run_dir).write({"kind": "status", "status": "queued", "pid": proc.pid,
                                           "host": os.uname().nodename, "command": " ".join(args[1:])})

    def start(self, config: TrainConfig, *, nproc: int = 1, allow_concurrent: bool = False) -> Path:
        """Create the run folder and start training; returns the folder at once."""
        config.validate()
        self.poll()
        busy = self.active()
        if busy and not allow_concurrent:
            raise PlaygroundError(f"Run {busy[0]} is still training on this machine; stop it first "
                                  "(or allow concurrent runs: they share the same cores/GPU).")
        self.root.mkdir(parents=True, exist_ok=True)
        run_dir = self.root / runs.new_run_id(config.model, config.data)
        run_dir.mkdir()  # exist_ok=False: two sessions can never share a folder
        request = run_dir / "request.json"
        runs.write_json(request, config.to_dict())
        # A provisional config.json so the run is listed at once; the trainer rewrites it in full.
        runs.write_config(run_dir, config.to_dict())
        self._spawn(run_dir, _command(request, run_dir, nproc))
        return run_dir

    def resume(self, run_dir: str | os.PathLike) -> Path:
        run_dir = Path(run_dir)
        info = runs.run_info(run_dir)
        if info.active:
            raise PlaygroundError(f"Run {info.run_id} is already training.")
        if not info.has_checkpoint:
            raise PlaygroundError(f"Run {info.run_id} has no checkpoint to resume from; start it again instead.")
        if info.epochs_done >= int(info.config.get("epochs", 0)):
            raise PlaygroundError(f"Run {info.run_id} already finished all {info.config.get('epochs')} epochs.")
        world = int(info.config.get("env", {}).get("world_size", 1))
        args = [sys.executable, "-m", "core.train", "--resume", str(run_dir)]
        if world > 1:
            args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", *args[1:]]
        self._spawn(run_dir, args)
        return run_dir

    def stop(self, run_dir: str | os.PathLike) -> None:
        """Ask the trainer to stop after the current batch; it saves a checkpoint first."""
        runs.request_stop(run_dir)

    def kill(self, run_dir: str | os.PathLike) -> None:
        """Last resort for a trainer that does not answer Stop: SIGTERM its process group."""
        proc = self._procs.get(Path(run_dir).name)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)

    def poll(self) -> None:
        """Reap finished children so they do not linger as zombies (which look alive)."""
        with self._lock:
            for name, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    del self._procs[name]

    def active(self) -> list[str]:
        """Run ids currently training on this machine: ours, and live ones started elsewhere."""
        self.poll()
        mine = set(self._procs)
        others = {r.run_id for r in runs.list_runs(self.root) if r.active}
        return sorted(mine | others)

    def wait(self, run_dir: str | os.PathLike, timeout: float | None = None) -> int | None:
        proc = self._procs.get(Path(run_dir).name)
        return proc.wait(timeout) if proc else None


def last_error(run_dir: str | os.PathLike) -> str:
    """The trainer's last stderr line (for a run that failed before writing any status)."""
    log = Path(run_dir) / "train.log"
    if not log.exists():
        return ""
    lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
    return lines[-1] if lines else ""


def read_request(run_dir: str | os.PathLike) -> TrainConfig:
    return TrainConfig.from_dict(json.loads((Path(run_dir) / "request.json").read_text()))
