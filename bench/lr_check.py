"""`python -m bench.lr_check`: does the learning-rate finder's suggestion train as well as the recipe's lr?

For each preset, data set and seed: one sweep (`core.lr_find`, as the Train page's button runs it), then two runs
with the same seed and epochs, one at the recipe's lr and one at the suggested lr, and both accuracies on the
held-out images. Where the sweep is inconclusive the page keeps the recipe's lr, so that row's two runs are the
same run (trained once), and so are the rows where the sweep agrees with the recipe ("fits"). The finder is doing
its job when every row's difference is above -2 points. `--set lr=1e-4` (any TrainConfig field: optimizer=sgd)
starts from settings the recipe was not tuned for; where the sweep finds their lr outside its valley, the
suggestion moves it and should do better.

Data: `shapes` (the default 12,000 training images, 3 epochs) and a slice of the real CIFAR-10 dev images
(`--per-class` training and test images per class, extracted once into .bench/; 2 epochs). Prints a Markdown table,
one row as each finishes; progress and the machine go to stderr. CPU-bound: run it under `nice` on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.measure import DEV_TAR, ROOT, extract_dev_slice, log, machine
from core.errors import PlaygroundError
from core.training.config import TrainConfig
from core.training.loop import train
from core.training.lr_find import STEPS, lr_find

EPOCHS = {"shapes": 3, "cifar": 2}
PRESETS = ("cifar10_quick", "lenet5", "mycnn", "speedrun")
HEADER = "| preset | data | seed | recipe lr | suggested lr (read off) | recipe acc | suggested acc | difference |"


def data_spec(kind: str, per_class: tuple[int, int]) -> str:
    if kind == "shapes":
        return "shapes"
    if not DEV_TAR.exists():
        raise PlaygroundError(f"The CIFAR-10 dev images are not at {DEV_TAR}; run with --data shapes.")
    folder = ROOT / ".bench" / f"cifar10-slice-{per_class[0]}-{per_class[1]}"
    if not (folder / "test").exists():
        log(f"extracting {per_class[0]} training and {per_class[1]} test images per class -> {folder}")
        extract_dev_slice(folder, *per_class)
    return f"imagefolder:{folder}"


def accuracy(config: TrainConfig, folder: Path) -> float:
    try:
        return train(config, folder)["val_acc"]
    except PlaygroundError as exc:  # the loss blew up: the run failed, which is what this check is there to catch
        log(f"  the run failed: {exc}")
        return 0.0


def check(preset: str, kind: str, seed: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One row: the sweep, then the recipe's run and (when it differs) the suggestion's run."""
    config = TrainConfig.for_model(
        preset,
        data=data_spec(kind, args.per_class),
        epochs=EPOCHS[kind],
        seed=seed,
        precision=args.precision,
        health=False,
        **dict(args.set),
    )
    log(f"{preset} on {kind}, seed {seed}: sweeping")
    found = lr_find(config, steps=args.steps)
    log(f"  suggested {found['suggested_lr']} ({found['suggested_by']}) in {found['seconds']} s; training at the recipe's lr {config.lr:g}")
    recipe = accuracy(config, folder / f"{preset}-{kind}-{seed}-recipe")
    if found["suggested_lr"] in (None, config.lr):
        suggested = recipe  # the page keeps the recipe's lr: the same run
    else:
        log(f"  training at the suggested lr {found['suggested_lr']:g}")
        suggested = accuracy(dataclasses.replace(config, lr=found["suggested_lr"]), folder / f"{preset}-{kind}-{seed}-suggested")
    return {
        "preset": preset + "".join(f", {k}={v}" for k, v in args.set),
        "data": kind,
        "seed": seed,
        "epochs": config.epochs,
        "recipe_lr": config.lr,
        "suggested_lr": found["suggested_lr"],
        "valley_lr": found["valley_lr"],
        "suggested_by": found["suggested_by"],
        "recipe_acc": recipe,
        "suggested_acc": suggested,
        "difference": suggested - recipe,
    }


def setting(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a plain word: optimizer=sgd


def markdown_row(row: dict[str, Any]) -> str:
    if row["suggested_lr"] in (None, row["recipe_lr"]):
        read = f"; read off {row['valley_lr']:.2g}" if row["valley_lr"] else ""
        lr = f"kept ({row['suggested_by']}{read})"
    else:
        lr = f"{row['suggested_lr']:g} ({row['valley_lr']:.2g})"
    return (
        f"| {row['preset']} | {row['data']} | {row['seed']} | {row['recipe_lr']:g} | {lr} | {100 * row['recipe_acc']:.1f}% "
        f"| {100 * row['suggested_acc']:.1f}% | {100 * row['difference']:+.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lr_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names")
    p.add_argument("--data", default="shapes,cifar", help="comma-separated: shapes, cifar")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--seeds-for", default="cifar10_quick", help="presets that run every seed (the others run the first)")
    p.add_argument("--per-class", type=int, nargs=2, default=(500, 100), metavar=("TRAIN", "TEST"))
    p.add_argument("--steps", type=int, default=STEPS, help="the sweep's steps (the Train page's: %(default)s)")
    p.add_argument("--precision", default="auto")
    p.add_argument(
        "--set",
        type=setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TrainConfig field that differs from the recipe (lr=1e-4, optimizer=sgd): settings it was not tuned for",
    )
    p.add_argument("--json", action="store_true", help="also print the rows as one JSON document at the end")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    log(json.dumps(machine()))
    rows = []
    print(HEADER + "\n" + "| --- " * (HEADER.count("|") - 1) + "|", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="lr-check-") as tmp:
            for kind in args.data.split(","):
                for preset in args.presets.split(","):
                    for seed in seeds if preset in args.seeds_for.split(",") else seeds[:1]:
                        rows.append(check(preset, kind, seed, args, Path(tmp)))
                        print(markdown_row(rows[-1]), flush=True)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    worst = min(r["difference"] for r in rows)
    print(f"\nworst difference {100 * worst:+.1f} points ({'within' if worst >= -0.02 else 'NOT within'} 2 points)", flush=True)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
