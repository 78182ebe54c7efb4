"""Try several settings at once: a grid of `core.train` options, each setting trained with a few seeds.

    python -m core.sweep --model cifar10_quick --data shapes:600 --epochs 1 --grid lr=0.0003,0.003,0.03 --seeds 2

One run folder per (setting, seed), each an ordinary run (the Runs page, Predict and the exports use it as any
other) whose config.json carries `sweep`: the sweep's id and that run's settings. The runs go through the same
fair queue as single runs (core.serving.jobs): with `runs_per_device` > 1 they train side by side, and in shared mode a
workspace's sweep takes its turns between other workspaces' runs rather than ahead of them.

Why seeds: two runs that differ only in their seed land apart too (a different initialisation, batch order and
augmentation). A difference between settings means something only when it is larger than that spread, so the
summary reports it beside every comparison: `spread` is the largest distance, in accuracy, between two seeds of one
setting (None with one seed each, when it is unknown).

The sweep's own record is `<models>/.sweeps/<sweep-id>.json` (the grid, the seeds and its runs, in order), which
`--resume` reads to finish the runs an interruption left: stopped or interrupted runs continue from their
checkpoints, runs that never started are queued again.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import PlaygroundError, command
from core.files import write_json
from core.serving import runs
from core.training.config import TrainConfig, add_shared_options, layers_option

if TYPE_CHECKING:  # the queue imports the trainer's config; the command line loads it when it runs
    from core.serving.jobs import JobRegistry

SWEEPS_DIR = ".sweeps"  # in the models folder, beside the queue's .queue
MAX_RUNS = 64  # a grid beyond this is a typo more often than a plan
# Options a grid may not vary: the seed has --seeds, the rest say where and how a run is kept, not how it learns.
NOT_SWEPT = {"seed", "sweep", "layers", "data_dir", "device", "time_limit", "log_every", "widths"}
ALIASES = {"freeze": "freeze_backbone", "batch": "batch_size", "bs": "batch_size", "wd": "weight_decay"}
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TRUE, _FALSE = {"true", "on", "yes", "1"}, {"false", "off", "no", "0"}


# --------------------------------------------------------------------------- the grid


def field_name(key: str) -> str:
    """A grid key as typed (`batch-size`, `lr`, `freeze`) -> the TrainConfig field it sets."""
    name = ALIASES.get(key.strip().lower(), key.strip().lower().replace("-", "_"))
    if name not in _FIELDS or name in NOT_SWEPT:
        choices = ", ".join(sorted(n.replace("_", "-") for n in _FIELDS if n not in NOT_SWEPT))
        raise PlaygroundError(f"--grid {key}: not an option a sweep can vary; choose one of {choices}.")
    return name


def parse_value(name: str, text: str) -> Any:
    """One grid value, typed as the field is (`augment=on,off`, `lr=1e-3`, `weights=none,DEFAULT`)."""
    default, raw = _FIELDS[name].default, text.strip()
    if raw.lower() == "none" and (default is None or name == "weights"):
        return None
    try:
        if isinstance(default, bool):
            if raw.lower() not in _TRUE | _FALSE:
                raise ValueError
            return raw.lower() in _TRUE
        if isinstance(default, int) and name not in ("ema",):
            return int(raw)
        if isinstance(default, float) or name in ("lr", "ema"):
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        kind = "on or off" if isinstance(default, bool) else "a whole number" if isinstance(default, int) else "a number"
        raise PlaygroundError(f"--grid {name.replace('_', '-')}: {raw!r} is not {kind}.") from None
    if not raw:
        raise PlaygroundError(f"--grid {name.replace('_', '-')}: an empty value; give values separated by commas.")
    return raw


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`["lr=0.01,0.1", "optimizer=sgd,adamw"]` -> {"lr": [0.01, 0.1], "optimizer": ["sgd", "adamw"]}, in order."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise PlaygroundError(f"--grid {item}: write KEY=V1,V2 (for example lr=0.001,0.01,0.1).")
        name = field_name(key)
        if name in grid:
            raise PlaygroundError(f"--grid {key} is given twice; put all its values in one --grid {key}=V1,V2.")
        parsed = [parse_value(name, v) for v in values.split(",")]
        grid[name] = list(dict.fromkeys(parsed))  # a repeated value would only train the same setting twice
    if not grid:
        raise PlaygroundError("A sweep needs at least one --grid KEY=V1,V2.")
    return grid


def settings_of(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def default_values(name: str, recipe: TrainConfig) -> list[Any]:
    """A sensible first grid for one field around the recipe's value (the Train page's default)."""
    value = getattr(recipe, name)
    if name == "lr":
        return [_round(value / 10), value, _round(value * 10)]
    if name in ("batch_size", "epochs"):
        return sorted({max(1, value // 2), value, value * 2})
    if name == "weight_decay":
        return [0.0, value, _round(value * 10)] if value else [0.0, 5e-4, 5e-3]
    if name == "label_smoothing":
        return [0.0, 0.1]
    if isinstance(value, bool):
        return [value, not value]
    choices = {"optimizer": ("sgd", "adam", "adamw"), "schedule": ("onecycle", "cosine", "step", "constant")}
    if name in choices:
        return [value, *[c for c in choices[name] if c != value]][:2]
    return [value]


def _round(x: float) -> float:
    return float(f"{x:.3g}")


# --------------------------------------------------------------------------- the sweep's record


@dataclass
class Sweep:
    """What was asked for and which run folder holds each (setting, seed); saved as .sweeps/<id>.json."""

    sweep_id: str
    base: dict[str, Any]  # the TrainConfig overrides every run shares (model, data, epochs, ...)
    grid: dict[str, list[Any]]
    seeds: list[int]
    runs: list[dict[str, Any]] = field(default_factory=list)  # {"run_id", "settings", "seed"}, setting-major
    created: float = field(default_factory=time.time)
    workspace: str | None = None

    @staticmethod
    def new_id(model: str) -> str:
        return f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{model[:24]}-{secrets.token_hex(2)}"

    def configs(self) -> list[tuple[dict[str, Any], int, TrainConfig]]:
        """(settings, seed, config) per run to make: each model's own recipe, then the shared options, then the setting."""
        out = []
        for settings in settings_of(self.grid):
            for seed in self.seeds:
                overrides = {**self.base, **settings, "seed": seed}
                model = overrides.pop("model")
                config = TrainConfig.for_model(model, **overrides)
                config.sweep = {"id": self.sweep_id, "settings": settings}
                config.validate()
                out.append((settings, seed, config))
        return out

    def path(self, root: str | os.PathLike) -> Path:
        return Path(root) / SWEEPS_DIR / f"{self.sweep_id}.json"

    def save(self, root: str | os.PathLike) -> None:
        self.path(root).parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path(root), dataclasses.asdict(self))

    @classmethod
    def load(cls, root: str | os.PathLike, sweep: str) -> Sweep:
        """By id, or by the path of its .json."""
        path = Path(sweep) if sweep.endswith(".json") else Path(root) / SWEEPS_DIR / f"{sweep}.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise PlaygroundError(f"No sweep {sweep!r} in {Path(root) / SWEEPS_DIR} (give its id or its .json path).") from None
        except (ValueError, TypeError) as exc:
            raise PlaygroundError(f"{path} is not a sweep record ({exc}).") from None


def list_sweeps(root: str | os.PathLike | None = None) -> list[Sweep]:
    """The sweeps recorded in a models folder, newest first (unreadable records are skipped)."""
    folder = Path(root or runs.MODELS_DIR) / SWEEPS_DIR
    found = []
    for path in sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []:
        try:
            found.append(Sweep.load(folder.parent, str(path)))
        except PlaygroundError:
            continue
    return found


def delete_sweep(root: str | os.PathLike, sweep: Sweep) -> None:
    """The sweep's runs, then its record; refused while any of its runs is queued or training."""
    folders = [Path(root) / r["run_id"] for r in sweep.runs if (Path(root) / r["run_id"]).is_dir()]
    if any(runs.run_info(f).active for f in folders):
        raise PlaygroundError("Some of this sweep's runs are queued or training; stop the sweep before deleting it.")
    for folder in folders:
        runs.delete_run(folder, root)
    sweep.path(root).unlink(missing_ok=True)


# --------------------------------------------------------------------------- results


def results(sweep: Sweep, root: str | os.PathLike) -> dict[str, Any]:
    """The CLI's document: every run with its settings, seed, status and accuracy; the best setting (highest mean
    accuracy over its finished seeds) with its spread; and the sweep's `spread` (see the module's docstring)."""
    rows = []
    for r in sweep.runs:
        folder = Path(root) / r["run_id"]
        info = runs.run_info(folder) if (folder / runs.CONFIG_FILE).exists() else None
        rows.append(
            {
                "run_dir": str(folder),
                "settings": r["settings"],
                "seed": r["seed"],
                "status": info.status if info else "missing",
                "val_acc": info.last_acc if info and info.status == "finished" else None,
            }
        )
    by_setting: dict[str, list[float]] = {}
    for row in rows:
        if row["val_acc"] is not None:
            by_setting.setdefault(json.dumps(row["settings"], sort_keys=True), []).append(row["val_acc"])
    groups = [
        {
            "settings": json.loads(key),
            "mean_acc": statistics.fmean(accs),
            "spread": max(accs) - min(accs) if len(accs) > 1 else None,
            "n": len(accs),
        }
        for key, accs in by_setting.items()
    ]
    spreads = [g["spread"] for g in groups if g["spread"] is not None]
    best = max(groups, key=lambda g: g["mean_acc"], default=None)
    return {
        "sweep": sweep.sweep_id,
        "runs": rows,
        "settings": groups,
        "best": best and {k: best[k] for k in ("settings", "mean_acc", "spread")},
        "spread": max(spreads) if spreads else None,
        "verdict": verdict(groups, sweep.grid, max(spreads) if spreads else None),
    }


def verdict(groups: list[dict[str, Any]], grid: dict[str, list[Any]], spread: float | None) -> str:
    """One sentence on what mattered, said with the seed-to-seed spread.

    The field that mattered is the one whose values move the mean accuracy most (each value's mean over the other
    fields' values); its best and worst value are compared, and the gap is weighed against the spread.
    """
    if len(groups) < 2:
        return "Too few settings have finished to compare." if groups else "No run of this sweep has finished yet."

    def points(x: float) -> str:
        return f"{100 * x:.1f}".rstrip("0").rstrip(".") + " point" + ("" if round(100 * x, 1) == 1 else "s")

    effects = []
    for name, values in grid.items():
        means = {}
        for value in values:
            accs = [g["mean_acc"] for g in groups if g["settings"].get(name) == value]
            if accs:
                means[json.dumps(value)] = statistics.fmean(accs)
        if len(means) >= 2:
            hi, lo = max(means, key=means.get), min(means, key=means.get)
            effects.append((means[hi] - means[lo], name, json.loads(hi), json.loads(lo)))
    if not effects:
        return "Too few settings have finished to compare."
    gap, name, hi, lo = max(effects, key=lambda e: e[0])
    label = name.replace("_", " ")
    said = f"{label} {runs.setting_word(hi)} beat {runs.setting_word(lo)} by {points(gap)}"
    if len(grid) > 1:
        said = f"{label} mattered most: {said} on average"
    if spread is None:
        return f"{said}; each setting ran with one seed, so how far seeds land apart is unknown: add seeds before trusting a gap of a few points."
    if spread == 0:
        return f"{said}; seeds of one setting gave the same accuracy here, so {'this is real' if gap > 0 else 'they are the same'}."
    judged = (
        "so this is real"
        if gap >= 2 * spread
        else "so it is probably real; more seeds would tell"
        if gap > spread
        else "so this may be chance: run more seeds before believing it"
    )
    return f"{said}; seeds of one setting differ by up to {points(spread)}, {judged}."


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.sweep",
        description="Train a grid of settings, each with a few seeds, through the fair queue; print what mattered.",
    )
    add_shared_options(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float, help="the lr of every run, unless the grid varies it")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="an option and its values (repeatable)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per setting (default 1): 2 or more show the spread")
    p.add_argument("--out", metavar="DIR", help="the models folder the runs go into (default models/)")
    p.add_argument("--resume", metavar="SWEEP", help="finish an interrupted sweep: its id or its .json")
    return p


def plan(args: argparse.Namespace) -> Sweep:
    """The Sweep the command line asks for (not yet started)."""
    if not args.model or not args.data:
        raise PlaygroundError("--model and --data are required (or --resume SWEEP).")
    if args.seeds < 1:
        raise PlaygroundError("--seeds must be at least 1.")
    grid = parse_grid(args.grid)
    base = {
        k: getattr(args, k)
        for k in (
            "data",
            "batch_size",
            "optimizer",
            "weights",
            "freeze_backbone",
            "image_size",
            "device",
            "precision",
            "data_dir",
            "epochs",
            "lr",
        )
    }
    base = {"model": args.model, **{k: v for k, v in base.items() if v is not None}}
    if args.layers:
        base["layers"] = layers_option(args.layers)
    first_seed = args.seed or 0
    sweep = Sweep(Sweep.new_id(str(grid.get("model", [args.model])[0])), base, grid, list(range(first_seed, first_seed + args.seeds)))
    count = len(settings_of(grid)) * len(sweep.seeds)
    if count > MAX_RUNS:
        raise PlaygroundError(f"This grid makes {count} runs; a sweep takes at most {MAX_RUNS}. Use fewer values or seeds.")
    sweep.configs()  # every run's config validates before anything is queued
    return sweep


def start(registry: JobRegistry, sweep: Sweep, *, workspace: str | None = None) -> list[Path]:
    """Queue every run of a new sweep (all or none, within the workspace's quotas) and record the sweep."""
    planned = sweep.configs()
    sweep.workspace = workspace
    folders = registry.enqueue_many([config for _, _, config in planned], workspace=workspace)
    sweep.runs = [{"run_id": f.name, "settings": settings, "seed": seed} for f, (settings, seed, _) in zip(folders, planned)]
    sweep.save(registry.root)
    registry.dispatch()
    registry.ensure_dispatcher()  # the studio's queue thread starts the rest as slots free up
    return folders


def stop(registry: JobRegistry, sweep: Sweep) -> None:
    """Take the sweep's waiting runs out of the queue and stop its training ones (each saves a checkpoint)."""
    for r in sweep.runs:
        folder = registry.root / r["run_id"]
        if folder.is_dir() and runs.run_info(folder).active:
            registry.stop(folder)


def resume(registry: JobRegistry, sweep: Sweep) -> int:
    """Queue again what an interruption left: runs with a checkpoint continue from it, runs that never began start
    over; finished runs stay as they are. Returns how many runs were queued."""
    queued = 0
    for r in sweep.runs:
        folder = registry.root / r["run_id"]
        info = runs.run_info(folder) if (folder / runs.CONFIG_FILE).exists() else None
        if info is None or info.active or info.status == "finished":
            continue
        if info.resumable or not info.has_checkpoint:
            registry.resume(folder, workspace=sweep.workspace, restart=True)
            queued += 1
    return queued


def follow(registry: JobRegistry, sweep: Sweep, say: Callable[[str], None], tick_s: float = 0.5) -> bool:
    """Dispatch the queue until every run of the sweep has ended, saying each end; True when Ctrl-C stopped it
    (its runs are then stopped cleanly: checkpoints saved, waiting runs taken out of the queue)."""
    folders = [registry.root / r["run_id"] for r in sweep.runs]
    told: set[str] = set()
    interrupted = False
    while True:
        try:
            registry.poll()
            registry.dispatch(wait_s=1.0)
            infos = [runs.run_info(f) for f in folders]
            for i, (info, r) in enumerate(zip(infos, sweep.runs), 1):
                if not info.active and info.status != "created" and info.run_id not in told:
                    told.add(info.run_id)
                    acc = f"test accuracy {info.last_acc:.3f}" if info.last_acc is not None else info.message
                    say(f"run {i}/{len(folders)} {info.status}: {runs.describe_settings(r['settings'])}, seed {r['seed']}: {acc}")
            if all(not info.active for info in infos):
                return interrupted
            time.sleep(tick_s)
        except KeyboardInterrupt:
            if interrupted:
                raise  # a second Ctrl-C: leave now; the runs still stop by themselves
            interrupted = True
            say("stopping the sweep's runs (each saves a checkpoint); Ctrl-C again to leave without waiting")
            stop(registry, sweep)


@command
def main(argv: list[str] | None = None) -> int:
    from core.serving.jobs import JobRegistry

    args = build_parser().parse_args(argv)
    root = Path(args.out) if args.out else runs.MODELS_DIR
    registry = None
    try:
        registry = JobRegistry(root, autostart=False)
        if args.resume:
            sweep = Sweep.load(root, args.resume)
            resume(registry, sweep)
        else:
            sweep = plan(args)
            start(registry, sweep)
            print(f"sweep {sweep.sweep_id}: {len(sweep.runs)} runs queued in {root}", file=sys.stderr, flush=True)
        interrupted = follow(registry, sweep, lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        if registry is not None:
            registry.close()
    document = results(sweep, root)
    print(document["verdict"], file=sys.stderr)
    if interrupted:
        print(
            f"stopped: finish it with python -m core.sweep --resume {sweep.sweep_id}" + (f" --out {args.out}" if args.out else ""),
            file=sys.stderr,
        )
    print(json.dumps(document))
    return 130 if interrupted else 0 if all(r["status"] == "finished" for r in document["runs"]) else 1
