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
5. Read the curve as fastai's `valley` does (its default since fastai PR 3377; the steepest point it replaced moves
   by a decade with one noisy step, and often sits right before the blow-up): the *valley* is the longest
   descending stretch of the smoothed loss (its longest decreasing subsequence, so a blip of noise does not cut it
   in two), after the first tenth of the sweep (where the moving average has too little history), and starting once
   a tenth of its fall is done (a plateau before the descent may drift down by a hair for decades of lr). The lr
   read off is halfway along it in log lr: the loss still falls steadily there, well short of the minimum. Not the
   steepest point, often a cliff right before the blow-up; not the point halfway down in loss either, which lands
   on that cliff too when the cliff makes most of the fall. Without the trim, a drifting plateau dragged the point
   towards tiny lrs: mycnn on CIFAR read 1.4e-4, and its suggestion trained 4 points worse than the recipe's 3e-3.
6. Map that lr to the run's schedule. The sweep holds each lr for one step: what it finds is a *constant* lr that
   still trains well. A run's schedule is not constant: one-cycle warms up from `warmup_start` x lr and decays
   linearly to 0, so its lr averages about half its peak (`mean_lr_factor`). The suggestion is the peak whose
   schedule averages the lr read off (for one-cycle about 2x it; a constant schedule without warm-up keeps it).
   Measured (`python -m bench.lr_check`, 2 epochs on 500 CIFAR-10 dev images per class, the only preset and data
   where a 100-step sweep was conclusive): mycnn read 6.3e-4; at 3e-4, 1e-3, 3e-3 (the recipe's) and 6e-3 as
   the one-cycle peak it trains to 37.3%, 40.8%, 41.5% and 40.9%, so the read-off lr taken as the peak (fastai's
   use) would land about 2 points below the recipe, and the mapped 1.2e-3 trained 0.9 below it. These small
   networks want a peak near the top of the valley (cifar10_quick: 32.1%, 41.5%, 45.0%, 46.5% at the same four
   lrs), so a suggestion that errs low costs accuracy fast: the doubling helps, and step 7 guards the rest.
7. Keep the run's own lr when the curve agrees with it (`suggested_by` "fits", `suggested_lr` that lr): when the
   lr (the recipe's, on the Train page), averaged over its schedule, lies inside the valley. The sweep reads an lr to
   within a factor of a few, and a tuned recipe inside that range is the better guess: mycnn on CIFAR (the same
   bench) read 6.3e-4, 4.3e-4 and 3.0e-4 on seeds 0, 1 and 2, and the doubled reads trained 0.9, 3.7 and 4.1 points
   below the recipe's 3e-3, which averages 1.5e-3 inside all three valleys. The reading moves the lr only when the
   run's lr is outside the valley: above where the loss stops falling (it would blow up) or below where it starts
   (it would hardly train). Measured: mycnn on CIFAR started at lr 1e-4 or 0.05 instead of the recipe's, the
   suggested 1.2e-3 trained 8 and 28 points better than those.
8. Be honest when the curve says nothing. The sweep is *inconclusive* (`suggested_lr` None, `suggested_by` says
   why, `note` says it in words; the recipe's lr is the one to keep) when:
   - "too_few_steps": fewer than 20 readable steps after the first tenth (the loss blew up almost at once, or
     --steps is under 23);
   - "no_descent": the valley lowers the smoothed loss by less than 5%: in 100 steps a small network trained
     from scratch often has not started to learn yet, and a long, shallow slope is the moving average drifting;
   - "noisy": the valley's fall is under 3.5 standard deviations of the noise left in the smoothed loss (per-step
     losses that scatter widely: a tiny batch), a fall that noise alone could draw.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from core import device as dev
from core.data.batches import BatchLoader, normalize_batch
from core.errors import PlaygroundError, command
from core.training.config import SHARED_OPTIONS, TrainConfig, add_shared_options, layers_option
from core.training.parts import load_data, lr_factor, make_model, make_optimizer

STEPS, MAX_STEPS = 100, 500
START_LR, END_LR = 1e-7, 10.0
BETA = 0.98  # fastai's smoothing of the per-step losses
DIVERGE = 4.0  # stop once the smoothed loss exceeds this many times its best
SKIP = 0.1  # the first tenth of the sweep: the moving average has too little history to read
MIN_STEPS = 20  # fewer readable steps than this: no curve to read
MIN_DROP = 0.05  # the valley must lower the smoothed loss by 5% of its level
# ... and by 3.5 standard deviations of the noise in the smoothed loss: the valley of pure noise falls by up to about
# 2.6 of them (the largest of 900 simulated sweeps of 30, 100 and 300 steps).
NOISE_SIGMAS = 3.5
TRIM = 0.1  # the valley proper starts once it has made this fraction of its fall
NOTES = {
    "too_few_steps": "{short}, too few to read a curve",
    "no_descent": "the smoothed loss never fell by {min_drop:.0%} (at most {drop:.1%}) before {ended}: "
    "a small network trained from scratch often needs more steps than the sweep has before it starts to learn",
    "noisy": "the loss fell by {drop:.1%} but the per-step losses scatter by {noise:.2f}, so the fall is not clearly real",
    "fits": "over the {schedule} schedule the lr {lr:g} averages {average:.2g}, inside the stretch where the loss keeps "
    "falling ({valley[0]:.2g} to {valley[1]:.2g}): the sweep cannot tell a better one apart",
}


class Reading(NamedTuple):
    """What the curve says: the lr read off it (None when inconclusive), why, and the valley's ends (indices)."""

    lr: float | None
    how: str
    valley: tuple[int, int] | None = None
    drop: float = 0.0  # the valley's fall, as a fraction of the smoothed loss where it starts
    noise: float = 0.0  # the spread of one step's loss (a robust standard deviation)


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """fastai's debiased exponential moving average (a non-finite loss stays non-finite)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def longest_descent(values: list[float]) -> tuple[int, int]:
    """The valley: (first, last) index of as many steps as the longest strictly decreasing subsequence of `values`
    has, ending where it ends (the earliest on ties). As fastai's `valley`: the subsequence skips blips of noise, and
    counting back its length from its end puts the start where the descent does start, not at whichever point of a
    plateau before it the subsequence happened to begin with."""
    y = np.asarray(values, dtype=float)
    length = np.ones(len(y), dtype=int)
    for i in range(1, len(y)):
        higher = np.flatnonzero(y[:i] > y[i])
        if higher.size:
            length[i] = length[higher].max() + 1
    last = int(np.argmax(length))
    return last - int(length[last]) + 1, last


def step_noise(raw: list[float]) -> float:
    """The spread of one step's loss around the trend: a robust standard deviation of successive differences / sqrt(2)
    (differences cancel the trend, the median ignores the blow-up)."""
    d = np.diff(np.asarray(raw, dtype=float))
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2))


def suggestion(lrs: list[float], smoothed: list[float], raw: list[float] | None = None) -> Reading:
    """Read the sweep's curve (see the module's docstring, steps 5 and 8): the valley's lr, or why there is none."""
    readable = next((i for i, v in enumerate(smoothed) if not math.isfinite(v)), len(smoothed))
    first = int(len(lrs) * SKIP)
    if readable - first < MIN_STEPS:
        return Reading(None, "too_few_steps")
    start, end = (first + i for i in longest_descent(smoothed[first:readable]))
    drop = (smoothed[start] - smoothed[end]) / abs(smoothed[start])
    noise = step_noise((raw or smoothed)[first:readable])
    valley = (start, end)
    if drop < MIN_DROP:
        return Reading(None, "no_descent", valley, drop, noise)
    if smoothed[start] - smoothed[end] < NOISE_SIGMAS * noise * math.sqrt(_ema_variance(start + 1) + _ema_variance(end + 1)):
        return Reading(None, "noisy", valley, drop, noise)
    # The valley proper starts once a tenth of its fall is done: before that a plateau may drift down by a hair.
    begun = smoothed[start] - TRIM * (smoothed[start] - smoothed[end])
    start = next(i for i in range(start, end + 1) if smoothed[i] <= begun)
    return Reading(lrs[(start + end) // 2], "valley", (start, end), drop, noise)


def _ema_variance(i: int, beta: float = BETA) -> float:
    """The variance of the debiased moving average after `i` steps of unit-variance noise: the sum of its squared
    weights, (1 - beta) / (1 + beta) * (1 + beta**i) / (1 - beta**i); early on (few steps averaged) it is larger."""
    return (1 - beta) / (1 + beta) * (1 + beta**i) / (1 - beta**i)


def mean_lr_factor(config: TrainConfig, total: int = 1000) -> float:
    """The run's lr averaged over its schedule, as a fraction of the peak (`lr`): about 0.5 for one-cycle."""
    return sum(lr_factor(config.schedule, s, total, config.warmup, config.warmup_start) for s in range(total)) / total


def explain(result: dict[str, Any], average_lr: float = math.nan) -> str:
    """Why the sweep suggests no new lr, in words (NOTES filled in from `lr_find`'s result; `average_lr`: the run's
    lr averaged over its schedule)."""
    lrs = result["lrs"]
    blew_up = result["stopped_early"] and lrs
    return NOTES[result["suggested_by"]].format(
        lr=result["suggested_lr"] or math.nan,
        average=average_lr,
        schedule=result["schedule"],
        valley=result["valley"] or [math.nan, math.nan],
        short=f"the loss blew up after only {result['steps']} steps (at lr {lrs[-1]:.2g})"
        if blew_up
        else f"the sweep had only {result['steps']} steps",
        ended=f"it blew up at lr {lrs[-1]:.2g}" if blew_up else "the sweep ended",
        min_drop=MIN_DROP,
        drop=result.get("drop") or 0.0,
        noise=result.get("noise") or 0.0,
    )


def lr_find(
    config: TrainConfig,
    *,
    steps: int = STEPS,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    on_step: Callable[[int, float, float], None] | None = None,
) -> dict[str, Any]:
    """Sweep the learning rate on a throwaway copy of `config`'s model; see the module's docstring.

    Returns {"lrs", "losses" (smoothed), "raw_losses", "suggested_lr" (the schedule's peak lr; None when inconclusive),
    "suggested_by" ("valley": a new lr; "fits": config's own lr; or why there is no suggestion: a key of NOTES),
    "valley_lr" (the constant lr read off the curve), "valley" (the lrs where the valley starts and ends), "schedule",
    "mean_lr_factor", "drop", "noise", "steps", "stopped_early", "seconds", "note" (why there is no new lr, in words;
    None for "valley")}.
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
    return report(config, lrs, raw, stopped_early=stopped_early, seconds=time.perf_counter() - started)


def report(config: TrainConfig, lrs: list[float], raw: list[float], *, stopped_early: bool, seconds: float) -> dict[str, Any]:
    """`lr_find`'s result from a sweep's lrs and per-step losses: the curve, and what it says for `config`'s schedule."""
    smoothed = smooth(raw)
    reading = suggestion(lrs, smoothed, raw)
    mean = mean_lr_factor(config)
    suggested, how = None, reading.how
    if reading.lr is not None and reading.valley is not None:
        low, high = lrs[reading.valley[0]], lrs[reading.valley[1]]
        if low <= config.lr * mean <= high:
            suggested, how = config.lr, "fits"  # step 7: the run's own lr is inside what the curve can tell apart
        else:
            suggested = _sig(reading.lr / mean, 2)  # two digits: what the curve can tell apart; the page fills it in
    result = {
        "lrs": [_sig(v) for v in lrs],
        "losses": [_sig(v) for v in smoothed],
        "raw_losses": [_sig(v) for v in raw],
        "suggested_lr": suggested,
        "suggested_by": how,
        "valley_lr": _sig(reading.lr),  # the constant lr read off the curve; suggested_lr is the schedule's peak
        "valley": [_sig(lrs[i]) for i in reading.valley] if reading.valley else None,
        "schedule": config.schedule,
        "mean_lr_factor": round(mean, 3),
        "drop": round(reading.drop, 4),
        "noise": round(reading.noise, 4),
        "steps": len(lrs),
        "stopped_early": stopped_early,
        "seconds": round(seconds, 2),
    }
    result["note"] = None if how == "valley" else explain(result, config.lr * mean)
    return result


def _sig(value: float | None, digits: int = 5) -> float | None:
    """`digits` significant digits; inf/NaN (a blown-up loss) become None, which JSON can carry."""
    return float(f"{value:.{digits}g}") if value is not None and math.isfinite(value) else None


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
    if result["suggested_by"] == "valley":
        said = (
            f"suggested lr {result['suggested_lr']:g} (the {config.schedule} schedule's peak; "
            f"the loss falls steadily at a constant {result['valley_lr']:g})"
        )
    else:
        kept = "keep the run's lr" if result["suggested_lr"] else "no suggestion, keep the run's lr"
        said = f"{kept} {config.lr:g}: {result['note']}"
    print(("\n" if tty else "") + f"{said}; {result['steps']} steps in {result['seconds']} s", file=sys.stderr)
    print(json.dumps(result))
    return 0
