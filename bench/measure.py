"""What `python -m bench` measures, each as a function: the machine, the tutorial's loop, our trainer
(a real `python -m core.train` subprocess, so its peak memory is measured too) and prediction latency."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import torch

from core import device as dev
from core.errors import PlaygroundError

ROOT = Path(__file__).resolve().parent.parent
DEV_TAR = ROOT.parent / "shared" / "data" / "cifar10-dev.tar.gz"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def markdown(rows: list[tuple[str, str]]) -> str:
    lines = ["| measurement | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = dev.describe()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "device": info["name"],
        "auto_precision": info["precision"],
        "fast_bf16": info.get("fast_bf16"),
    }


def ensure_dataset(path: str | None) -> Path:
    """The CIFAR-10 dev images as an image folder (extracted once from ../shared/data)."""
    if path:
        return Path(path)
    target = ROOT / ".bench" / "cifar10-dev"
    if not (target / "test").exists():
        if not DEV_TAR.exists():
            raise PlaygroundError(f"No dataset: pass --data PATH (an image folder with train/ and test/) or provide {DEV_TAR}.")
        log(f"extracting {DEV_TAR} -> {target}")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(DEV_TAR) as tar:
            tar.extractall(target, filter="data")
    return target


def extract_dev_slice(dest: Path, train_per_class: int, test_per_class: int) -> Path:
    """The first N images per class of each split of the CIFAR-10 dev images, as an image folder (one pass over the
    archive; the caller checks that DEV_TAR exists)."""
    wanted = {"train": train_per_class, "test": test_per_class}
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(DEV_TAR) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3:
                continue
            split, cls = parts[-3], parts[-2]
            if split not in wanted or counts.get((split, cls), 0) >= wanted[split]:
                continue
            counts[(split, cls)] = counts.get((split, cls), 0) + 1
            target = dest / split / cls / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return dest


def tutorial_loop(folder: Path, batches: int, num_workers: int) -> float:
    """Images/s of the classic loop: ImageFolder -> DataLoader(ToTensor) -> zero_grad/backward/step."""
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from core.models.build import build

    torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
    dataset = torchvision.datasets.ImageFolder(str(folder / "train"), transform=transform)
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=num_workers, drop_last=True)
    model = build("cifar10_quick")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    warmup, seen, started = 5, 0, 0.0
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            started, seen = time.perf_counter(), 0
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(y)
        if i + 1 == warmup + batches:
            break
    return seen / (time.perf_counter() - started)


def run_train(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m core.train ARGS`: its JSON result, wall time and peak resident memory (MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.train", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    out, err = proc.stdout.read(), proc.stderr.read()  # read before waiting, or a full pipe blocks the child
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"core.train {' '.join(args)} failed:\n{err[-2000:]}")
    result = json.loads(out)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024)  # Linux reports KiB
    return result


def prediction_latency(run_dir: str, folder: Path, repeats: int) -> dict[str, float]:
    from core.insight.predict import Predictor

    predictor = Predictor.from_run(run_dir)
    files = sorted((folder / "test").rglob("*.jpg"))[:64]
    uploads = [f.read_bytes() for f in files]
    predictor.predict(uploads[:2], names=["a", "b"])  # warm-up
    single = []
    for i in range(repeats):
        t = time.perf_counter()
        predictor.predict([uploads[i % len(uploads)]], names=["upload.jpg"], k=5)
        single.append((time.perf_counter() - t) * 1000)
    batch = []
    for _ in range(max(3, repeats // 20)):
        t = time.perf_counter()
        predictor.predict(uploads, names=[f.name for f in files], k=5)
        batch.append((time.perf_counter() - t) * 1000)
    q = statistics.quantiles(single, n=20)
    return {
        "single_p50_ms": round(statistics.median(single), 2),
        "single_p95_ms": round(q[18], 2),
        "batch64_ms": round(statistics.median(batch), 1),
    }


def health_overhead(cases: list[tuple[str, str, int]], repeats: int, workdir: str) -> list[dict[str, Any]]:
    """Images/s of the same run with and without health records (core.training.health), per (model, data, epochs) case.

    Whole epochs, not a time limit: the limit counts data loading too, which a loaded machine can stretch past it.
    The two variants alternate (on, off, on, off, ...) so a machine whose load drifts penalises both alike; each
    figure is the median of `repeats` runs (their steady-state img/s, the run's first log interval left out).
    """
    rows = []
    for model, data, epochs in cases:
        figures: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(repeats):
            for variant in ("on", "off"):
                log(f"  {model} on {data}, health {variant} ({i + 1}/{repeats})")
                result = run_train(
                    [
                        "--model",
                        model,
                        "--data",
                        data,
                        "--epochs",
                        str(epochs),
                        "--health" if variant == "on" else "--no-health",
                        "--out",
                        f"{workdir}/{model}-{variant}-{i}",
                    ]
                )
                figures[variant].append(result["train_img_per_s"])
        on, off = statistics.median(figures["on"]), statistics.median(figures["off"])
        rows.append(
            {
                "model": model,
                "data": data,
                "epochs": epochs,
                "with_health_img_per_s": on,
                "without_health_img_per_s": off,
                "overhead_pct": round(100 * (off - on) / off, 1),
                "runs": figures,
            }
        )
    return rows
