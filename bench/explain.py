"""`python -m bench --explain`: milliseconds to explain one uploaded JPEG on the CPU (core.insight.explain).

Per preset (cifar10_quick and resnet18 at 32 px) and method (Grad-CAM, saliency, integrated gradients),
what the Predict page does for one upload: decode, preprocess, predict, attribute, and the map put on the
image as a colour overlay. Untrained weights take as long as trained ones, so no run folder is needed.
CPU milliseconds (all of this process's threads) are printed beside the wall times: on a busy machine
they move less than the wall times do.
"""

from __future__ import annotations

import io
import json
import statistics
import time

import torch
from PIL import Image

from bench.measure import log, machine, markdown
from core.data.datasets import SHAPES_CLASSES, shapes_dataset
from core.data.images import open_image, prepare_image
from core.insight.explain import METHODS, Explainer, overlay
from core.insight.predict import Predictor
from core.models.build import build

MODELS = ("cifar10_quick", "resnet18")
WARMUP = 2  # the first calls pay for Captum's imports and hooks


def explain_latency(repeats: int = 30, size: int = 32) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    sample = shapes_dataset(n_train=10, n_test=10, seed=3).test.images[0].permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(sample).resize((320, 240)).save(buffer, "JPEG", quality=90)
    upload = buffer.getvalue()
    norm = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    figures: dict[str, dict[str, float]] = {}
    for model_name in MODELS:
        predictor = Predictor._ready(
            build(model_name, len(SHAPES_CLASSES), input_size=size), list(SHAPES_CLASSES), norm, size, size, "cpu", False
        )
        explainer = Explainer(predictor)
        for method in METHODS:
            n = repeats if method != "integrated_gradients" else max(3, repeats // 5)
            times, cpu = [], []
            for i in range(n + WARMUP):
                started, cpu_started = time.perf_counter(), time.process_time()
                img = open_image(upload)
                e = explainer.explain_prepared(prepare_image(img, predictor.image_size), method)
                img.thumbnail((320, 320))
                overlay(img, e.on_image(*img.size))
                if i >= WARMUP:
                    times.append((time.perf_counter() - started) * 1000)
                    cpu.append((time.process_time() - cpu_started) * 1000)
            times.sort()
            figures[f"{model_name}/{method}"] = {
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
                "cpu_p50_ms": round(statistics.median(cpu), 1),
            }
    return figures


def main(as_json: bool, repeats: int = 30) -> int:
    log("explain latency (cifar10_quick and resnet18 at 32 px, CPU)...")
    figures = {"machine": machine(), "threads": torch.get_num_threads(), "explain": explain_latency(repeats)}
    if as_json:
        print(json.dumps(figures, indent=1))
        return 0
    rows = [
        (
            f"explain one uploaded JPEG, {key.split('/')[0]}, {METHODS[key.split('/')[1]]} (decode + predict + map + overlay)",
            f"p50 {v['p50_ms']} ms, p95 {v['p95_ms']} ms (CPU time p50 {v['cpu_p50_ms']} ms)",
        )
        for key, v in figures["explain"].items()
    ]
    rows.insert(
        0,
        (
            "machine",
            f"{figures['machine']['cpu']}, {figures['machine']['cores']} cores, "
            f"{figures['threads']} torch threads, torch {figures['machine']['torch']}",
        ),
    )
    print(markdown(rows))
    print("\ncommand: `python -m bench --explain`")
    return 0
