"""`python -m bench`: the tutorial's training loop against ours, on real images.

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

`--health` measures only the cost of the per-layer training-health records (core.training.health): the same runs with
and without them, alternating, medians of `--repeats` runs each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.browser import page_overhead
from bench.measure import ensure_dataset, health_overhead, log, machine, markdown, prediction_latency, run_train, tutorial_loop
from core.data.spec import DataSpec
from core.errors import PlaygroundError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="image folder with train/ and test/ (default: the CIFAR-10 dev images from ../shared/data)")
    p.add_argument("--seconds", type=float, default=60, help="training seconds per throughput measurement")
    p.add_argument("--tutorial-batches", type=int, default=150)
    p.add_argument("--speedrun", action="store_true", help="also run the full speedrun recipe (about 10 minutes on 2 CPU cores)")
    p.add_argument("--no-page", action="store_true", help="skip the browser page-overhead measurement")
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON instead of a table")
    p.add_argument("--health", action="store_true", help="only measure the training-health records' cost (with vs without)")
    p.add_argument("--loading", action="store_true", help="only time loading an image folder: plain PIL vs our cold and warm loads")
    p.add_argument(
        "--repeats", type=int, default=3, help="rounds of the --loading measurement; --health: runs per variant (the median is reported)"
    )
    p.add_argument("--loading-tar", help="a .tar.gz of an image folder for --loading (default: the CIFAR-10 dev images)")
    g = p.add_argument_group(
        "GPU",
        "python -m bench --gpu --airbench airbench94.py [airbench94_muon.py]: the speedrun "
        "preset against airbench on this GPU and the same images (bench/gpu.py)",
    )
    g.add_argument("--gpu", action="store_true", help="run only the GPU comparison")
    g.add_argument(
        "--airbench",
        type=Path,
        nargs="+",
        default=[],
        metavar="SCRIPT",
        help="airbench scripts from https://github.com/KellerJordan/cifar10-airbench, run for reference",
    )
    g.add_argument("--runs", type=int, default=5, help="runs of each airbench script (after a warm-up run)")
    g.add_argument("--seeds", type=int, default=5, help="speedrun runs (seeds 0..N-1)")
    g.add_argument("--no-compile", action="store_true", help="skip the --compile row")
    p.add_argument("--explain", action="store_true", help="only the latency of explaining one upload (core.insight.explain)")
    args = p.parse_args(argv)
    if args.explain:
        from bench import explain

        return explain.main(args.json)
    if args.health:
        return health_main(args, argv)
    if args.loading:
        from bench import loading

        return loading.main(args.repeats, args.json, args.loading_tar)
    try:
        folder = ensure_dataset(args.data)
        if args.gpu:
            return gpu_main(args, folder)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = str(DataSpec.folder_of(folder))
    figures: dict[str, Any] = {"machine": machine(), "command": "python -m bench " + " ".join(argv or sys.argv[1:])}
    log("tutorial loop (num_workers=0)...")
    figures["tutorial_img_per_s"] = round(tutorial_loop(folder, args.tutorial_batches, 0), 1)
    log("tutorial loop (num_workers=2)...")
    figures["tutorial_workers2_img_per_s"] = round(tutorial_loop(folder, args.tutorial_batches, 2), 1)
    with tempfile.TemporaryDirectory() as tmp:
        log("our path, cifar10_quick...")
        quick = run_train(
            ["--model", "cifar10_quick", "--data", spec, "--epochs", "1", "--time-limit", str(args.seconds), "--out", f"{tmp}/quick"]
        )
        figures["quick"] = quick
        log("our path, speedrun...")
        figures["speedrun_throughput"] = run_train(
            ["--model", "speedrun", "--data", spec, "--epochs", "1", "--time-limit", str(args.seconds), "--out", f"{tmp}/speedrun"]
        )
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
    rows = [
        ("machine", f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, auto precision {m['auto_precision']}"),
        (
            "tutorial loop, cifar10_quick (ImageFolder+DataLoader+ToTensor, batch 64, fp32, NCHW, 0 workers)",
            f"{figures['tutorial_img_per_s']:.0f} img/s",
        ),
        ("same with num_workers=2", f"{figures['tutorial_workers2_img_per_s']:.0f} img/s"),
        (
            "our path, cifar10_quick",
            f"{q['train_img_per_s']:.0f} img/s (**{ratio:.1f}x** the tutorial loop), peak RSS {q['peak_rss_mb']} MB",
        ),
        ("our path, speedrun net", f"{s['train_img_per_s']:.0f} img/s, peak RSS {s['peak_rss_mb']} MB"),
        (
            "prediction, one uploaded JPEG (decode + preprocess + forward)",
            f"p50 {figures['prediction']['single_p50_ms']} ms, p95 {figures['prediction']['single_p95_ms']} ms",
        ),
        ("prediction, batch of 64 JPEGs", f"{figures['prediction']['batch64_ms']} ms"),
    ]
    if "speedrun_full" in figures:
        f = figures["speedrun_full"]
        rows.append(
            (
                "speedrun recipe, whole command",
                f"test accuracy **{f['val_acc']:.4f}** in {f['wall_s']} s wall ({f['epochs']} epochs), peak RSS {f['peak_rss_mb']} MB",
            )
        )
    page = figures.get("page")
    if page:
        rows.append(
            (
                "page overhead (browser streaming curves vs headless)",
                f"{page['watched_img_per_s']:.0f} vs {page['headless_img_per_s']:.0f} img/s: {page['overhead_pct']}%",
            )
        )
    print(markdown(rows))
    print(f"\ncommand: `{figures['command']}`")
    return 0


def health_main(args: argparse.Namespace, argv: list[str] | None) -> int:
    """`python -m bench --health`: images/s with and without health records (`--data shapes`: on shapes only)."""
    cases = []
    if args.data != "shapes":
        try:
            spec = str(DataSpec.folder_of(ensure_dataset(args.data)))
            cases += [("cifar10_quick", spec, 1), ("lenet5", spec, 1)]
        except PlaygroundError as exc:
            log(f"no image folder ({exc}); measuring on shapes only")
    # lenet5 has ReLUs (dead-unit hooks) and is cheap per step, so health's fixed cost shows most; on shapes
    # (12,000 images, 93 steps per epoch) a log interval is every 3 steps, the shortest there is.
    cases += [("cifar10_quick", "shapes", 2), ("lenet5", "shapes", 2)]
    with tempfile.TemporaryDirectory() as tmp:
        log(f"health overhead: {len(cases)} cases x {args.repeats} x 2 runs...")
        rows = health_overhead(cases, args.repeats, tmp)
    figures = {"machine": machine(), "command": "python -m bench " + " ".join(argv or sys.argv[1:]), "health": rows}
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    m = figures["machine"]
    table = [("machine", f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, auto precision {m['auto_precision']}")]
    for r in rows:
        data = "shapes" if r["data"] == "shapes" else "the bench images"
        table.append(
            (
                f"{r['model']} on {data}, {r['epochs']} epoch(s): img/s with health / without",
                f"{r['with_health_img_per_s']:.0f} / {r['without_health_img_per_s']:.0f}: "
                f"**{r['overhead_pct']:+.1f}%** (runs: {r['runs']['on']} / {r['runs']['off']})",
            )
        )
    print(markdown(table))
    print(f"\ncommand: `{figures['command']}`")
    return 0


def gpu_main(args: argparse.Namespace, folder: Path) -> int:
    import torch

    from bench import gpu

    if not torch.cuda.is_available():
        raise PlaygroundError("--gpu needs a CUDA GPU, and none is visible here.")
    missing = [str(s) for s in args.airbench if not s.is_file()]
    if missing:
        raise PlaygroundError(
            f"airbench script not found: {', '.join(missing)} (fetch it from https://github.com/KellerJordan/cifar10-airbench)."
        )
    figures = gpu.measure(folder, [s.resolve() for s in args.airbench], args.runs, args.seeds, not args.no_compile)
    figures["command"] = "python -m bench " + " ".join(sys.argv[1:])
    print(json.dumps(figures, indent=1) if args.json else gpu.table(figures) + f"\n\ncommand: `{figures['command']}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
