"""The run's schema: `TrainConfig` (everything that defines a run; round-trips through config.json), the optimizer
and schedule choices, and the command-line options every command that builds a TrainConfig shares.

Imports nothing of the training loop, so the queue, the exports, the lr finder and the pages can read and write a
run's config without importing the trainer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import device as dev
from core.errors import PlaygroundError
from core.models.presets import PRESETS, is_torchvision, recipe_for
from core.training import losses

OPTIMIZERS = ("sgd", "adam", "adamw")

SCHEDULES = ("onecycle", "cosine", "step", "constant")


@dataclass
class TrainConfig:
    """Everything that defines a run; round-trips through config.json."""

    model: str = "cifar10_quick"  # a preset name, "custom" with `layers`, or a torchvision model name ("efficientnet_b0")
    layers: list[dict[str, Any]] | None = None
    weights: str | None = None  # torchvision weights name ("DEFAULT") or a .pth/.safetensors path
    freeze_backbone: bool = False
    data: str = "shapes"
    epochs: int = 10
    batch_size: int = 128  # the global batch: split across torchrun processes
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    loss: str = "cross_entropy"  # a key of core.training.losses.LOSSES
    schedule: str = "onecycle"
    warmup: float = 0.15  # fraction of all steps spent ramping the learning rate up
    warmup_start: float = 0.1  # the ramp starts at this fraction of lr, so the first steps are not wasted
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    time_limit: float | None = None  # seconds of training before stopping with a checkpoint
    image_size: int | None = None  # model input side; None: the preset's own
    augment: bool = True  # random crop (with padding) and horizontal flip, per batch on the device
    crop_padding: int = 4
    ema: float | None = None  # per-step EMA decay of the weights used for evaluation
    tta: int = 0  # test-time augmentation of the final evaluation: 0 none, 1 (or true) + mirror, 2 + 1-pixel shifts
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = True  # on CUDA, replay each step's forward+backward as one CUDA graph (core/training/fastloop.py)
    widths: list[int] | None = None  # speedrun: channels of its three conv groups; None: its CPU widths (32/128/128)
    data_dir: str | None = None
    log_every: int = 0  # steps between step records; 0: about 25 per epoch
    health: bool = True  # per-layer gradient/weight/update norms and dead ReLUs at log intervals, ~10 an epoch (core.training.health)
    sweep: dict[str, Any] | None = None  # a sweep's run: {"id", "settings"} (core.training.sweep); None for a run of its own

    @classmethod
    def for_model(cls, model: str, **overrides: Any) -> TrainConfig:
        """The recipe a preset trains best with (`Preset.recipe`) on the device the run will use, then the caller's overrides."""
        recipe = recipe_for(model, overrides.get("device") or "auto")
        return cls(**{"model": model, **recipe, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.model not in PRESETS and self.model != "custom" and not is_torchvision(self.model):
            raise PlaygroundError(
                f"Unknown model {self.model!r}; choose one of {', '.join(PRESETS)}, 'custom' with layers, "
                "or any torchvision classification model (e.g. efficientnet_b0)."
            )
        if self.model == "custom" and not self.layers:
            raise PlaygroundError("A custom model needs a layer spec (`layers`).")
        if self.optimizer not in OPTIMIZERS:
            raise PlaygroundError(f"Unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise PlaygroundError(f"Unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.lr > 0 and math.isfinite(self.lr), "the learning rate must be a positive number"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (0 <= self.warmup < 1, "warmup must be a fraction in [0, 1)"),
            (0 <= self.warmup_start <= 1, "warmup_start must be a fraction in [0, 1]"),
            (self.ema is None or 0 < self.ema < 1, "ema must be a decay in (0, 1)"),
            (self.tta in (0, 1, 2), "tta must be 0 (none), 1 (mirror) or 2 (mirror and shifts)"),
            (
                self.widths is None
                or (self.model == "speedrun" and len(self.widths) == 3 and all(isinstance(w, int) and w > 0 for w in self.widths)),
                "widths must be three positive channel counts, and only the speedrun preset has them",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise PlaygroundError(message[0].upper() + message[1:] + ".")
        losses.check(self.loss, self.label_smoothing)


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}

# The options every command that builds a TrainConfig takes (`python -m core.train`, `python -m core.lr_find`, `python -m core.sweep`), and the fields they set.
SHARED_OPTIONS = ("data", "batch_size", "optimizer", "weights", "freeze_backbone", "image_size", "device", "precision", "seed", "data_dir")


def add_shared_options(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    """--model/--layers and SHARED_OPTIONS: the model, its data and how it runs."""
    p.add_argument(
        "--model",
        required=required,
        help=f"preset name ({', '.join(PRESETS)}), 'custom' with --layers, or any "
        "torchvision classification model (efficientnet_b0, mobilenet_v3_small, ...)",
    )
    p.add_argument("--layers", help="custom model: a JSON layer spec or a path to one")
    p.add_argument("--data", required=required, help="cifar10 | shapes | imagefolder:PATH (folder or .zip)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--weights", help="torchvision weights name (DEFAULT) or a .pth/.safetensors file")
    p.add_argument("--freeze-backbone", action="store_true", default=None)
    p.add_argument("--image-size", type=int)
    p.add_argument("--device", choices=dev.DEVICE_CHOICES)
    p.add_argument("--precision", choices=dev.PRECISION_CHOICES)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-dir")


def layers_option(value: str) -> list[dict[str, Any]]:
    """--layers: a JSON layer spec, or the path of a file holding one (json.JSONDecodeError when it is neither)."""
    return json.loads(Path(value).read_text() if Path(value).is_file() else value)
