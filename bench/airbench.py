"""airbench's own script, run on our data: the reference rows of `python -m bench --gpu`.

The script is the user's copy of https://github.com/KellerJordan/cifar10-airbench (`airbench94.py`,
`airbench94_muon.py`); nothing of it is copied into this project. Its CifarLoader reads `cifar10/train.pt` and
`cifar10/test.pt` in the working directory (a dict of uint8 NHWC `images`, `labels` and `classes`) and downloads
CIFAR-10 only when they are missing, so `prepare_data` writes them from the image folder our runs train on: both
train and test on identical images.

`python -m bench.airbench SCRIPT --data FOLDER --runs N` imports the script as a module in this process (so its
global settings stay out of ours), calls its `main` once as a warm-up (its "warmup" run: random labels) and then N
times, and prints one JSON document: each run's test accuracy (what `main` returns: with its test-time
augmentation) and its own reported training time (the last column of its final "eval" row). The script's
tables go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch


def prepare_data(folder: Path, workdir: Path) -> dict[str, int]:
    """Write workdir/cifar10/{train,test}.pt from an image folder (train/ and test/ of class folders)."""
    from core.data.datasets import load_dataset
    from core.data.spec import DataSpec

    ds = load_dataset(DataSpec.folder_of(folder), image_size=32)
    target = workdir / "cifar10"
    target.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", ds.train), ("test", ds.test)):
        torch.save(
            {"images": split.images.permute(0, 2, 3, 1).contiguous(), "labels": split.labels, "classes": ds.classes}, target / f"{name}.pt"
        )
    return {"n_train": len(ds.train), "n_test": len(ds.test)}


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"airbench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reported_seconds(module, printed: str) -> float | None:
    """The time column of the script's final row (epoch "eval"), read from what it printed."""
    columns = [c.strip() for c in module.logging_columns_list]
    time_col = next(i for i, c in enumerate(columns) if "time" in c)
    seconds = None
    for line in printed.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(columns) and cells[columns.index("epoch")] == "eval":
            seconds = float(cells[time_col])
    return seconds


def run_script(path: Path, runs: int) -> dict[str, Any]:
    """Warm-up plus `runs` calls of the script's main, in the current directory (which holds cifar10/)."""
    module = load_script(path)
    model = None
    if len(inspect.signature(module.main).parameters) == 2:
        # airbench94_muon's main(run, model) reuses one compiled model across runs, made as its __main__ makes it.
        model = module.CifarNet().cuda().to(memory_format=torch.channels_last)
        model.compile(mode="max-autotune")
    accs, seconds, warmup_s = [], [], 0.0
    for run in ["warmup", *range(runs)]:
        printed = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            acc = module.main(run, model) if model is not None else module.main(run)
        sys.stderr.write(printed.getvalue())
        if run == "warmup":
            warmup_s = time.perf_counter() - started
            continue
        accs.append(float(acc))
        seconds.append(_reported_seconds(module, printed.getvalue()))
    return {"script": path.name, "runs": runs, "accs": accs, "seconds": seconds, "warmup_wall_s": round(warmup_s, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.airbench", description="Run airbench's script on an image folder.")
    p.add_argument("script", type=Path)
    p.add_argument("--data", type=Path, required=True, help="image folder with train/ and test/")
    p.add_argument("--workdir", type=Path, required=True, help="where cifar10/train.pt and test.pt are written")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    script = args.script.resolve()
    sizes = prepare_data(args.data, args.workdir)
    os.chdir(args.workdir)  # CifarLoader reads ./cifar10
    result = run_script(script, args.runs)
    print(json.dumps({**result, **sizes, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
