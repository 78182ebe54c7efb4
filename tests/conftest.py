"""Shared fixtures: isolated run folders, and slices of the real CIFAR-10 dev images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DEV_TAR = ROOT.parent / "shared" / "data" / "cifar10-dev.tar.gz"


class HostilePayload:
    """Unpickling this creates the file at `target`: a stand-in for a checkpoint that runs code."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny networks (the lessons'): one thread runs their many small ops fastest on a busy 2-core
    machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def models_root(tmp_path, monkeypatch):
    """A private models/ folder so tests never see (or litter) the user's runs."""
    from core.serving import runs

    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setattr(runs, "MODELS_DIR", root)
    monkeypatch.setenv("PLAYGROUND_MODELS_DIR", str(root))
    monkeypatch.setenv("PLAYGROUND_DATA_DIR", str(tmp_path / "data"))
    return root


def extract_dev_slice(dest: Path, train_per_class: int, test_per_class: int) -> Path:
    """Extract the first N images per class of each split (one pass over the archive)."""
    if not DEV_TAR.exists():
        pytest.skip(f"real CIFAR-10 dev images not found at {DEV_TAR} (only the project's CI machines have them)")
    from bench.measure import extract_dev_slice as extract

    return extract(dest, train_per_class, test_per_class)


@pytest.fixture(scope="session")
def cifar_slice(tmp_path_factory) -> Path:
    """200 training and 40 test images per class of the real CIFAR-10 dev set."""
    return extract_dev_slice(tmp_path_factory.mktemp("cifar-slice"), 200, 40)


def start_trainer(out: Path, data: str, epochs: int) -> subprocess.Popen:
    """`python -m core.train` on cifar10_quick in the background, as the studio starts it (batch 50, quiet)."""
    command = [sys.executable, "-m", "core.train", "--model", "cifar10_quick", "--data", data, "--epochs", str(epochs)]
    return subprocess.Popen(
        [*command, "--batch-size", "50", "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def fake_sweep(root: Path, accs: dict[float, list[float | None]], sweep_id: str = "sweep-fake"):
    """A sweep over lr as its finished runs would leave it: one run folder per (lr, seed) with these test accuracies
    (None: the run diverged), and the sweep's record."""
    from core.serving import runs
    from core.training import sweep

    plan = sweep.Sweep(
        sweep_id, {"model": "cifar10_quick", "data": "shapes"}, {"lr": list(accs)}, list(range(len(next(iter(accs.values())))))
    )
    for lr, per_seed in accs.items():
        for seed, acc in enumerate(per_seed):
            run_dir = root / f"{sweep_id}-run-{lr:g}-{seed}"
            run_dir.mkdir(parents=True)
            runs.write_config(
                run_dir, {"model": "cifar10_quick", "data": "shapes", "seed": seed, "sweep": {"id": plan.sweep_id, "settings": {"lr": lr}}}
            )
            status = "finished" if acc is not None else "diverged"
            records = [{"kind": "status", "status": "running", "time": 1_760_000_000 + 60 * len(plan.runs)}]
            records += [{"kind": "epoch", "epoch": 1, "test_acc": acc}] if acc is not None else []
            with open(run_dir / runs.METRICS_FILE, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in [*records, {"kind": "status", "status": status}])
            plan.runs.append({"run_id": run_dir.name, "settings": {"lr": lr}, "seed": seed})
    plan.save(root)
    return plan


def fake_run(root: Path, run_id: str, *, created: float, status: str = "finished", steps: int = 6, **settings) -> Path:
    """A run folder as the trainer writes it (config.json, metrics.jsonl), without training: `settings` are
    TrainConfig fields. Steps, an epoch record and the final status; no steps for a run that failed at set-up.
    status "running" names this test's own process as its trainer (alive, on this host), so it counts as active."""
    import os
    import socket

    from core.serving import runs
    from core.training.config import TrainConfig

    folder = Path(root) / run_id
    folder.mkdir(parents=True)
    runs.write_config(folder, TrainConfig(**settings).to_dict(), env={"device": "cpu", "precision": "fp32", "world_size": 1})
    config = runs.read_config(folder)
    runs.write_json(folder / runs.CONFIG_FILE, {**config, "created": created})
    start = {"kind": "status", "status": "running", "pid": os.getpid(), "host": socket.gethostname(), "time": created}
    records = [start]
    for s in range(1, steps + 1):
        records.append(
            {"kind": "step", "epoch": 0, "step": s, "progress": s / steps, "lr": 0.01, "loss": 2.3 - 0.1 * s, "acc": 0.1 + 0.05 * s}
        )
    if steps:
        records.append({"kind": "epoch", "epoch": 1, "train_loss": 1.8, "test_loss": 1.9, "test_acc": 0.4, "elapsed": 5.0})
    if status != "running":
        records.append({"kind": "status", "status": status, "message": f"{status} (test)", "epochs_done": int(bool(steps)), "elapsed": 5.0})
    (folder / runs.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder
