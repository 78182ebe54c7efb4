"""The presets a learner picks from, the recipes they train best with, and which names torchvision can build.

A preset is a name, a title, the image side it is made for and its recipe (the TrainConfig values it trains
best with, per device). The small classic nets are defined here as the tutorial writes them; torchvision's are
built in core/models/backbones.py and the speedrun net in core/models/speedrun.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from core.device import uses_gpu
from core.models import speedrun

# Recipes: the TrainConfig values each preset trains best with (TrainConfig.for_model applies them).
SCRATCH_RECIPE: dict[str, Any] = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4}  # small nets, also custom ones
FINE_TUNE_RECIPE: dict[str, Any] = {"lr": 0.01, "batch_size": 64, "epochs": 5}  # torchvision nets: SGD, a small batch
# A recipe's "gpu" entry holds the values that differ on a CUDA GPU (recipe_for applies them): for the torchvision
# nets a batch that keeps a GPU busy, the lr scaled with it (linear scaling from 0.01 at 64; onecycle warms up).
# VGG16 and AlexNet see 224-pixel images, so their batches stay smaller.


def _fine_tune(batch_size: int) -> dict[str, Any]:
    return {**FINE_TUNE_RECIPE, "gpu": {"batch_size": batch_size, "lr": FINE_TUNE_RECIPE["lr"] * batch_size / 64}}


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    description: str
    input_size: int  # the image side it is designed for
    recipe: dict[str, Any] = field(default_factory=dict, hash=False)
    head: str | None = None  # torchvision models: the classifier's module path, replaced to fit your classes
    weights_enum: str | None = None  # torchvision models: the torchvision.models enum of their pretrained weights

    @property
    def torchvision(self) -> bool:
        """Built by torchvision; may load ImageNet weights and freeze all but its head."""
        return self.head is not None


def cifar10_quick(num_classes: int = 10, in_channels: int = 3) -> nn.Sequential:
    """The tutorial's nn.Sequential CIFAR-10 model (Caffe's "cifar10_quick").

    padding=2 keeps 32x32 through each 5x5 conv: (32 + 2*2 - 5) / 1 + 1 = 32.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 5, padding=2),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 5, padding=2),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 64),
        nn.Linear(64, num_classes),
    )


class MyCNN(nn.Module):
    """The lesson's first custom nn.Module: one 3x3 conv, then a Linear to the classes.

    The lesson hard-codes Linear(16*222*222, ...) for 224x224 inputs; here the
    Linear is sized from the real input, so any image size works.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3)
        self.relu = nn.ReLU()
        side = input_size - 2
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.relu(self.conv(x))))


def lenet5(num_classes: int = 10, in_channels: int = 3) -> nn.Sequential:
    """LeNet-5 for 32x32 inputs, with ReLU and max-pooling as it is usually taught today."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "cifar10_quick",
            "CIFAR-10 quick",
            "The tutorial's nn.Sequential: 3 conv + pool blocks, 2 Linear layers (145.6 K params).",
            32,
            SCRATCH_RECIPE,
        ),
        Preset(
            "speedrun",
            "Speedrun (airbench-style)",
            "Whitening conv, BatchNorm conv groups and a tuned recipe: the fastest way to high CIFAR-10 accuracy.",
            32,
            speedrun.RECIPE,
        ),
        Preset(
            "mycnn",
            "MyCNN (first nn.Module)",
            "The lesson's first custom module: one Conv2d(3, 16, 3) and a Linear sized from the input.",
            32,
            SCRATCH_RECIPE,
        ),
        Preset("lenet5", "LeNet-5", "LeCun's classic: two conv + pool stages and three Linear layers.", 32, SCRATCH_RECIPE),
        Preset(
            "resnet18",
            "ResNet-18",
            "torchvision ResNet-18 with a CIFAR stem (3x3 conv, no max-pool).",
            32,
            _fine_tune(512),
            head="fc",
            weights_enum="ResNet18_Weights",
        ),
        Preset(
            "vgg16",
            "VGG16",
            "torchvision VGG16 (138 M params at 1000 classes); fine-tune from ImageNet weights.",
            224,
            _fine_tune(128),
            head="classifier.6",
            weights_enum="VGG16_Weights",
        ),
        Preset(
            "alexnet",
            "AlexNet",
            "torchvision AlexNet; the lesson fine-tunes it on CIFAR-10 from alexnet-owt-7be5be79.pth.",
            224,
            _fine_tune(256),
            head="classifier.6",
            weights_enum="AlexNet_Weights",
        ),
    ]
}
TORCHVISION_MODELS = [name for name, preset in PRESETS.items() if preset.torchvision]
SMALL_DATA_BACKBONE = "mobilenet_v3_small"  # the few-images recipe's network: ImageNet features, fast on a CPU
OFFLINE_PRESET = "cifar10_quick"  # without pretrained weights and no way to download them: small, trains from scratch in minutes


def recipe_for(model: str, device: str = "auto") -> dict[str, Any]:
    """The TrainConfig values a preset (or a custom layer stack: "custom", or any torchvision model) trains best with
    on `device` (a --device choice): its recipe, with the recipe's "gpu" values applied when that is a CUDA GPU."""
    if model == "custom":
        recipe = dict(SCRATCH_RECIPE)
    elif model in PRESETS:
        recipe = dict(PRESETS[model].recipe)
    else:
        recipe = dict(FINE_TUNE_RECIPE) if is_torchvision(model) else {}
    gpu = recipe.pop("gpu", None) or {}
    return {**recipe, **gpu} if uses_gpu(device) else recipe


def is_torchvision(model: str) -> bool:
    """A torchvision classification network: a preset built by torchvision, or any name torchvision lists."""
    if model in PRESETS:
        return PRESETS[model].torchvision
    return isinstance(model, str) and model in torchvision_classifiers()


@lru_cache(maxsize=1)
def torchvision_classifiers() -> tuple[str, ...]:
    """Every classification network torchvision builds (resnet50, efficientnet_b0, vit_b_16, ...), sorted."""
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))
