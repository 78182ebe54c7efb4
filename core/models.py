"""Model presets and the layer-spec builder.

`build(name_or_spec, ...)` is the one way the studio, the trainer and the
predictor make a model, so a run's config.json always rebuilds the same network.
"""
from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from core import speedrun
from core.device import uses_gpu
from core.errors import PlaygroundError

LayerSpec = list[dict[str, Any]]

# --------------------------------------------------------------------------- presets


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
        Preset("cifar10_quick", "CIFAR-10 quick", "The tutorial's nn.Sequential: 3 conv + pool blocks, 2 Linear layers (145.6 K params).", 32,
               SCRATCH_RECIPE),
        Preset("speedrun", "Speedrun (airbench-style)", "Whitening conv, BatchNorm conv groups and a tuned recipe: the fastest way to high CIFAR-10 accuracy.", 32,
               speedrun.RECIPE),
        Preset("mycnn", "MyCNN (first nn.Module)", "The lesson's first custom module: one Conv2d(3, 16, 3) and a Linear sized from the input.", 32,
               SCRATCH_RECIPE),
        Preset("lenet5", "LeNet-5", "LeCun's classic: two conv + pool stages and three Linear layers.", 32, SCRATCH_RECIPE),
        Preset("resnet18", "ResNet-18", "torchvision ResNet-18 with a CIFAR stem (3x3 conv, no max-pool).", 32,
               _fine_tune(512), head="fc", weights_enum="ResNet18_Weights"),
        Preset("vgg16", "VGG16", "torchvision VGG16 (138 M params at 1000 classes); fine-tune from ImageNet weights.", 224,
               _fine_tune(128), head="classifier.6", weights_enum="VGG16_Weights"),
        Preset("alexnet", "AlexNet", "torchvision AlexNet; the lesson fine-tunes it on CIFAR-10 from alexnet-owt-7be5be79.pth.", 224,
               _fine_tune(256), head="classifier.6", weights_enum="AlexNet_Weights"),
    ]
}
TORCHVISION_MODELS = [name for name, preset in PRESETS.items() if preset.torchvision]


def preset_input_size(name: str) -> int:
    return PRESETS[name].input_size if name in PRESETS else 32


def recipe_for(model: str, device: str = "auto") -> dict[str, Any]:
    """The TrainConfig values a preset (or a custom layer stack: "custom") trains best with on `device` (a --device
    choice): its recipe, with the recipe's "gpu" values applied when that is a CUDA GPU."""
    recipe = dict(SCRATCH_RECIPE if model == "custom" else PRESETS[model].recipe if model in PRESETS else {})
    gpu = recipe.pop("gpu", None) or {}
    return {**recipe, **gpu} if uses_gpu(device) else recipe


def is_torchvision(model: str) -> bool:
    return model in PRESETS and PRESETS[model].torchvision


# --------------------------------------------------------------------------- layer specs

# Options each layer type accepts in a spec; in_channels / in_features / num_features are inferred.
LAYER_OPTIONS: dict[str, dict[str, Any]] = {
    "Conv2d": {"out_channels": None, "kernel_size": 3, "stride": 1, "padding": 0, "dilation": 1, "bias": True},
    "BatchNorm2d": {},
    "ReLU": {},
    "GELU": {},
    "MaxPool2d": {"kernel_size": 2, "stride": None, "padding": 0},
    "AvgPool2d": {"kernel_size": 2, "stride": None, "padding": 0},
    "AdaptiveAvgPool2d": {"output_size": 1},
    "Dropout": {"p": 0.5},
    "Flatten": {},
    "Linear": {"out_features": None, "bias": True},
}
_FLAT_ONLY = {"Linear"}
_IMAGE_ONLY = {"Conv2d", "BatchNorm2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"}


def _shape_str(shape: Sequence[int]) -> str:
    return " x ".join(str(s) for s in shape)


def _make_layer(kind: str, opts: dict[str, Any], in_shape: tuple[int, ...], num_classes: int, is_last: bool) -> nn.Module:
    if kind == "Conv2d":
        if opts["out_channels"] is None:
            raise ValueError("needs out_channels")
        return nn.Conv2d(in_shape[0], int(opts["out_channels"]), opts["kernel_size"], opts["stride"],
                         opts["padding"], opts["dilation"], bias=bool(opts["bias"]))
    if kind == "BatchNorm2d":
        return nn.BatchNorm2d(in_shape[0])
    if kind == "ReLU":
        return nn.ReLU()
    if kind == "GELU":
        return nn.GELU()
    if kind == "MaxPool2d":
        return nn.MaxPool2d(opts["kernel_size"], opts["stride"], opts["padding"])
    if kind == "AvgPool2d":
        return nn.AvgPool2d(opts["kernel_size"], opts["stride"], opts["padding"])
    if kind == "AdaptiveAvgPool2d":
        return nn.AdaptiveAvgPool2d(opts["output_size"])
    if kind == "Dropout":
        p = float(opts["p"])
        if not 0 <= p < 1:
            raise ValueError(f"p must be in [0, 1), got {p}")
        return nn.Dropout(p)
    if kind == "Flatten":
        return nn.Flatten()
    if kind == "Linear":
        out = opts["out_features"]
        if out is None or out == "num_classes":
            if not is_last and out is None:
                raise ValueError("needs out_features (only the last Linear may leave it out: it gets the number of classes)")
            out = num_classes
        return nn.Linear(in_shape[0], int(out), bias=bool(opts["bias"]))
    raise AssertionError(kind)


def build_from_spec(spec: LayerSpec, num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32)) -> nn.Sequential:
    """Turn a JSON-able list of layers into an nn.Sequential, inferring input sizes.

    Each layer is built for the shape that actually reaches it, then run on a
    dummy batch, so the shapes in error messages are the real ones.
    """
    if not isinstance(spec, (list, tuple)) or not spec:
        raise PlaygroundError("A layer spec is a non-empty list of layers, e.g. [{\"type\": \"Conv2d\", \"out_channels\": 16}, ...].")
    shape: tuple[int, ...] = tuple(int(s) for s in input_shape)
    x = torch.zeros(1, *shape)
    layers: list[nn.Module] = []
    last_linear = max((i for i, l in enumerate(spec) if isinstance(l, dict) and l.get("type") == "Linear"), default=-1)
    for i, raw in enumerate(spec, start=1):
        if not isinstance(raw, dict) or "type" not in raw:
            raise PlaygroundError(f"Layer {i}: each layer needs a \"type\" (one of {', '.join(LAYER_OPTIONS)}).")
        kind = str(raw["type"])
        where = f"Layer {i} ({kind})"
        if kind not in LAYER_OPTIONS:
            raise PlaygroundError(f"{where}: unknown layer type; choose one of {', '.join(LAYER_OPTIONS)}.")
        unknown = set(raw) - set(LAYER_OPTIONS[kind]) - {"type"}
        if unknown:
            allowed = ", ".join(LAYER_OPTIONS[kind]) or "no options"
            raise PlaygroundError(f"{where}: unexpected option {', '.join(sorted(unknown))} (allowed: {allowed}).")
        opts = {**LAYER_OPTIONS[kind], **{k: v for k, v in raw.items() if k != "type" and v is not None}}
        for key in ("out_channels", "out_features", "kernel_size", "stride", "dilation", "output_size", "padding"):
            value = opts.get(key)
            if value is None or (key == "out_features" and value == "num_classes"):
                continue
            lowest = 0 if key == "padding" else 1
            if isinstance(value, float) and value.is_integer():  # table editors hand back 3.0 for 3
                value = opts[key] = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise PlaygroundError(f"{where}: {key} must be a whole number >= {lowest}, not {value!r}.")
        if kind in _FLAT_ONLY and len(shape) != 1:
            raise PlaygroundError(f"{where}: needs a flat input but gets {_shape_str(shape)}; add a Flatten layer before it.")
        if kind in _IMAGE_ONLY and len(shape) != 3:
            raise PlaygroundError(f"{where}: needs an image-shaped input (channels x height x width) but gets {_shape_str(shape)}; "
                                  "put it before the Flatten layer.")
        try:
            layer = _make_layer(kind, opts, shape, num_classes, is_last=(i - 1 == last_linear))
            with torch.no_grad():
                x = layer.eval()(x)
        except PlaygroundError:
            raise
        except (RuntimeError, ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0]
            hint = " Use a larger input, fewer pooling layers, or a smaller kernel/stride." if "too small" in reason or "size" in reason else ""
            raise PlaygroundError(f"{where} cannot take input {_shape_str(shape)}: {reason}.{hint}") from None
        shape = tuple(x.shape[1:])
        layers.append(layer.train())
    if len(shape) != 1:
        raise PlaygroundError(f"The model ends with shape {_shape_str(shape)}; end with Flatten and a Linear layer to get one score per class.")
    if shape[0] != num_classes:
        raise PlaygroundError(f"The last layer gives {shape[0]} outputs but there are {num_classes} classes; "
                              "set the last Linear's out_features to the number of classes (or leave it empty).")
    return nn.Sequential(*layers)


def spec_of(model: nn.Sequential) -> LayerSpec:
    """The spec of an nn.Sequential made of spec-able layers (used to edit presets as tables)."""
    spec: LayerSpec = []
    for layer in model:
        kind = type(layer).__name__
        if kind not in LAYER_OPTIONS:
            raise PlaygroundError(f"{kind} layers cannot be edited as a layer spec.")
        entry: dict[str, Any] = {"type": kind}
        for key in LAYER_OPTIONS[kind]:
            value = getattr(layer, key, None)
            if key == "bias":
                value = getattr(layer, "bias", None) is not None
            if isinstance(value, tuple):
                value = value[0]
            entry[key] = value
        spec.append(entry)
    return spec


# --------------------------------------------------------------------------- torchvision + weights


def _torchvision_model(name: str) -> nn.Module:
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def cifar_stem(model: nn.Module, in_channels: int) -> None:
    """ResNet's ImageNet stem (7x7 stride-2 conv + max-pool) shrinks 32x32 images to 8x8
    before the first block; a 3x3 stride-1 conv and no pool keep the detail."""
    model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()


def _get_submodule_parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, leaf = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), leaf


def replace_head(model: nn.Module, name: str, num_classes: int) -> None:
    """Swap the ImageNet classifier for one with `num_classes` outputs (new, untrained weights)."""
    parent, leaf = _get_submodule_parent(model, PRESETS[name].head)
    old = getattr(parent, leaf)
    if old.out_features != num_classes:
        setattr(parent, leaf, nn.Linear(old.in_features, num_classes))


def head_parameters(model: nn.Module, name: str) -> list[str]:
    prefix = PRESETS[name].head if name in PRESETS else None
    return [n for n, _ in model.named_parameters() if prefix and n.startswith(prefix + ".")]


def weight_choices(name: str) -> list[str]:
    """Names of torchvision's pretrained weights for a preset, e.g. ['IMAGENET1K_V1']."""
    if not is_torchvision(name):
        return []
    return [w.name for w in _weights_enum_class(name)]


def _weights_enum_class(name: str):
    import torchvision

    return getattr(torchvision.models, PRESETS[name].weights_enum)


def weights_enum(name: str, choice: str):
    enum = _weights_enum_class(name)
    if choice == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[choice]
    except KeyError:
        raise PlaygroundError(f"{name} has no weights called {choice!r}; choose one of {', '.join(w.name for w in enum)} or a file path.") from None


def imagenet_categories(name: str, choice: str = "DEFAULT") -> list[str]:
    """ImageNet class names from torchvision's weight metadata (no download needed)."""
    return list(weights_enum(name, choice).meta["categories"])


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors or .pt/.pth file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise PlaygroundError(f"Weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise PlaygroundError(f"{path.name} is not a readable safetensors file ({str(exc).splitlines()[0]}).") from None
    from core.runs import safe_torch_load

    obj = safe_torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # a Torch Playground checkpoint
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PlaygroundError(f"{path.name} does not hold a state_dict (a dict of tensors); save it with torch.save(model.state_dict(), path).")
    return obj


def _download_state_dict(name: str, choice: str) -> dict[str, torch.Tensor]:
    weights = weights_enum(name, choice)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        home = os.environ.get("TORCH_HOME", "~/.cache/torch")
        raise PlaygroundError(
            f"Could not download {name} weights {weights.name} ({str(exc).splitlines()[0]}). If you are offline, "
            f"download {weights.url} elsewhere and pass the file's path, or copy it into {home}/hub/checkpoints/."
        ) from None


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict) with an error that lists every key and shape that does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es): " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
        if missing:
            parts.append(f"{len(missing)} missing key(s): " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        raise PlaygroundError(f"The weights in {source} do not fit this model: " + " | ".join(parts) +
                              ". Pick the architecture (and number of classes) they were trained with.")
    model.load_state_dict(state)


def freeze_backbone(model: nn.Module, name: str) -> None:
    """Train only the head: the classic fine-tuning set-up for a small dataset."""
    head = set(head_parameters(model, name))
    if not head:
        raise PlaygroundError(f"Freezing the backbone is available for torchvision models ({', '.join(TORCHVISION_MODELS)}), not {name}.")
    for pname, p in model.named_parameters():
        p.requires_grad_(pname in head)


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


# --------------------------------------------------------------------------- build


def build(
    name_or_spec: str | LayerSpec,
    num_classes: int = 10,
    in_channels: int = 3,
    weights: str | os.PathLike | None = None,
    freeze: bool = False,
    input_size: int | None = None,
    widths: Sequence[int] | None = None,
) -> nn.Module:
    """Build a preset by name or a model from a layer spec.

    weights: None (random init), a torchvision weights name ("DEFAULT",
    "IMAGENET1K_V1"; downloads into TORCH_HOME when online), or a local
    .pth/.pt/.safetensors file. ImageNet weights load into the 1000-class model
    first, then the head is replaced, so only the head starts from scratch.
    widths: the speedrun net's three conv-group widths (None: its default, 32/128/128).
    """
    if num_classes < 1:
        raise PlaygroundError("num_classes must be at least 1.")
    if not isinstance(name_or_spec, str):
        if freeze:
            raise PlaygroundError(f"Freezing the backbone needs a torchvision model ({', '.join(TORCHVISION_MODELS)}).")
        side = input_size or 32
        model = build_from_spec(name_or_spec, num_classes, (in_channels, side, side))
        if weights is not None:
            load_state_dict_checked(model, read_state_dict(weights), Path(str(weights)).name)
        return model

    name = name_or_spec
    if name not in PRESETS:
        raise PlaygroundError(f"Unknown model {name!r}; choose one of {', '.join(PRESETS)} or give a layer spec.")
    preset = PRESETS[name]
    size = input_size or preset.input_size
    builders: dict[str, Callable[[], nn.Module]] = {
        "cifar10_quick": lambda: cifar10_quick(num_classes, in_channels),
        "mycnn": lambda: MyCNN(num_classes, in_channels, size),
        "lenet5": lambda: lenet5(num_classes, in_channels),
    }
    if name == "speedrun":
        model = speedrun.build_speedrun(num_classes, in_channels, **({"widths": tuple(widths)} if widths else {}))
    elif name in builders:
        model = builders[name]()
    else:
        model = _torchvision_model(name)
        imagenet_weights = weights is not None and str(weights) in (["DEFAULT"] + weight_choices(name))
        if imagenet_weights:
            load_state_dict_checked(model, _download_state_dict(name, str(weights)), f"torchvision {name} {weights}")
        if name == "resnet18" and size <= 64 and not imagenet_weights:
            cifar_stem(model, in_channels)
        elif in_channels != 3:
            raise PlaygroundError(f"{name} expects 3-channel (RGB) images.")
        if weights is not None and not imagenet_weights:
            # A local file may hold either the ImageNet model or an already fine-tuned one.
            state = read_state_dict(weights)
            head_key = preset.head + ".weight"
            if head_key in state and state[head_key].shape[0] != model.state_dict()[head_key].shape[0]:
                replace_head(model, name, state[head_key].shape[0])
            load_state_dict_checked(model, state, Path(weights).name)
        replace_head(model, name, num_classes)
        if freeze:
            freeze_backbone(model, name)
        return model

    if weights is not None:
        load_state_dict_checked(model, read_state_dict(weights), Path(str(weights)).name)
    if freeze:
        raise PlaygroundError(f"Freezing the backbone needs a torchvision model ({', '.join(TORCHVISION_MODELS)}).")
    return model
