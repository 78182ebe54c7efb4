"""torchrun + DistributedDataParallel on CPU (gloo): one run folder, same accuracy, no hang on a dead rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.serving import runs

ROOT = Path(__file__).resolve().parent.parent
# --device cpu: these are gloo tests, and must pass on a machine with fewer GPUs than processes too.
ARGS = ["--model", "cifar10_quick", "--data", "shapes:3000", "--device", "cpu", "--epochs", "4", "--batch-size", "100", "--seed", "1"]
pytestmark = pytest.mark.slow


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "core.train", *args]


def run(cmd: list[str], timeout: float = 400) -> dict:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # only rank 0 prints the result
    return json.loads(lines[0])


def test_two_processes_match_one_and_write_one_run_folder(tmp_path):
    two = run(torchrun(2, *ARGS, "--out", str(tmp_path / "two")))
    one = run([sys.executable, "-m", "core.train", *ARGS, "--out", str(tmp_path / "one")])
    assert two["status"] == one["status"] == "finished" and two["epochs"] == 4
    assert abs(two["val_acc"] - one["val_acc"]) < 0.1, (one, two)
    assert two["val_acc"] > 0.4  # it learned (chance is 0.1)
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["env"]["world_size"] == 2 and config["env"]["per_rank_batch_size"] == 50
    assert config["env"]["effective_batch_size"] == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    records, _ = runs.read_metrics(tmp_path / "two")
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3, 4]  # rank 0 writes once per epoch
    # Metrics are reduced over both ranks: each epoch's test accuracy covers the whole test split.
    last = [r for r in records if r["kind"] == "epoch"][-1]
    assert sum(map(sum, last["confusion"])) == 2000


def start_long_job(out: Path, **env: str) -> subprocess.Popen:
    """A 30-epoch job on two processes, returned once its first checkpoint is on disk."""
    proc = subprocess.Popen(
        torchrun(2, *ARGS[:-4], "--epochs", "30", "--batch-size", "100", "--out", str(out)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )
    deadline = time.time() + 200
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.3)
    return proc


def test_stop_and_resume_under_torchrun(tmp_path):
    out = tmp_path / "ddp"
    proc = start_long_job(out)
    runs.request_stop(out)  # what the Stop button does: every rank leaves at the same step
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["status"] == "stopped" and 1 <= result["epochs"] < 30
    info = runs.run_info(out)
    assert info.status == "stopped" and info.resumable


def _worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun started."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != parent:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
            rank = [e for e in environ if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0][5:])] = int(stat.parent.name)
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_killed_rank_ends_the_job_with_a_clear_status(tmp_path):
    out = tmp_path / "dead"
    proc = start_long_job(out, PLAYGROUND_DIST_TIMEOUT="60")
    workers = _worker_pids(proc.pid)
    assert 1 in workers, workers
    os.kill(workers[1], signal.SIGKILL)
    started = time.time()
    proc.communicate(timeout=150)  # ends, no hang
    assert proc.returncode != 0 and time.time() - started < 150
    info = runs.run_info(out)
    assert info.status in ("failed", "interrupted"), info
    assert info.message and info.has_checkpoint and info.resumable


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="needs a machine with fewer than 2 GPUs")
def test_more_processes_than_gpus_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        torchrun(2, *ARGS[:4], "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "gpu")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode != 0 and not done.stdout
    ours = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    gpus = torch.cuda.device_count()
    visible = "only 1 GPU is" if gpus else "no GPU is"
    assert ours and f"torchrun started 2 processes on this machine but {visible} visible" in ours[0]
    assert "--device cpu" in ours[0]
    assert "invalid device ordinal" not in done.stderr and "core/training/" not in done.stderr  # no traceback of ours
