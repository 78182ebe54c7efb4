"""Which process-group backend a torchrun job gets, and the one-line error when GPUs are too few (faked GPU counts)."""

from __future__ import annotations

import pytest
import torch

from core import device as dev
from core.errors import PlaygroundError


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(
    "gpus, processes, device, backend",
    [
        (1, 1, "auto", "nccl"),
        (4, 4, "cuda", "nccl"),
        (8, 2, "auto", "nccl"),
        (0, 2, "auto", "gloo"),  # no GPU: CPU processes, as the README's laptop example does
        (1, 2, "cpu", "gloo"),
        (0, 4, "cpu", "gloo"),
        (2, 4, "mps", "gloo"),
    ],
)
def test_backend_follows_the_device(monkeypatch, gpus, processes, device, backend):
    fake_gpus(monkeypatch, gpus)
    assert dev.distributed_backend(device, processes) == backend


@pytest.mark.parametrize(
    "gpus, processes, device, counts",
    [
        (1, 2, "auto", "2 processes on this machine but only 1 GPU is visible"),
        (2, 3, "cuda", "3 processes on this machine but only 2 GPUs are visible"),
    ],
)
def test_more_processes_than_gpus_is_one_line_that_says_what_to_do(monkeypatch, gpus, processes, device, counts):
    fake_gpus(monkeypatch, gpus)
    with pytest.raises(PlaygroundError) as caught:
        dev.distributed_backend(device, processes)
    message = str(caught.value)
    assert counts in message and "\n" not in message
    assert f"--nproc_per_node={gpus}" in message and "--device cpu" in message


def test_cuda_without_a_gpu_suggests_the_cpu(monkeypatch):
    fake_gpus(monkeypatch, 0)
    with pytest.raises(PlaygroundError, match="2 processes on this machine but no GPU is visible; add --device cpu"):
        dev.distributed_backend("cuda", 2)


def test_local_world_size_comes_from_torchrun(monkeypatch):
    fake_gpus(monkeypatch, 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")  # two machines of two: what counts is the processes on this one
    with pytest.raises(PlaygroundError, match="2 processes"):
        dev.distributed_backend("auto")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert dev.distributed_backend("auto") == "nccl"
