"""The learning-rate finder and `python -m core.lr_find`.

Leslie Smith's learning-rate range test ("Cyclical Learning Rates for Training Neural Networks", 2015), run the
way fastai's `lr_find` runs it:

1. Take a fresh copy of the model the run would start from (same preset, seed, data, preprocessing, augmentation,
   optimizer and loss as `TrainConfig.for_model` gives the run), so the suggestion fits the recipe. Nothing is
   written: no run folder, no checkpoint; the copy is thrown away.
2. Train it for at most `steps` batches while the learning rate grows exponentially from `start_lr` to `end_lr`
   (each step multiplies it by the same factor), recording every step's loss. Parameter groups keep their
   recipe's ratios (e.g. speedrun's larger bias lr).
3. Smooth the losses (each is one noisy batch) with fastai's debiased exponential moving average:
   avg = beta * avg + (1 - beta) * loss, smoothed = avg / (1 - beta ** i), beta = 0.98.
4. Stop early once the loss blows up: smoothed loss above 4x its best so far, or not finite.
5. Suggest the learning rate of the *steepest descent*: where the smoothed loss falls fastest per unit of
   log(lr) (the most negative slope), looked for between the first tenth of the sweep (where the moving average
   has too little history) and the smoothed loss's minimum (after it, the loss blows up). Not the minimum itself:
   there the loss has stopped improving and is about to diverge, typically at ~10x the suggestion. The
   suggestion suits the peak of the recipes' warm-up-then-decay (one-cycle) schedule.
   When the smoothed loss hardly falls before it blows up (by less than 2%: a short sweep on a model that needs
   more steps to start learning), the slopes are noise; then the suggestion is a tenth of the *edge*, the largest
   lr before the loss climbs clearly above its best (Smith's "an order of magnitude below the blow-up").
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from core import device as dev
from core.data.batches import BatchLoader, normalize_batch
from core.errors import PlaygroundError, command
from core.training.config import SHARED_OPTIONS, TrainConfig, add_shared_options, layers_option
from core.training.parts import load_data, make_model, make_optimizer

STEPS, MAX_STEPS = 100, 500
START_LR, END_LR = 1e-7, 10.0
BETA = 0.98  # fastai's smoothing of the per-step losses
DIVERGE = 4.0  # stop once the smoothed loss exceeds this many times its best
FLAT = 0.02  # a fall or rise of the smoothed loss below 2% of it is noise, not learning (or blowing up)


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """fastai's debiased exponential moving average (a non-finite loss stays non-finite)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> float | None:
    """The suggested lr (see the module's docstring)."""
    return suggestion(lrs, smoothed)[0]


def suggestion(lrs: list[float], smoothed: list[float]) -> tuple[float | None, str | None]:
    """(lr, how): "steepest", the steepest descent of the smoothed loss before its minimum; "edge", a tenth of the
    largest lr before the loss climbs above its best, when it hardly fell; (None, None) when there is too little."""
    finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    if len(finite) < 5:
        return None, None
    end = min(finite, key=lambda i: smoothed[i])  # the minimum: beyond it the loss blows up
    start = len(lrs) // 10
    if end - start < 3 or smoothed[start] - smoothed[end] < FLAT * smoothed[start]:
        edge = end
        while edge + 1 < len(smoothed) and math.isfinite(smoothed[edge + 1]) and smoothed[edge + 1] <= (1 + FLAT) * smoothed[end]:
            edge += 1
        return lrs[edge] / 10, "edge"
    x, y = np.log10(lrs[start : end + 1]), np.array(smoothed[start : end + 1])
    slopes = np.gradient(y, x)
    return float(lrs[start + int(np.argmin(slopes))]), "steepest"


def lr_find(
    config: TrainConfig,
    *,
    steps: int = STEPS,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    on_step: Callable[[int, float, float], None] | None = None,
) -> dict[str, Any]:
    """Sweep the learning rate on a throwaway copy of `config`'s model; see the module's docstring.

    Returns {"lrs", "losses" (smoothed), "raw_losses", "suggested_lr", "suggested_by" ("steepest" | "edge" | None), "steps",
    "stopped_early", "seconds"}.
    `on_step(i, lr, loss)` is told every step (a progress bar).
    """
    if not 5 <= steps <= MAX_STEPS:
        raise PlaygroundError(f"--steps must be between 5 and {MAX_STEPS} (got {steps}).")
    if not 0 < start_lr < end_lr:
        raise PlaygroundError(f"The sweep needs 0 < start lr < end lr (got {start_lr:g} and {end_lr:g}).")
    config.validate()
    started = time.perf_counter()
    device = dev.resolve_device(config.device)
    dtype = dev.resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    ds, norm, _, input_size = load_data(config, device, None)
    model = make_model(config, ds, norm, input_size, device, None)
    if hasattr(model, "on_epoch_start"):
        model.on_epoch_start(0, config.epochs)
    model.train()
    optimizer = make_optimizer(model, config)
    factor = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    # Multiplies every group's recipe lr, so groups keep their ratios while the base lr sweeps.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: start_lr * factor**i / config.lr)
    loader = BatchLoader(
        ds.train, config.batch_size, device, shuffle=True, augment=config.augment, crop_padding=config.crop_padding, seed=config.seed
    )
    if len(loader) == 0:
        raise PlaygroundError(f"The training set has fewer images ({len(ds.train)}) than one batch ({config.batch_size}).")
    batches = itertools.chain.from_iterable(loader.epoch(e) for e in itertools.count())
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    lrs: list[float] = []
    raw: list[float] = []
    best, stopped_early = math.inf, False
    for i in range(steps):
        lr = start_lr * factor**i  # the base lr of this step (the schedule sets every group from it)
        x, y = next(batches)
        x = normalize_batch(x, norm.mean, norm.std, input_size, config.channels_last)
        with dev.autocast(device, dtype):
            loss = loss_fn(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        lrs.append(lr)
        raw.append(loss.item())  # a sync per step: the early stop needs every loss, and the sweep is short
        current = smooth(raw)[-1]
        if on_step:
            on_step(i, lr, raw[-1])
        if not math.isfinite(current) or current > DIVERGE * best:
            stopped_early = True
            break
        best = min(best, current)
    smoothed = smooth(raw)
    suggested, how = suggestion(lrs, smoothed)
    return {
        "lrs": [_sig(v) for v in lrs],
        "losses": [_sig(v) for v in smoothed],
        "raw_losses": [_sig(v) for v in raw],
        "suggested_lr": _sig(suggested),
        "suggested_by": how,
        "steps": len(lrs),
        "stopped_early": stopped_early,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _sig(value: float | None) -> float | None:
    """5 significant digits; inf/NaN (a blown-up loss) become None, which JSON can carry."""
    return float(f"{value:.5g}") if value is not None and math.isfinite(value) else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.lr_find",
        description="Suggest a learning rate: an exponential lr sweep "
        "on a throwaway copy of the model, with the run's data, preprocessing and optimizer.",
    )
    add_shared_options(p, required=True)
    p.add_argument("--steps", type=int, default=STEPS, help=f"at most this many steps (default {STEPS}, at most {MAX_STEPS})")
    p.add_argument("--start-lr", type=float, default=START_LR)
    p.add_argument("--end-lr", type=float, default=END_LR)
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: getattr(args, k) for k in SHARED_OPTIONS}
    if args.layers:
        overrides["layers"] = layers_option(args.layers)
    config = TrainConfig.for_model(args.model, **overrides)

    tty = sys.stderr.isatty()

    def show(i: int, lr: float, loss: float) -> None:
        if tty:
            print(f"\rstep {i + 1}/{args.steps}  lr {lr:.2e}  loss {loss:.3f} ", end="", file=sys.stderr, flush=True)
        elif i % 20 == 0:
            print(f"step {i + 1}/{args.steps}  lr {lr:.2e}  loss {loss:.3f}", file=sys.stderr, flush=True)

    result = lr_find(config, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr, on_step=show)
    print(
        ("\n" if tty else "") + f"suggested lr {result['suggested_lr']} after {result['steps']} steps in {result['seconds']} s",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0
