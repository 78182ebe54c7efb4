"""Where tensors live and in which precision the math runs.

Device placement happens here and nowhere else, so a model and its batches can
never end up on different devices ("Input type and weight type should be the
same" is the classic learner error this prevents).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import torch

from core.errors import PlaygroundError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """cuda > mps > cpu for "auto"; an explicit choice that is not available is a user error."""
    if name not in DEVICE_CHOICES:
        raise PlaygroundError(f"Unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise PlaygroundError("CUDA was requested but no NVIDIA GPU is visible; use --device cpu (or auto).")
        return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    if name == "mps" and not mps_available():
        raise PlaygroundError("Apple MPS was requested but is not available here; use --device cpu (or auto).")
    return torch.device(name)


def distributed_backend(name: str = "auto", local_world_size: int | None = None) -> str:
    """The process group backend for a torchrun job: "nccl" when its processes will use GPUs, else "gloo".

    Each process on a machine takes its own GPU (cuda:LOCAL_RANK), so more processes than GPUs would end
    in CUDA's "invalid device ordinal" traceback; say what to do instead. `local_world_size` defaults to
    the LOCAL_WORLD_SIZE torchrun sets.
    """
    if local_world_size is None:
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))
    if name not in ("auto", "cuda") or (name == "auto" and not torch.cuda.is_available()):
        return "gloo"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if local_world_size > gpus:
        cpu = f"add --device cpu to run the {local_world_size} processes on the CPU (gloo)"
        if not gpus:
            raise PlaygroundError(f"torchrun started {local_world_size} processes on this machine but no GPU is visible; {cpu}.")
        raise PlaygroundError(
            f"torchrun started {local_world_size} processes on this machine but only {gpus} GPU"
            f"{' is' if gpus == 1 else 's are'} visible (each process needs its own); use "
            f"--nproc_per_node={gpus} (or --nproc_per_node=gpu), or {cpu}."
        )
    return "nccl"


def uses_gpu(device: str) -> bool:
    """Whether a run with this --device trains on a CUDA GPU (what a preset recipe's "gpu" values are for)."""
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16).

    Without it, oneDNN emulates bf16 and autocast makes training slower, not faster.
    """
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    cpu_mod = getattr(torch._C, "_cpu", None)
    for probe in probes:
        fn = getattr(cpu_mod, probe, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except RuntimeError:
                pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype, or float32 for no autocast.

    auto: bf16 on GPUs that support it (fp16 on older ones), bf16 on CPUs with
    AMX/AVX512-BF16, fp32 elsewhere (MPS included, where autocast gains little).
    """
    if precision not in PRECISION_CHOICES:
        raise PlaygroundError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}.")
    if precision != "auto":
        dtype = _DTYPES[precision]
        if dtype == torch.float16 and device.type == "cpu":
            raise PlaygroundError("fp16 autocast is not supported for CPU training; use bf16 or fp32.")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def eval_precision(precision: str, device: torch.device) -> torch.dtype:
    """The precision a run's test images are scored in, during training and after it (core.insight.predict.Predictor).

    On a GPU, the training's own autocast: fast, and the same on every card of a kind. Elsewhere fp32, whatever the
    run trained in: bf16 exists on only some CPUs (AMX, AVX512-BF16), and near-tied logits flip between bf16 and
    fp32, so a CPU-scored test accuracy would otherwise depend on which CPU scored it.
    """
    if device.type != "cuda":
        return torch.float32
    return resolve_precision(precision, device)


def precision_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}[dtype]


def autocast(device: torch.device, dtype: torch.dtype, cache: bool = True) -> contextlib.AbstractContextManager:
    """cache=False inside a CUDA graph capture: autocast's cache of cast weights must not outlive the capture."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a tensor or a (nested) tuple/list/dict of tensors to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe() -> dict[str, Any]:
    """What the device badge shows: the best device and why training will be fast (or not)."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {
            "kind": "cuda",
            "name": props.name,
            "count": torch.cuda.device_count(),
            "memory_gb": round(props.total_memory / 1024**3, 1),
            "precision": precision_name(resolve_precision("auto", torch.device("cuda", 0))),
        }
    if mps_available():
        return {"kind": "mps", "name": "Apple GPU (MPS)", "count": 1, "precision": "fp32"}
    return {
        "kind": "cpu",
        "name": "CPU",
        "count": 1,
        "cores": os.cpu_count() or 1,
        "threads": torch.get_num_threads(),
        "fast_bf16": cpu_has_fast_bf16(),
        "precision": precision_name(resolve_precision("auto", torch.device("cpu"))),
    }


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Evaluate without permanently flipping a training model out of train mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
