"""`python -m core.train`: the command line of the training loop, and the progress it prints on stderr."""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from core.errors import PlaygroundError, command
from core.serving import runs
from core.training import losses
from core.training.config import SCHEDULES, SHARED_OPTIONS, TrainConfig, add_shared_options, layers_option
from core.training.health import Watcher
from core.training.loop import resume, train
from core.training.runlog import Dist


def _progress_printer(stream=sys.stderr, config: dict[str, Any] | None = None) -> Callable[[dict[str, Any]], None]:
    tty = stream.isatty()
    watcher: list[Watcher] = []  # made when the running status says how many classes there are
    caveat: list[tuple[int, str]] = []  # (test images, warning) when the test split is too small to mean much

    def show(r: dict[str, Any]) -> None:
        if r["kind"] == "status" and r.get("num_classes"):
            watcher[:] = [Watcher(int(r["num_classes"]), config)]
            caveat[:] = [(r["n_test"], r["test_split_warning"])] if r.get("test_split_warning") else []
        if r["kind"] == "step" and tty:
            speed = f"{r['img_per_s']:.0f} img/s " if r.get("img_per_s") else ""  # none yet while warming up
            stream.write(f"\repoch {r['epoch'] + 1} step {r['step']}  loss {r['loss']:.3f}  acc {r['acc']:.3f}  lr {r['lr']:.2e}  {speed}")
        elif r["kind"] == "epoch":
            stream.write(
                ("\n" if tty else "") + f"epoch {r['epoch']}: train loss {r['train_loss']:.3f} acc {r['train_acc']:.3f} | "
                f"test loss {r['test_loss']:.3f} acc {r['test_acc']:.3f}{f' (of {caveat[0][0]} images)' if caveat else ''} | "
                f"{r['elapsed']:.1f}s\n"
            )
        elif r["kind"] == "status":
            stream.write(f"{r['status']}" + (f": {r['message']}" if r.get("message") else "") + "\n")
            if caveat:  # when training starts, and beside the final result
                stream.write(f"warning: {caveat[0][1]}\n")
        for warning in watcher[0].add(r) if watcher else []:  # each health warning once (core.training.health)
            stream.write(("\n" if tty and r["kind"] == "health" else "") + f"health {warning.level}: {warning.message}\n")
        stream.flush()

    return show


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.train", description="Train an image classifier into a run folder.")
    add_shared_options(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--loss", choices=list(losses.LOSSES), help="training loss (the test loss is always cross-entropy)")
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--time-limit", type=float, metavar="SECONDS")
    p.add_argument("--compile", action="store_true", default=None)
    p.add_argument(
        "--health",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="record per-layer training health at log intervals, about 10 an epoch (default on; --no-health: off)",
    )
    p.add_argument("--out", metavar="RUN_DIR", help="the run folder itself (default models/<run-id>)")
    p.add_argument("--config", metavar="JSON", help="a config.json to start from (the studio uses this)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run to its configured epochs")
    p.add_argument("--name", help=f"a short name for the run (up to {runs.NAME_MAX} characters; kept in meta.json)")
    return p


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (torchrun stopping the other ranks, `kill`) saves nothing mid-step but records the run as interrupted.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.resume:
            result = resume(args.resume, on_record=_progress_printer(config=runs.read_config(args.resume)), name=args.name)
        else:
            overrides = {
                k: getattr(args, k)
                for k in (
                    *SHARED_OPTIONS,
                    "epochs",
                    "lr",
                    "weight_decay",
                    "label_smoothing",
                    "loss",
                    "schedule",
                    "time_limit",
                    "compile",
                    "health",
                )
            }
            if args.config:
                base = TrainConfig.from_dict(json.loads(Path(args.config).read_text())).to_dict()
                config = TrainConfig.from_dict(
                    {**base, **{k: v for k, v in overrides.items() if v is not None}, **({"model": args.model} if args.model else {})}
                )
            else:
                if not args.model or not args.data:
                    raise PlaygroundError("--model and --data are required (or --resume RUN_DIR).")
                if args.layers:
                    overrides["layers"] = layers_option(args.layers)
                config = TrainConfig.for_model(args.model, **overrides)
            result = train(config, args.out, on_record=_progress_printer(config=config.to_dict()), name=args.name)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # A stopped run's StopRequested traceback keeps the DDP model (and its gloo work) alive in a reference
            # cycle; freed at interpreter exit instead, it aborted a rank ("terminate called without an active
            # exception"). Collected now, the process group goes down with nothing still using it.
            gc.collect()
            torch.distributed.destroy_process_group()
    if Dist.from_env().main:
        print(json.dumps(result))
    return 0 if result["status"] in ("finished", "stopped") else 1
