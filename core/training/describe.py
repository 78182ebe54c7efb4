"""A run's settings in words: what the Runs page (and anything else showing a run's recipe) prints.

config.json holds every TrainConfig field, including the ones a run did not use (momentum for AdamW,
an EMA of None, a time limit of None). A learner reading "momentum 0.9" beside an AdamW run is misled,
and "None" or "False" says nothing; so this module turns a config into only the settings that applied,
each labelled and written in words ("Optimizer: AdamW, lr 0.003, weight decay 0.0005").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.data.spec import DataSpec
from core.training import losses
from core.training.config import TrainConfig

SCHEDULE_TITLES = {
    "onecycle": "a linear decay to zero (one cycle)",
    "cosine": "a cosine decay to zero",
    "step": "x0.1 at half and again at three quarters of the steps",
    "constant": "constant",
}
_OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
_TTA = {1: "each test image and its mirror image, averaged", 2: "each test image, its mirror image and 1-pixel shifts, averaged"}
_PRECISION = {"bf16": "bf16 (16-bit numbers)", "fp16": "fp16 (16-bit numbers)", "fp32": "fp32 (32-bit numbers)"}


def _model(recipe: TrainConfig) -> str:
    if recipe.model == "custom":
        words = f"your own layers ({len(recipe.layers or [])} layers)"
    else:
        words = recipe.model
    if recipe.weights:
        weights = str(recipe.weights)
        words += ", starting from ImageNet weights" if weights == "DEFAULT" else f", starting from the weights {Path(weights).name}"
    if recipe.freeze_backbone:
        words += ", backbone frozen (only the new head trains)"
    if recipe.widths:
        words += f", widths {'/'.join(str(w) for w in recipe.widths)}"
    return words


def _optimizer(recipe: TrainConfig) -> str:
    words = f"{_OPTIMIZER_NAMES.get(recipe.optimizer, recipe.optimizer)}, lr {recipe.lr:g}"
    if recipe.optimizer == "sgd":  # only SGD has a momentum setting; Adam(W) keeps its own running averages
        words += f", momentum {recipe.momentum:g}" + (" (Nesterov)" if recipe.nesterov else "") if recipe.momentum > 0 else ", no momentum"
    if recipe.weight_decay:
        words += f", weight decay {recipe.weight_decay:g}"
    return words


def _schedule(recipe: TrainConfig) -> str:
    words = SCHEDULE_TITLES.get(recipe.schedule, recipe.schedule)
    if recipe.warmup > 0:
        words = f"warm-up from {recipe.warmup_start:.0%} of the lr over the first {recipe.warmup:.0%} of steps, then {words}"
    return words[0].upper() + words[1:]


def _device(config: dict[str, Any], recipe: TrainConfig) -> str:
    env = config.get("env") or {}
    if env.get("device"):  # what the run really used, recorded once it started
        where = str(env["device"])
        where = "CPU" if where == "cpu" else "Apple GPU (MPS)" if where.startswith("mps") else f"GPU ({where})"
        processes = int(env.get("world_size") or 1)
        if processes > 1:
            where += f", {processes} processes"
        precision = str(env.get("precision") or "")
    else:
        where = "the best available (GPU, else CPU)" if recipe.device == "auto" else recipe.device.upper()
        precision = "" if recipe.precision == "auto" else recipe.precision
    return f"{where}, {_PRECISION.get(precision, precision)}" if precision else where


def settings_in_words(config: dict[str, Any]) -> dict[str, str]:
    """{label: words} for the settings a run used, in the order a learner sets them; settings that did not
    apply (momentum for Adam, an EMA or time limit that was off, CUDA graphs on a CPU) are left out."""
    recipe = TrainConfig.from_dict(config)  # the defaults of fields an older config.json lacks
    env_device = str((config.get("env") or {}).get("device", ""))
    rows = {"Model": _model(recipe)}
    side = config.get("input_size") or recipe.image_size  # what the model saw, recorded once the run started
    if side:
        rows["Input size"] = f"{side}×{side} pixels"
    rows["Data"] = DataSpec.parse(recipe.data).name(detail=True)
    rows["Epochs"] = str(recipe.epochs)
    rows["Batch size"] = str(recipe.batch_size)
    rows["Optimizer"] = _optimizer(recipe)
    rows["Learning-rate schedule"] = _schedule(recipe)
    loss = losses.LOSSES[recipe.loss].title if recipe.loss in losses.LOSSES else recipe.loss
    rows["Loss"] = loss + (f", label smoothing {recipe.label_smoothing:g}" if recipe.label_smoothing else "")
    if not recipe.augment:
        rows["Augmentation"] = "none"
    elif recipe.crop_padding:
        rows["Augmentation"] = f"random shifts of up to {recipe.crop_padding} pixels and mirror images"
    else:
        rows["Augmentation"] = "mirror images"
    if recipe.ema:
        rows["Weight averaging"] = f"tested with a moving average of the weights (EMA, decay {recipe.ema:g})"
    if recipe.tta:
        rows["Test-time augmentation"] = _TTA.get(int(recipe.tta), str(recipe.tta))
    if recipe.time_limit:
        minutes = recipe.time_limit / 60
        rows["Time limit"] = f"stop after {minutes:g} min" if minutes >= 1 else f"stop after {recipe.time_limit:g} s"
    rows["Seed"] = str(recipe.seed)
    rows["Device"] = _device(config, recipe)
    on_gpu = env_device.startswith("cuda") or (not env_device and recipe.device == "cuda")
    speedups = (["torch.compile"] if recipe.compile else []) + (["CUDA graphs"] if recipe.cuda_graphs and on_gpu else [])
    if speedups:
        rows["Speed-ups"] = ", ".join(speedups)
    if not recipe.health:
        rows["Training health"] = "not recorded"
    return rows
