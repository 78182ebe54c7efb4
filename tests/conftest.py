"""Shared fixtures: isolated run folders, and slices of the real CIFAR-10 dev images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEV_TAR = ROOT.parent / "shared" / "data" / "cifar10-dev.tar.gz"


class HostilePayload:
    """Unpickling this creates the file at `target`: a stand-in for a checkpoint that runs code."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture
def models_root(tmp_path, monkeypatch):
    """A private models/ folder so tests never see (or litter) the user's runs."""
    from core import runs

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
