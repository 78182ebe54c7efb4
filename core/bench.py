"""`python -m core.bench`: the tutorial's training loop against ours, on real images.

Prints a Markdown table (machine, figures, command) and, with --json, the raw
figures. Every training figure comes from a real `python -m core.train`
subprocess, so its peak memory (RSS) is measured too.

Rows:
- tutorial loop: torchvision ImageFolder + DataLoader + per-sample ToTensor,
  batch 64, fp32, NCHW: the loop the lessons teach;
- our path: tensors decoded once, batches augmented on the device,
  channels_last, bf16 autocast where the CPU has AMX/AVX512-BF16 (fp32 elsewhere);
- prediction latency for one uploaded JPEG and for a batch of 64;
- page overhead: the same run with and without a browser on the Train page.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
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
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "device": info["name"],
            "auto_precision": info["precision"], "fast_bf16": info.get("fast_bf16")}


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


def tutorial_loop(folder: Path, batches: int, num_workers: int) -> float:
    """Images/s of the classic loop: ImageFolder -> DataLoader(ToTensor) -> zero_grad/backward/step."""
    import torchvision
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from core.models import build

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
    proc = subprocess.Popen([sys.executable, "-m", "core.train", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
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
    from core.predict import Predictor

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
    return {"single_p50_ms": round(statistics.median(single), 2), "single_p95_ms": round(q[18], 2),
            "batch64_ms": round(statistics.median(batch), 1)}


def page_overhead(data: str, seconds: float) -> dict[str, Any] | None:
    """Training img/s with a real browser watching the run on the Train page vs. none."""
    try:
        from studio.watch import watch_run_in_browser  # the UI side knows how to open its own page
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as root:
        common = ["--model", "cifar10_quick", "--data", data, "--epochs", "1", "--time-limit", str(seconds)]
        headless = run_train([*common, "--out", f"{root}/headless"])
        watched = watch_run_in_browser([*common, "--out", f"{root}/watched"], models_root=root)
    if watched is None:
        return None
    a, b = headless["train_img_per_s"], watched["train_img_per_s"]
    return {"headless_img_per_s": a, "watched_img_per_s": b, "overhead_pct": round(100 * (a - b) / a, 1)}


def markdown(rows: list[tuple[str, str]]) -> str:
    lines = ["| measurement | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def explain_table(as_json: bool) -> int:
    """`--explain`: milliseconds to explain one uploaded JPEG on the CPU, per model and method (core.explain)."""
    from core.explain import METHODS, explain_latency

    log("explain latency (cifar10_quick and resnet18 at 32 px, CPU)...")
    figures = {"machine": machine(), "explain": explain_latency()}
    if as_json:
        print(json.dumps(figures, indent=1))
        return 0
    rows = [(f"explain one uploaded JPEG, {key.split('/')[0]}, {METHODS[key.split('/')[1]]} (decode + predict + map + overlay)",
             f"p50 {v['p50_ms']} ms, p95 {v['p95_ms']} ms") for key, v in figures["explain"].items()]
    print(markdown(rows))
    print("\ncommand: `python -m core.bench --explain`")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="image folder with train/ and test/ (default: the CIFAR-10 dev images from ../shared/data)")
    p.add_argument("--seconds", type=float, default=60, help="training seconds per throughput measurement")
    p.add_argument("--tutorial-batches", type=int, default=150)
    p.add_argument("--speedrun", action="store_true", help="also run the full speedrun recipe (about 10 minutes on 2 CPU cores)")
    p.add_argument("--no-page", action="store_true", help="skip the browser page-overhead measurement")
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON instead of a table")
    p.add_argument("--explain", action="store_true", help="only the latency of explaining one upload (core.explain)")
    args = p.parse_args(argv)
    if args.explain:
        return explain_table(args.json)
    try:
        folder = ensure_dataset(args.data)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = f"imagefolder:{folder}"
    figures: dict[str, Any] = {"machine": machine(), "command": "python -m core.bench " + " ".join(argv or sys.argv[1:])}
    log("tutorial loop (num_workers=0)...")
    figures["tutorial_img_per_s"] = round(tutorial_loop(folder, args.tutorial_batches, 0), 1)
    log("tutorial loop (num_workers=2)...")
    figures["tutorial_workers2_img_per_s"] = round(tutorial_loop(folder, args.tutorial_batches, 2), 1)
    with tempfile.TemporaryDirectory() as tmp:
        log("our path, cifar10_quick...")
        quick = run_train(["--model", "cifar10_quick", "--data", spec, "--epochs", "1", "--time-limit",
                                str(args.seconds), "--out", f"{tmp}/quick"])
        figures["quick"] = quick
        log("our path, speedrun...")
        figures["speedrun_throughput"] = run_train(["--model", "speedrun", "--data", spec, "--epochs", "1",
                                                         "--time-limit", str(args.seconds), "--out", f"{tmp}/speedrun"])
        log("prediction latency...")
        figures["prediction"] = prediction_latency(f"{tmp}/quick", folder, repeats=200)
    if args.speedrun:
        log("full speedrun recipe...")
        with tempfile.TemporaryDirectory() as tmp:
            figures["speedrun_full"] = run_train(["--model", "speedrun", "--data", spec, "--out", f"{tmp}/full"])
    if not args.no_page:
        log("page overhead...")
        figures["page"] = page_overhead(spec, args.seconds)
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    m, q, s = figures["machine"], figures["quick"], figures["speedrun_throughput"]
    ratio = q["train_img_per_s"] / figures["tutorial_img_per_s"]
    rows = [("machine", f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, auto precision {m['auto_precision']}"),
            ("tutorial loop, cifar10_quick (ImageFolder+DataLoader+ToTensor, batch 64, fp32, NCHW, 0 workers)",
             f"{figures['tutorial_img_per_s']:.0f} img/s"),
            ("same with num_workers=2", f"{figures['tutorial_workers2_img_per_s']:.0f} img/s"),
            ("our path, cifar10_quick", f"{q['train_img_per_s']:.0f} img/s (**{ratio:.1f}x** the tutorial loop), "
                                        f"peak RSS {q['peak_rss_mb']} MB"),
            ("our path, speedrun net", f"{s['train_img_per_s']:.0f} img/s, peak RSS {s['peak_rss_mb']} MB"),
            ("prediction, one uploaded JPEG (decode + preprocess + forward)",
             f"p50 {figures['prediction']['single_p50_ms']} ms, p95 {figures['prediction']['single_p95_ms']} ms"),
            ("prediction, batch of 64 JPEGs", f"{figures['prediction']['batch64_ms']} ms")]
    if "speedrun_full" in figures:
        f = figures["speedrun_full"]
        rows.append(("speedrun recipe, whole command", f"test accuracy **{f['val_acc']:.4f}** in {f['wall_s']} s wall "
                                                       f"({f['epochs']} epochs), peak RSS {f['peak_rss_mb']} MB"))
    page = figures.get("page")
    if page:
        rows.append(("page overhead (browser streaming curves vs headless)",
                     f"{page['watched_img_per_s']:.0f} vs {page['headless_img_per_s']:.0f} img/s: {page['overhead_pct']}%"))
    print(markdown(rows))
    print(f"\ncommand: `{figures['command']}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
