"""`python -m core.worker`: the process one training run lives in, started before it is needed.

Importing torch and the trainer and initialising CUDA take seconds (about 5 s on a
2-core CPU) that used to sit between Start and the first step. The queue (core.serving.jobs)
therefore keeps one spare worker that has done all that and waits on its stdin for one
job line; a run is handed to it and it trains that run, then exits. Still one process
per run, in its own session: a crash, an out-of-memory or a Force stop takes down that
run only, never the app or another run, and Stop (the STOP file), SIGTERM and the
restart check (the pid in the run's status records) work as for `python -m core.train`.

    python -m core.worker                 # a spare: warm up, then read one job from stdin
    python -m core.worker --job JSON      # run a job now (a cold start; torchrun jobs too)

A job is {"run_dir", "argv" (core.train's arguments), "nproc", "cuda_devices"}. Before
training, the worker takes RUN_DIR/train.lock (an flock held until the process ends,
whatever way it ends): a run handed out twice (two app processes, a crash between
handing it over and recording that) trains once, and the loser leaves without a trace.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

LOCK_FILE = "train.lock"
READY = b"ready\n"


def claim(run_dir: Path, patience_s: float = 1.0) -> int | None:
    """Hold the run's lock for the life of this process; None when another process owns the run."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            # A listing may be probing the lock for a moment (run_locked, below); an owner keeps it.
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.01)


def run_locked(run_dir: Path) -> bool:
    """True while some process holds the run's lock (it is training or about to)."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock too
    return False


def last_error(run_dir: str | os.PathLike) -> str:
    """The trainer's last stderr line (for a run that failed before writing any status)."""
    log_path = Path(run_dir) / "train.log"
    if not log_path.exists():
        return ""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def warm_up() -> None:
    """Everything a run needs before its first step that does not depend on the run."""
    import torch
    import torchvision  # noqa: F401 - the trainer records its version in config.json

    import core.training.cli  # noqa: F401 - the imports are the point: torch, data, models, the loop
    from core import device as dev
    from core.models.build import build

    where = torch.device("cpu")
    if torch.cuda.is_available():
        torch.cuda.init()  # the driver and the CUDA libraries: the slow part
        if torch.cuda.device_count() == 1:
            # Its context, cuDNN and cuBLAS too. With several GPUs the run's own GPU is not known yet
            # (the job says), and a context on GPU 0 would only take memory there for nothing.
            where = torch.device("cuda", 0)
    # One tiny step primes the kernels (oneDNN's thread pool on a CPU: a few hundred ms on the first
    # batch), and the first optimizer imports torch._dynamo (torch.optim's decorators do): 1-2 s on a small CPU.
    dtype = dev.resolve_precision("auto", where)
    model = build("cifar10_quick", num_classes=10).to(where, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.zeros(8, 3, 32, 32, device=where).to(memory_format=torch.channels_last)
    with dev.autocast(where, dtype):
        loss = torch.nn.functional.cross_entropy(model(x).float(), torch.zeros(8, dtype=torch.long, device=where))
    loss.backward()
    optimizer.step()


def _redirect_output(log_path: Path) -> None:
    """stdout and stderr into the run's train.log; stdin away from the app's pipe."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _last_status(run_dir: Path) -> dict[str, Any]:
    from core.serving import runs

    records, _ = runs.read_metrics(run_dir)
    return next((r for r in reversed(records) if r.get("kind") == "status"), {})


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError)


def _record_end(run_dir: Path, job: dict[str, Any], status: str, message: str) -> None:
    """A final status for a run whose trainer ended without writing one (it failed while setting up)."""
    from core.serving import runs

    if _last_status(run_dir).get("status") in runs.FINAL_STATUSES:
        return
    writer = runs.MetricsWriter(run_dir)
    writer.write({"kind": "status", "status": status, "message": message, "epochs_done": 0, "pid": os.getpid()})
    writer.close()


def _setup_failure(run_dir: Path, job: dict[str, Any], exc: BaseException) -> str:
    """What the user should read when the run could not even start."""
    if not _is_oom(exc):
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''} (details in train.log)"
    try:
        batch = json.loads((run_dir / "config.json").read_text()).get("batch_size")
    except (OSError, ValueError):
        batch = None
    where = "the GPU" if job.get("cuda_devices") else "this machine"
    crowded = job.get("sharing", 0)
    return (
        f"Out of memory on {where} while setting up the run"
        + (f" (batch size {batch})" if batch else "")
        + ": use a smaller batch size, image size or model."
        + (f" {crowded} other run(s) were training on the same device; starting when it is free may be enough." if crowded else "")
    )


def run_job(job: dict[str, Any]) -> int:
    run_dir = Path(job["run_dir"])
    lock = claim(run_dir)
    if lock is None:
        return 0  # another process owns this run: it must never train twice
    _redirect_output(run_dir / "train.log")
    nproc = int(job.get("nproc", 1))
    if nproc > 1:
        # torchrun takes this process's place: same pid, and still the lock's holder (the fd survives exec).
        os.set_inheritable(lock, True)
        os.execv(
            sys.executable,
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "core.train", *job["argv"]],
        )
    from core.training import cli as trainer

    devices = job.get("cuda_devices") or []
    if devices:
        import torch

        torch.cuda.set_device(int(devices[0]))  # "auto" and "cuda" then mean this GPU
    try:
        code = trainer.main(list(job["argv"]))
    except KeyboardInterrupt:  # SIGTERM (Force stop) while it was still setting up
        _record_end(run_dir, job, "interrupted", "Ended before training started (the process was asked to stop).")
        return 1
    except BaseException as exc:  # noqa: BLE001 - whatever it was, the run folder must say so
        import traceback

        traceback.print_exc()
        _record_end(run_dir, job, "failed", _setup_failure(run_dir, job, exc))
        return 1
    if code != 0:  # e.g. a bad config the trainer refused before it opened the metrics log
        _record_end(run_dir, job, "failed", last_error(run_dir).removeprefix("error: ") or f"The trainer exited with code {code}.")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", help="run this job now instead of waiting for one on stdin")
    args = parser.parse_args(argv)
    if args.job is None:
        warm_up()
        os.write(1, READY)  # the app may wait for this (the start-up benchmark does)
        line = sys.stdin.readline()
        if not line.strip():
            return 0  # the app went away (or closed the spare): nothing to do
        job = json.loads(line)
    else:
        job = json.loads(args.job)
    return run_job(job)
