"""`python -m bench --gpu`: the speedrun preset against airbench on the same GPU and the same images.

Rows (a Markdown table, then the raw figures with --json):
- airbench94 / airbench94_muon: the user's copy of each script (`--airbench PATH ...`), run by `bench.airbench`
  in its own process on our image folder: mean test accuracy (with its test-time augmentation) and mean training
  time as the script itself reports it, over `--runs` runs after a warm-up run;
- `python -m core.train --model speedrun`: the same images, `--seeds` seeds; test accuracy (mean and spread),
  training time (from the run's "running" record to its final record: every step, the evaluation after each
  epoch, the final test-time-augmented evaluation and the checkpoints; airbench's own timer leaves out its
  per-epoch evaluation), and the whole command, cold (empty data cache: the JPEGs are decoded) and warm;
- the same with `--compile` (compilation counts in the training time).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.measure import ROOT, log, run_train
from core.data.spec import DataSpec
from core.serving import runs


def airbench(script: Path, folder: Path, runs_: int, workdir: Path) -> dict[str, Any]:
    """`python -m bench.airbench` in a child process: its own CUDA context and global settings."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.airbench", str(script), "--data", str(folder), "--workdir", str(workdir), "--runs", str(runs_)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def training_seconds(run_dir: str | os.PathLike) -> float:
    """Seconds from the run's "running" record (data loaded, model built) to its final record."""
    records, _ = runs.read_metrics(run_dir)
    statuses = [r for r in records if r.get("kind") == "status"]
    running = next(r for r in statuses if r["status"] == "running")
    return round(statuses[-1]["elapsed"] - running["elapsed"], 3)


def speedrun(folder: Path, tmp: Path, label: str, seeds: int, extra: list[str] | None = None) -> list[dict[str, Any]]:
    """`python -m core.train --model speedrun` once per seed: its result, training time and wall time.

    All runs share one data folder (`--data-dir`) that starts empty: the first run ("cold") decodes the JPEGs and
    caches them, the later ones ("warm") read the cache.
    """
    data_dir = tmp / "data"
    out = []
    for seed in range(seeds):
        run_dir = tmp / f"speedrun-{label}-{seed}"
        args = [
            "--model",
            "speedrun",
            "--data",
            str(DataSpec.folder_of(folder)),
            "--seed",
            str(seed),
            "--data-dir",
            str(data_dir),
            "--out",
            str(run_dir),
            *(extra or []),
        ]
        result = run_train(args)
        result["training_s"] = training_seconds(run_dir)
        result["seed"] = seed
        config = json.loads((run_dir / runs.CONFIG_FILE).read_text())
        result["recipe"] = {k: config.get(k) for k in ("epochs", "batch_size", "lr", "widths", "tta", "cuda_graphs", "compile")}
        result["precision"] = config["env"]["precision"]
        # what the run went on without (core/training/fallback.py): its figures are then not those of the fast path
        result["switched_off"] = sorted(runs.summarize(runs.read_metrics(run_dir)[0])["switched_off"])
        log(f"  seed {seed}: acc {result['val_acc']:.4f}, training {result['training_s']} s, whole command {result['wall_s']} s")
        out.append(result)
    return out


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def measure(folder: Path, scripts: list[Path], runs_: int, seeds: int, compile_: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "airbench": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        log("speedrun, cold (empty data cache)...")
        figures["speedrun_cold"] = speedrun(folder, tmp, "cold", 1)[0]
        log(f"speedrun, warm, {seeds} seeds...")
        figures["speedrun"] = speedrun(folder, tmp, "warm", seeds)
        if compile_:
            log("speedrun --compile...")
            figures["speedrun_compile"] = speedrun(folder, tmp, "compile", 1, ["--compile"])
        for script in scripts:  # last: a compiled script (airbench94_muon) can take minutes to warm up
            log(f"{script.name} ({runs_} runs after a warm-up)...")
            figures["airbench"][script.stem] = airbench(script, folder, runs_, tmp / f"work-{script.stem}")
            log(f"  {figures['airbench'][script.stem]}")
    return figures


def table(figures: dict[str, Any]) -> str:
    rows = ["| | test accuracy | training time | whole command |", "| --- | --- | --- | --- |"]
    reference = None
    for name, result in figures["airbench"].items():
        acc, acc_sd = _mean_sd(result["accs"])
        secs = [s for s in result["seconds"] if s is not None]
        mean_s = statistics.fmean(secs) if secs else float("nan")
        reference = reference if reference is not None else mean_s
        rows.append(
            f"| {name} ({result['runs']} runs after a warm-up; its own timer) | {100 * acc:.2f}% ± {100 * acc_sd:.2f} | "
            f"{mean_s:.2f} s | - |"
        )
    ours = figures["speedrun"]
    acc, acc_sd = _mean_sd([r["val_acc"] for r in ours])
    train_s, train_sd = _mean_sd([r["training_s"] for r in ours])
    wall = statistics.fmean(r["wall_s"] for r in ours)
    recipe = ours[0]["recipe"]
    ratio = f" ({train_s / reference:.2f}x {next(iter(figures['airbench']))})" if reference else ""
    rows.append(
        f"| `python -m core.train --model speedrun` ({recipe['epochs']} epochs, batch {recipe['batch_size']}, widths "
        f"{'/'.join(map(str, recipe['widths'] or [32, 128, 128]))}, {ours[0]['precision']}, {len(ours)} seeds) | "
        f"{100 * acc:.2f}% ± {100 * acc_sd:.2f} | {train_s:.2f} s ± {train_sd:.2f}{ratio} | "
        f"{wall:.1f} s warm, {figures['speedrun_cold']['wall_s']:.1f} s cold |"
    )
    if "speedrun_compile" in figures:
        c = figures["speedrun_compile"][0]
        rows.append(
            f"| same with `--compile` (1 run) | {100 * c['val_acc']:.2f}% | {c['training_s']:.2f} s incl. compile | "
            f"{c['wall_s']:.1f} s warm |"
        )
    n_test = next(iter(figures["airbench"].values()), {}).get("n_test")
    head = f"{figures['gpu']}, torch {figures['torch']}, CUDA {figures['cuda']}" + (f"; {n_test} test images" if n_test else "")
    ran = [figures["speedrun_cold"], *ours, *figures.get("speedrun_compile", [])]
    off = sorted({what for r in ran for what in r.get("switched_off", [])})
    note = f"\n\nSwitched off during some of our runs after failing on this machine: {', '.join(off)}." if off else ""
    return head + "\n\n" + "\n".join(rows) + note
