"""An optimisation never ends a run: each part of the GPU fast path falls back to the plain loop, once, out loud.

CUDA graphs, torch.compile, fused optimizer steps, the sync-free EMA and background checkpoint writes
(core/training/fastloop.py) have met few machines, drivers and torch versions, and any of them may fail where the plain
eager loop would not: an op that cannot be captured, a compiler missing from the machine, a kernel not built for
this GPU. A learner's run must not end for that. So the part that failed is switched off for the rest of the run,
the work in hand is done again the plain way from the state it started from, and the run says once, in plain words,
what was switched off and why: a `notice` record in metrics.jsonl (the Train page shows it; `runs.summarize`
collects them) and a line on stderr (the command line's progress).

What counts as the fast path's failure, and what stays the run's own error:
- out of memory, a NaN loss, Stop and the time limit, Ctrl-C, a user's mistake (PlaygroundError) and a lost torchrun
  peer are never "an optimisation failed": they pass through to the run's own handling (`passes_through`);
- the plain path has the last word: a failure is blamed on an optimisation only once the plain version of the same
  work has succeeded; if it fails too, its error is the run's (and no notice is written).

Not applied twice, not skipped:
- forward and backward (a CUDA graph, a compiled model) change nothing the optimizer has seen: the batch is simply
  done again without the failed part before the optimizer steps (batch-norm running statistics may take that batch
  twice, a negligible nudge);
- the fused optimizer step and the EMA change the training state in place, and a step that fails part-way (one
  parameter group updated, the next not) cannot be told apart from one that failed before it began. So the first
  such step of each process starts from a copy of that state kept on the host; a failure restores the copy and the
  plain version takes the step. Once a part has stepped, it has shown that it works on this machine: a later failure
  ends the run as an unexpected error (resumable from the last checkpoint, where the first step is guarded again).

Tests force every failure on the CPU: `FAST_DEVICES` turns CUDA graphs and fused steps on for the CPU there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from core.errors import PlaygroundError
from core.training.fastloop import GraphFailed, ema_update, to_host

if TYPE_CHECKING:
    from core.training.parts import Learner

# Devices whose runs try CUDA graphs and fused optimizer steps. Tests add "cpu" to force these parts' failures there.
FAST_DEVICES = ("cuda",)

# what: (the sentence's subject, what the run does instead)
PARTS = {
    "cuda_graphs": ("CUDA graphs were", "the plain step, which trains the same (small models run slower)"),
    "compile": ("torch.compile was", "the model as written, at normal eager speed"),
    "fused_optimizer": ("The fused optimizer step was", "the plain optimizer step: the same update, a little slower"),
    "fast_ema": ("The sync-free EMA update was", "AveragedModel's own update: the same average, a little slower"),
    "background_checkpoints": ("Background checkpoint writes were", "checkpoints written while training waits for them"),
}


class EndsTheRun(Exception):
    """Raised on purpose to leave the loop (Stop, the time limit): never an optimisation's failure."""


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or any(
        m in str(exc).lower() for m in ("out of memory", "can't allocate memory")
    )


def passes_through(exc: BaseException) -> bool:
    """Errors that keep the run's own handling whatever path raised them (see the module's docstring)."""
    if not isinstance(exc, Exception) or isinstance(exc, (EndsTheRun, FloatingPointError, PlaygroundError)) or is_oom(exc):
        return True
    return torch.distributed.is_available() and isinstance(exc, torch.distributed.DistError)


def reason(exc: BaseException) -> str:
    """The error in one short line: its message's first line (and the next, after a "raised:") and its type."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    first = " ".join(lines[:2] if lines[0].endswith(":") else lines[:1])[:200]
    kind = type(exc.__cause__ if isinstance(exc, GraphFailed) and exc.__cause__ else exc).__name__
    return f"{first} ({kind})" if first else kind


class Fallbacks:
    """What this run has switched off, and why; each said once. `emit` writes a record (None: say nothing)."""

    def __init__(self, emit: Callable[[dict[str, Any]], None] | None = None, *, stream: Any = None):
        self.emit = emit
        self.stream = stream
        self.off: dict[str, str] = {}  # what -> why
        self.proven: set[str] = set()  # parts that changed the training state once without failing

    def switch_off(self, what: str, exc: BaseException) -> None:
        if what in self.off:
            return
        self.off[what] = why = reason(exc)
        subject, instead = PARTS[what]
        message = f"{subject} switched off for this run: {why}. It continues with {instead}."
        if self.emit is not None:
            self.emit({"kind": "notice", "what": what, "message": message})
            stream = self.stream or sys.stderr
            # after a tty's "\r"-updated progress line, on a line of its own
            stream.write(("\n" if stream.isatty() else "") + message + "\n")
            stream.flush()

    def attempt(self, what: str, make: Callable[[], Any]) -> Any:
        """`make()`, the part's construction; None when it failed (the part is then off)."""
        try:
            return make()
        except Exception as exc:
            if passes_through(exc):
                raise
            self.switch_off(what, exc)
            return None


# --------------------------------------------------------------------------- the step's parts
# `learner` is core.training.parts.Learner (its graphed, step_model, optimizer, ema, model and fallbacks); parts imports
# this module, so it is named here only for the type checker.


def _ddp(step_model: torch.nn.Module) -> bool:
    return isinstance(step_model, torch.nn.parallel.DistributedDataParallel)


def compiled_module(step_model: torch.nn.Module) -> torch.nn.Module | None:
    """The compiled module inside the step's model (itself, or what DistributedDataParallel wraps), if any."""
    inner = step_model.module if _ddp(step_model) else step_model
    return inner if hasattr(inner, "_orig_mod") else None  # torch.compile's OptimizedModule keeps the model there


def _uncompile(learner: Learner) -> None:
    eager = compiled_module(learner.step_model)._orig_mod
    if _ddp(learner.step_model):
        # The same parameters, so DDP's reducer and its hooks stay valid: no new wrapper, no collective to agree on.
        learner.step_model.module = eager
    else:
        learner.step_model = eager


def forward_backward(learner: Learner, x: torch.Tensor, y: torch.Tensor, plain: Callable[..., Any]) -> Any:
    """`learner.graphed(x, y)`, else `plain(learner, x, y)`. A failure of the CUDA graph or of torch.compile switches that part
    off and the batch is done again without it; the optimizer has not stepped yet, so nothing is applied twice."""
    failed: list[tuple[str, BaseException]] = []
    while True:
        try:
            out = learner.graphed(x, y) if learner.graphed is not None else plain(learner, x, y)
            break
        except GraphFailed as exc:
            if exc.__cause__ is not None and passes_through(exc.__cause__):
                raise exc.__cause__ from None  # out of memory while capturing is still out of memory
            learner.graphed = None
            failed.append(("cuda_graphs", exc))
        except Exception as exc:
            if passes_through(exc) or compiled_module(learner.step_model) is None:
                raise  # the plain path's own error: the run's
            _uncompile(learner)  # the graph, if any, calls the step's model through `plain`: it now runs eagerly too
            failed.append(("compile", exc))
    for what, exc in failed:  # said once the plain step has shown that they, not the batch, were at fault
        learner.fallbacks.switch_off(what, exc)
    return out


def _first_step(
    learner: Learner,
    what: str,
    state: Callable[[], dict[str, Any]],
    restore: Callable[[dict[str, Any]], None],
    fast: Callable[[], Any],
    plain: Callable[[], Any],
) -> None:
    """`fast()`, its first time in this process from a host copy of `state()`: a failure restores it, then `plain()`."""
    if what in learner.fallbacks.off:
        plain()
        return
    if what in learner.fallbacks.proven:
        fast()
        return
    saved = to_host(state(), cuda=False)
    try:
        fast()
    except Exception as exc:
        if passes_through(exc):
            raise
        restore(saved)
        plain()
        learner.fallbacks.switch_off(what, exc)
        return
    learner.fallbacks.proven.add(what)


def optimizer_step(learner: Learner) -> None:
    """`learner.optimizer.step()`; a fused step that fails is undone and taken again unfused (see the module's docstring)."""
    optimizer = learner.optimizer
    if not any(group.get("fused") for group in optimizer.param_groups):
        optimizer.step()
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def state() -> dict[str, Any]:
        return {"params": [p.detach() for p in params], "optimizer": optimizer.state_dict()}

    @torch.no_grad()
    def restore(saved: dict[str, Any]) -> None:
        for p, value in zip(params, saved["params"]):
            p.copy_(value)
        optimizer.load_state_dict(saved["optimizer"])  # the state and the groups' settings as they were, lr included
        optimizer.defaults["fused"] = None
        for group in optimizer.param_groups:
            group["fused"] = None  # None, not False: PyTorch then picks its foreach kernels where it can

    _first_step(learner, "fused_optimizer", state, restore, optimizer.step, optimizer.step)


def ema_step(learner: Learner) -> None:
    """The EMA of the weights after a step: `fastloop.ema_update`, or AveragedModel's own update if that fails."""
    _first_step(
        learner,
        "fast_ema",
        learner.ema.state_dict,
        learner.ema.load_state_dict,
        lambda: ema_update(learner.ema, learner.model, learner.ema_decay),
        lambda: learner.ema.update_parameters(learner.model),
    )
