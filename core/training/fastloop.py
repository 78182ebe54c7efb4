"""What keeps the training loop from waiting on a GPU: a CUDA-graphed step, interval figures read without a
sync, checkpoints written from a background thread, and an EMA without host round trips.

Why it matters: a GPU runs the work the host queues asynchronously, and the host must stay ahead. Small nets such
as the speedrun preset are bound by the host, not the arithmetic: a step of ~200 kernel launches costs about 6 ms
of Python and dispatch on an H100 whatever the width or batch, and every `.item()`, `.tolist()`, Python `if` on a
device tensor or copy to the host makes the host wait for the device, so the device then idles while the host
queues the next step. So on CUDA:

- `GraphedStep` records forward, loss and backward once as a CUDA graph and replays it every step (one launch
  instead of hundreds). The optimizer step stays eager: fused SGD is one kernel per parameter group and its
  learning rate changes every step; so does the batch's gather and augmentation (they use the loader's seeded
  generator, so a resumed run still replays the same batches).
- `IntervalReads` reads the log interval's loss and accuracy with a non-blocking copy and a CUDA event, and hands
  the figures over once they have landed, so step records keep flowing to the run folder without a sync.
- `CheckpointWriter` snapshots the state with non-blocking copies and writes it (atomically, in order) from one
  background thread.
- `ema_update` is `AveragedModel.update_parameters` without its two host round trips per step.

On a CPU the same objects do the same work synchronously, so there is one code path. When a part fails on some
machine, driver or torch version, the run switches it off and goes on with the plain loop (core/training/fallback.py).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import PlaygroundError

# --------------------------------------------------------------------------- the graphed step


class GraphFailed(RuntimeError):
    """The CUDA graph itself failed (capture or replay); its cause is the error. The step's own errors are not this."""


class GraphedStep:
    """`forward_backward(x, y) -> (loss, logits)` as a CUDA graph: zero_grad, forward, loss and backward.

    The first `warmup` calls run eagerly on a side stream (cuDNN benchmarks its algorithms, autograd and the
    caching allocator settle), then the step is captured and every later call copies the batch into the graph's
    static inputs and replays it. Gradients are allocated inside the graph, so each replay overwrites them (no
    zero_grad needed) and `p.grad` keeps pointing at them for the eager optimizer step.

    A graph replays exactly the kernels it recorded, so a change in which parameters train (the speedrun net
    freezes its whitening bias after 3 epochs) or in the batch's shape (a last partial batch) starts over with
    eager warm-up steps and a new capture.

    A capture or replay that fails raises GraphFailed (core/training/fallback.py then goes on without graphs); the eager
    warm-up steps raise what the step itself raises.
    """

    def __init__(
        self,
        forward_backward: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        warmup: int = 3,
        before_capture: Callable[[], None] | None = None,
    ):
        self.forward_backward = forward_backward
        self.before_capture = before_capture  # e.g. let a background checkpoint write finish first
        self.params = list(model.parameters())
        self.optimizer = optimizer
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: tuple | None = None
        self.eager_left = warmup
        self.captures = 0
        self._side = torch.cuda.Stream()
        self._static: tuple[torch.Tensor, ...] = ()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(p.requires_grad for p in self.params), tuple(x.shape), x.dtype, tuple(y.shape))
        if key != self.key:
            self.graph, self.key, self.eager_left = None, key, self.warmup
        if self.graph is None and self.eager_left > 0:
            self.eager_left -= 1
            return self._eager(x, y)
        if self.graph is None:
            self._capture(x, y)
        static_x, static_y, loss, logits = self._static
        try:
            static_x.copy_(x)
            static_y.copy_(y)
            self.graph.replay()
        except Exception as exc:
            raise GraphFailed(f"replay failed: {exc}") from exc
        return loss, logits

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # A side stream, as PyTorch's own warm-up does, so that lazy initialisation stays out of the capture.
        current = torch.cuda.current_stream()
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            self.optimizer.zero_grad(set_to_none=True)
            loss, logits = self.forward_backward(x, y)
        current.wait_stream(self._side)
        return loss, logits

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.before_capture is not None:
            self.before_capture()
        static_x, static_y = x.clone(), y.clone()
        self.optimizer.zero_grad(set_to_none=True)  # so that backward allocates the grads inside the graph's pool
        try:
            graph = torch.cuda.CUDAGraph()
            # thread_local: CUDA calls of other threads (a studio page, a checkpoint write) cannot spoil the capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                loss, logits = self.forward_backward(static_x, static_y)
        except Exception as exc:  # e.g. an op that syncs or allocates on the host inside the model
            self.optimizer.zero_grad(set_to_none=True)  # no gradient of the failed capture is left behind
            raise GraphFailed(f"capture failed: {exc}") from exc
        self.graph, self._static = graph, (static_x, static_y, loss, logits)
        self.captures += 1


# --------------------------------------------------------------------------- figures read without waiting


class IntervalReads:
    """Small device tensors (a log interval's sums) read on the host without making it wait.

    `push(values, meta)` starts a non-blocking copy of `values` into pinned host memory and records an event
    behind it; `ready()` yields `(floats, meta, seconds)` for each push whose copy has landed, in order (`block=True`
    waits for all of them: once an epoch). `seconds` is the device's time since the previous push (or `restart()`),
    measured with CUDA events, so throughput is what the GPU did, not how far ahead the host ran.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pending: collections.deque = collections.deque()
        self._last: Any = None
        self.restart()

    def _mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def restart(self) -> None:
        """The clock of the next push starts now (call it after a pause: an evaluation, a checkpoint)."""
        self._last = self._mark()

    def push(self, values: torch.Tensor, meta: dict[str, Any]) -> None:
        host = values.detach().to("cpu", non_blocking=True) if self.cuda else values.detach().clone()
        mark = self._mark()
        self.pending.append((host, meta, self._last, mark))
        self._last = mark

    def ready(self, block: bool = False) -> Iterator[tuple[list[float], dict[str, Any], float]]:
        while self.pending:
            host, meta, start, end = self.pending[0]
            if self.cuda:
                if not (block or end.query()):
                    return
                end.synchronize()
                seconds = start.elapsed_time(end) / 1000
            else:
                seconds = end - start
            self.pending.popleft()
            yield host.tolist(), meta, seconds


# --------------------------------------------------------------------------- checkpoints in the background


def to_host(obj: Any, cuda: bool) -> Any:
    """A copy of a nested dict/list of tensors on the host; device tensors are copied without waiting (pinned)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to("cpu", non_blocking=True) if (cuda and t.is_cuda) else t.cpu().clone()
    if isinstance(obj, dict):
        return {k: to_host(v, cuda) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(v, cuda) for v in obj)
    return obj


def _contiguous(obj: Any) -> Any:
    # channels_last weights would otherwise leak into exports (safetensors refuses them)
    if isinstance(obj, torch.Tensor):
        return obj.contiguous()
    if isinstance(obj, dict):
        return {k: _contiguous(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_contiguous(v) for v in obj)
    return obj


class CheckpointWriter:
    """Checkpoints written by one background thread, in the order they were asked for.

    `save(path, payload)` snapshots every tensor of the payload (non-blocking copies on CUDA, so the loop goes on
    at once) and queues the write; the thread waits for the copies, then writes with `write(path, payload)` (an
    atomic write: a reader or a crash sees the old file or the new one). `wait()` blocks until every queued write
    is on disk and re-raises the first that failed; so does the next `save` after a failure.

    A failure of `write` itself (PlaygroundError: a full disk) is the run's: a synchronous write would meet it too.
    Any other failure is the background machinery's (the thread, the pinned copies, the event): the newest checkpoint
    of that file is written again here, synchronously, and so is every later one; `on_switch_off(error)` is told once
    that worked. If the synchronous write fails as well, its error is raised (core/training/fallback.py: the plain path has the
    last word).
    """

    def __init__(
        self,
        write: Callable[[Path, dict[str, Any]], None],
        device: torch.device,
        on_switch_off: Callable[[BaseException], None] | None = None,
    ):
        self.write = write
        self.cuda = device.type == "cuda"
        self.on_switch_off = on_switch_off
        self.background = True
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._queued: list[tuple[Path, dict[str, Any], Future]] = []

    def save(self, path: Path, payload: dict[str, Any], *, wait: bool = False) -> None:
        path = Path(path)
        self._settle(block=not self.background)  # in the foreground, no queued write may land after this one
        if self.background:
            try:
                host = to_host(payload, self.cuda)
                event = None
                if self.cuda:
                    event = torch.cuda.Event()
                    event.record()
                self._queued.append((path, host, self._pool.submit(self._write, path, host, event)))
            except Exception as exc:
                self._settle(block=True)
                self._write_here(path, payload, exc)
        else:
            self._write_here(path, payload, None)
        if wait:
            self.wait()

    def _write(self, path: Path, payload: dict[str, Any], event: Any) -> None:
        if event is not None:
            event.synchronize()
        self.write(path, _contiguous(payload))

    def _write_here(self, path: Path, payload: dict[str, Any], failure: BaseException | None) -> None:
        """A synchronous write; `failure`: the background's, said once this write has shown the disk is fine."""
        if self.cuda:
            torch.cuda.synchronize()  # whatever non-blocking copy of the payload was started has landed
        self.write(path, _contiguous(to_host(payload, cuda=False)))
        if failure is not None and self.background:
            self.background = False
            if self.on_switch_off is not None:
                self.on_switch_off(failure)

    def _settle(self, *, block: bool) -> None:
        """Collect the queued writes that are done (all of them when `block`), in order; see the class docstring."""
        while self._queued and (block or self._queued[0][2].done()):
            path, host, future = self._queued.pop(0)
            try:
                future.result()
            except PlaygroundError:
                raise
            except Exception as exc:
                # Let the queue run out, then write the newest checkpoint of each file here (again, if it got
                # written): the files end as they would have, whichever background writes failed.
                rest, self._queued = self._queued, []
                newest = {path: host}
                for later_path, later_host, later in rest:
                    later.exception()  # waits; its error, if any, is met again by its synchronous write
                    newest[later_path] = later_host
                for newest_path, newest_host in newest.items():
                    self._write_here(newest_path, newest_host, exc)

    def wait(self) -> None:
        self._settle(block=True)

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


# --------------------------------------------------------------------------- EMA


@torch.no_grad()
def ema_update(ema: torch.optim.swa_utils.AveragedModel, model: nn.Module, decay: float) -> None:
    """`ema.update_parameters(model)` for an EMA AveragedModel (use_buffers=True), without host syncs.

    AveragedModel keeps its counter on the host and copies it to the device every step (a sync); the EMA itself
    needs only the decay. Same result, same state_dict.
    """
    averaged = [*ema.module.parameters(), *ema.module.buffers()]
    current = [*model.parameters(), *model.buffers()]
    if int(ema.n_averaged) == 0:  # a host tensor: no device sync
        for a, c in zip(averaged, current):
            a.copy_(c)
    else:
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - decay)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # counters such as num_batches_tracked: as get_ema_multi_avg_fn treats them
                a.copy_(a * decay + c * (1 - decay))
    ema.n_averaged += 1
