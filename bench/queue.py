"""`python -m bench.queue`: a class of simulated users against the queue, and the start-up time.

    python -m bench.queue load [--users 20]     # 20 users start a run each, at once (shared mode)
    python -m bench.queue startup               # Start -> first step record, cold and warm

`load`: this process plays the server (one JobRegistry, as the app holds one) and every
user is a thread that starts its run through the same calls the Train page makes
(TrainConfig.for_model, then the session's WorkspaceJobs.start) and then polls its own
listing, as the page does, until its run ends. Prints one JSON document: how many
finished, the most runs seen training at once (sampled, and from the records), the
wall time, and this process's peak resident memory.

`startup`: the Train page's default run (cifar10_quick on shapes, 8 epochs) started
through the queue, cold (a fresh `python -m core.worker` process) and warm (handed to
the ready spare), timed from the start call to the first step record, with the
breakdown read off the run's own records.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from core.serving import runs
from core.serving.jobs import JobRegistry, default_pool
from core.serving.shared import Settings, new_workspace_id
from core.training.config import TrainConfig


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _status_records(info: runs.RunInfo) -> list[dict[str, Any]]:
    return [r for r in info.records if r.get("kind") == "status"]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one moment (an end at t comes before a start at t)."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    best = now = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


def check_run_folder(info: runs.RunInfo) -> list[str]:
    """What is wrong with a finished run's folder (empty: nothing)."""
    problems = []
    try:
        json.loads((info.path / runs.CONFIG_FILE).read_text())
    except ValueError:
        problems.append("config.json is not JSON")
    for i, line in enumerate((info.path / runs.METRICS_FILE).read_text().splitlines()):
        try:
            json.loads(line)
        except ValueError:
            problems.append(f"metrics.jsonl line {i + 1} is not whole JSON")
    try:
        runs.load_checkpoint(info.path)
    except Exception as exc:  # noqa: BLE001 - any failure is a finding
        problems.append(f"checkpoint: {exc}")
    trainer_starts = [r for r in _status_records(info) if r.get("status") == "running" and not r.get("dispatched")]
    if len(trainer_starts) != 1:
        problems.append(f"trained {len(trainer_starts)} times")
    if info.status != "finished":
        problems.append(f"status {info.status}: {info.message}")
    return problems


def load_test(
    users: int = 20,
    data: str = "shapes:200",
    epochs: int = 1,
    timeout: float = 900,
    root: str | None = None,
    runs_per_device: int | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root_path = Path(root or tmp)
        settings = dataclasses.replace(
            Settings.load(), shared=True, max_active=2, **({"runs_per_device": runs_per_device} if runs_per_device else {})
        )
        registry = JobRegistry(root_path, settings)
        capacity = registry._capacity(default_pool(registry.pools))
        rss_before = rss_mb()
        barrier = threading.Barrier(users + 1)
        results: dict[int, dict[str, Any]] = {}
        seen = {"max_running": 0, "peak_rss_mb": rss_before}
        done = threading.Event()

        def user(i: int) -> None:
            workspace = new_workspace_id()
            jobs = registry.for_workspace(workspace)
            config = TrainConfig.for_model("cifar10_quick", data=data, epochs=epochs, seed=i)  # as train_form.make_config
            barrier.wait()
            run_dir = jobs.start(config)
            foreign: set[str] = set()
            deadline = time.time() + timeout
            status = "queued"
            while time.time() < deadline:
                mine = runs.list_runs(root_path, workspace)
                foreign |= {r.run_id for r in mine if r.run_id != run_dir.name}
                status = mine[0].status if mine else "missing"
                if status not in runs.ACTIVE_STATUSES:
                    break
                time.sleep(0.5)
            results[i] = {
                "workspace": workspace,
                "run": run_dir.name,
                "status": status,
                "listed_foreign": sorted(foreign),
                "listed": [r.run_id for r in runs.list_runs(root_path, workspace)],
            }

        def monitor() -> None:
            while not done.is_set():
                running = sum(r.status == "running" for r in runs.list_runs(root_path))
                seen["max_running"] = max(seen["max_running"], running)
                seen["peak_rss_mb"] = max(seen["peak_rss_mb"], rss_mb())
                time.sleep(0.2)

        threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
        for t in threads:
            t.start()
        watcher = threading.Thread(target=monitor)
        watcher.start()
        barrier.wait()
        started = time.time()
        for t in threads:
            t.join(timeout + 60)
        wall = time.time() - started
        done.set()
        watcher.join()
        registry.close()

        infos = {r.run_id: r for r in runs.list_runs(root_path)}
        intervals, waits, problems = [], [], {}
        for info in infos.values():
            statuses = _status_records(info)
            handed = [r["time"] for r in statuses if r.get("dispatched")]
            final = [r["time"] for r in statuses if r.get("status") in runs.FINAL_STATUSES]
            if handed and final:
                intervals.append((handed[0], final[-1]))
                waits.append(next(r.get("queue_wait_s", 0) for r in statuses if r.get("dispatched")))
            bad = check_run_folder(info)
            if bad:
                problems[info.run_id] = bad
        isolation = all(r["listed"] == [r["run"]] and not r["listed_foreign"] for r in results.values())
        return {
            "users": users,
            "data": data,
            "epochs": epochs,
            "k": capacity,
            "runs": len(infos),
            "finished": sum(r.status == "finished" for r in infos.values()),
            "max_running_sampled": seen["max_running"],
            "max_running_from_records": max_overlap(intervals),
            "wall_s": round(wall, 1),
            "queue_wait_max_s": round(max(waits), 1) if waits else None,
            "each_lists_only_its_own": isolation,
            "folder_problems": problems,
            "server_rss_before_mb": round(rss_before),
            "server_peak_rss_mb": round(max(seen["peak_rss_mb"], rss_mb())),
            "server_ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }


# --------------------------------------------------------------------------- start-up


def _first_step(run_dir: Path, timeout: float) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        records, _ = runs.read_metrics(run_dir)
        step = next((r for r in records if r.get("kind") == "step"), None)
        if step is not None:
            return step
        final = [r for r in records if r.get("kind") == "status" and r.get("status") in runs.FINAL_STATUSES]
        if final:
            raise RuntimeError(f"the run ended before its first step: {final[-1].get('message')}")
        time.sleep(0.01)
    raise RuntimeError(f"no step record within {timeout:.0f}s")


def startup_once(root: Path, warm: bool, timeout: float = 300) -> dict[str, Any]:
    """Start the Train page's default run, time Start -> first step record, then stop it."""
    registry = JobRegistry(root, dataclasses.replace(Settings.load(), runs_per_device=1), warm=warm, autostart=False)
    try:
        if warm and not registry.spare_ready(timeout=timeout):
            raise RuntimeError("the spare worker did not get ready")
        config = TrainConfig.for_model("cifar10_quick", data="shapes", epochs=8)  # the Train page's defaults
        t0 = time.time()
        run_dir = registry.start(config)
        step = _first_step(run_dir, timeout)
        registry.stop(run_dir)
        registry.wait(run_dir, timeout)
    finally:
        registry.close()
    statuses = [r for r in runs.read_metrics(run_dir)[0] if r.get("kind") == "status"]
    queued = next(r for r in statuses if r.get("status") == "queued")
    handed = next(r for r in statuses if r.get("dispatched"))
    trainer = next(r for r in statuses if r.get("status") == "running" and not r.get("dispatched"))
    entered = trainer["time"] - trainer["elapsed"]  # when train() began, on the trainer's own clock
    return {
        "mode": "warm" if warm else "cold",
        "start_to_first_step_s": round(step["time"] - t0, 2),
        "breakdown_s": {
            "queue (start call -> handed to a process)": round(handed["time"] - t0, 3),
            "process start + imports (-> train() entered)": round(entered - handed["time"], 2),
            "train() set-up: data, model, optimizer (-> 'running')": round(trainer["elapsed"], 2),
            f"first {step['step']} steps (-> first step record)": round(step["time"] - trainer["time"], 2),
        },
        "queued_record_s": round(queued["time"] - t0, 3),
    }


def startup(repeats: int = 2) -> dict[str, Any]:
    """Cold and warm start-up, each `repeats` times (the first cold one also warms the disk caches)."""
    out: dict[str, Any] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for mode in ("cold", "warm"):
                out[mode].append(startup_once(Path(tmp) / f"{mode}{i}", warm=mode == "warm"))
    for mode in ("cold", "warm"):
        out[f"{mode}_median_s"] = statistics.median(r["start_to_first_step_s"] for r in out[mode])
    return out


def startup_table(figures: dict[str, Any]) -> str:
    lines = ["| Start -> first step record (default studio run) | seconds | breakdown |", "| --- | --- | --- |"]
    for mode in ("cold", "warm"):
        for r in figures[mode]:
            parts = "; ".join(f"{k} {v}" for k, v in r["breakdown_s"].items())
            lines.append(f"| {mode} | {r['start_to_first_step_s']} | {parts} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queue", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    load = sub.add_parser("load", help="simulated users start runs at once (shared mode)")
    load.add_argument("--users", type=int, default=20)
    load.add_argument("--data", default="shapes:200")
    load.add_argument("--epochs", type=int, default=1)
    load.add_argument("--runs-per-device", type=int, help="K (default: the server's setting)")
    load.add_argument("--timeout", type=float, default=900)
    up = sub.add_parser("startup", help="Start -> first step record, cold and warm")
    up.add_argument("--repeats", type=int, default=2)
    up.add_argument("--table", action="store_true", help="a Markdown table instead of JSON")
    args = parser.parse_args(argv)
    if args.what == "load":
        print(json.dumps(load_test(args.users, args.data, args.epochs, args.timeout, runs_per_device=args.runs_per_device)))
    else:
        figures = startup(args.repeats)
        print(startup_table(figures) if args.table else json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
