"""`build(name_or_spec, ...)`: the one way the studio, the trainer and the predictor make a model, so a run's
config.json always rebuilds the same network; and what every stage asks of a built model (its parameter counts,
the modules one forward pass runs, how code reaches a submodule)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from core.errors import PlaygroundError
from core.models import speedrun
from core.models.backbones import build_torchvision, load_state_dict_checked, preset_input_size, weights_state
from core.models.layers import LayerSpec, build_from_spec
from core.models.presets import PRESETS, TORCHVISION_MODELS, MyCNN, cifar10_quick, is_torchvision, lenet5


def build(
    name_or_spec: str | LayerSpec,
    num_classes: int = 10,
    in_channels: int = 3,
    weights: str | os.PathLike | dict[str, torch.Tensor] | None = None,
    freeze: bool = False,
    input_size: int | None = None,
    widths: Sequence[int] | None = None,
) -> nn.Module:
    """Build a preset, any torchvision classification network (by its torchvision name, e.g. "efficientnet_b0"),
    or a model from a layer spec.

    weights: None (random init), a torchvision weights name ("DEFAULT",
    "IMAGENET1K_V1"; downloads into TORCH_HOME when online), a local
    .pth/.pt/.safetensors file, or a state_dict (a run's checkpoint, when it is rebuilt).
    ImageNet weights load into the 1000-class model first, then the head is replaced,
    so only the head starts from scratch.
    widths: the speedrun net's three conv-group widths (None: its default, 32/128/128).
    """
    if num_classes < 1:
        raise PlaygroundError("num_classes must be at least 1.")
    if not isinstance(name_or_spec, str):
        if freeze:
            raise PlaygroundError(f"Freezing the backbone needs a torchvision model ({', '.join(TORCHVISION_MODELS)}, ...).")
        side = input_size or 32
        model = build_from_spec(name_or_spec, num_classes, (in_channels, side, side))
        if weights is not None:
            state, source = weights_state("custom", weights)
            load_state_dict_checked(model, state, source)
        return model

    name = name_or_spec
    if name not in PRESETS and not is_torchvision(name):
        raise PlaygroundError(
            f"Unknown model {name!r}; choose one of {', '.join(PRESETS)}, any torchvision classification "
            "model (e.g. efficientnet_b0, mobilenet_v3_small, vit_b_16) or give a layer spec."
        )
    size = input_size or preset_input_size(name)
    if is_torchvision(name):
        return build_torchvision(name, num_classes, in_channels, weights, freeze, size)
    builders: dict[str, Callable[[], nn.Module]] = {
        "cifar10_quick": lambda: cifar10_quick(num_classes, in_channels),
        "mycnn": lambda: MyCNN(num_classes, in_channels, size),
        "lenet5": lambda: lenet5(num_classes, in_channels),
        "speedrun": lambda: speedrun.build_speedrun(num_classes, in_channels, **({"widths": tuple(widths)} if widths else {})),
    }
    model = builders[name]()
    if weights is not None:
        state, source = weights_state(name, weights)
        load_state_dict_checked(model, state, source)
    if freeze:
        raise PlaygroundError(f"Freezing the backbone needs a torchvision model ({', '.join(TORCHVISION_MODELS)}, ...).")
    return model


def module_expr(path: str) -> str:
    """How Python code reaches a submodule: "features.6" -> "model.features[6]", "0" -> "model[0]"."""
    return "model" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path.split(".")) if path else "model"


def forward_calls(model: nn.Module, input_size: int, device: torch.device | str = "cpu") -> list[tuple[nn.Module, tuple[int, ...] | None]]:
    """(module, output shape) of every module one forward pass of a blank image runs, in the order they finish
    (children before their parents): which layer really is the last conv or the classifier, whatever the class."""
    calls: list[tuple[nn.Module, tuple[int, ...] | None]] = []
    hooks = [
        m.register_forward_hook(
            lambda module, args, out: calls.append((module, tuple(out.shape) if isinstance(out, torch.Tensor) else None))
        )
        for m in model.modules()
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
    return calls


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total); shared parameters count once, lazy ones (not yet sized) not at all."""
    trainable = total = 0
    for p in model.parameters():
        if is_lazy(p):
            continue
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
