"""Model presets and the layer-spec builder.

`build(name_or_spec, ...)` is the one way the studio, the trainer and the
predictor make a model, so a run's config.json always rebuilds the same network.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from core import pretrained, speedrun
from core.device import uses_gpu
from core.errors import LayerError, PlaygroundError

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


def preset_input_size(name: str) -> int:
    """The side a model is built for: the preset's, a torchvision model's own (its weights' crop size), else 32."""
    if name in PRESETS:
        return PRESETS[name].input_size
    if is_torchvision(name):
        return weights_transforms(name)["crop_size"]
    return 32


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


# --------------------------------------------------------------------------- layer specs

# Options each layer type accepts in a spec. in_channels / in_features are worked out from the shape that
# reaches the layer when left out (None); a number given is checked, so a learner who writes the wrong one
# meets the tutorial's classic error in plain words instead of having it silently fixed. num_features is inferred.
LAYER_OPTIONS: dict[str, dict[str, Any]] = {
    "Conv2d": {"in_channels": None, "out_channels": None, "kernel_size": 3, "stride": 1, "padding": 0, "dilation": 1, "bias": True},
    "BatchNorm2d": {},
    "ReLU": {},
    "GELU": {},
    "MaxPool2d": {"kernel_size": 2, "stride": None, "padding": 0},
    "AvgPool2d": {"kernel_size": 2, "stride": None, "padding": 0},
    "AdaptiveAvgPool2d": {"output_size": 1},
    "Dropout": {"p": 0.5},
    "Flatten": {},
    "Linear": {"in_features": None, "out_features": None, "bias": True},
}
_GIVEN_INPUT = {"Conv2d": "in_channels", "Linear": "in_features"}  # the option that must match what reaches the layer
_FLAT_ONLY = {"Linear"}
_IMAGE_ONLY = {"Conv2d", "BatchNorm2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"}


def _shape_str(shape: Sequence[int]) -> str:
    return " x ".join(str(s) for s in shape)


def _make_layer(kind: str, opts: dict[str, Any], in_shape: tuple[int, ...], num_classes: int, is_last: bool) -> nn.Module:
    if kind == "Conv2d":
        if opts["out_channels"] is None:
            raise ValueError("needs out_channels")
        return nn.Conv2d(
            in_shape[0],
            int(opts["out_channels"]),
            opts["kernel_size"],
            opts["stride"],
            opts["padding"],
            opts["dilation"],
            bias=bool(opts["bias"]),
        )
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


def build_from_spec(
    spec: LayerSpec, num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32), *, upto: int | None = None
) -> nn.Sequential:
    """Turn a JSON-able list of layers into an nn.Sequential, inferring input sizes.

    Each layer is built for the shape that actually reaches it, then run on a dummy batch, so the shapes in
    error messages are the real ones; a mistake in one layer raises LayerError with its row (from 1).
    `upto`: only the first `upto` layers (those above a broken one), without the checks on the model's end.
    """
    if not isinstance(spec, (list, tuple)) or not spec:
        raise PlaygroundError('A layer spec is a non-empty list of layers, e.g. [{"type": "Conv2d", "out_channels": 16}, ...].')
    shape: tuple[int, ...] = tuple(int(s) for s in input_shape)
    before_shape = shape  # the input of the layer before this one (to explain what a Flatten did)
    x = torch.zeros(1, *shape)
    layers: list[nn.Module] = []
    last_linear = max((i for i, layer in enumerate(spec) if isinstance(layer, dict) and layer.get("type") == "Linear"), default=-1)
    for i, raw in enumerate(spec[:upto] if upto is not None else spec, start=1):
        try:
            if not isinstance(raw, dict) or "type" not in raw:
                raise PlaygroundError(f'Layer {i}: each layer needs a "type" (one of {", ".join(LAYER_OPTIONS)}).')
            kind = str(raw["type"])
            where = f"Layer {i} ({kind})"
            if kind not in LAYER_OPTIONS:
                raise PlaygroundError(f"{where}: unknown layer type; choose one of {', '.join(LAYER_OPTIONS)}.")
            unknown = set(raw) - set(LAYER_OPTIONS[kind]) - {"type"}
            if unknown:
                allowed = ", ".join(LAYER_OPTIONS[kind]) or "no options"
                raise PlaygroundError(f"{where}: unexpected option {', '.join(sorted(unknown))} (allowed: {allowed}).")
            opts = {**LAYER_OPTIONS[kind], **{k: v for k, v in raw.items() if k != "type" and v is not None}}
            for key in (
                "in_channels",
                "in_features",
                "out_channels",
                "out_features",
                "kernel_size",
                "stride",
                "dilation",
                "output_size",
                "padding",
            ):
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
                raise PlaygroundError(
                    f"{where}: needs an image-shaped input (channels x height x width) but gets {_shape_str(shape)}; "
                    "put it before the Flatten layer."
                )
            if opts.get(_GIVEN_INPUT.get(kind, "")) is not None:
                _check_given_input(where, kind, opts, shape, layers, num_classes, before_shape)
            try:
                layer = _make_layer(kind, opts, shape, num_classes, is_last=(i - 1 == last_linear))
                with torch.no_grad():
                    x = layer.eval()(x)
            except PlaygroundError:
                raise
            except (RuntimeError, ValueError, TypeError) as exc:
                reason = str(exc).splitlines()[0]
                too_small = "too small" in reason or "size" in reason
                hint = " Use a larger input, fewer pooling layers, or a smaller kernel/stride." if too_small else ""
                raise PlaygroundError(f"{where} cannot take input {_shape_str(shape)}: {reason}.{hint}") from None
        except PlaygroundError as exc:  # the row, so a page can keep the layers above it
            raise LayerError(str(exc), layer=i) from None
        before_shape, shape = shape, tuple(x.shape[1:])
        layers.append(layer.train())
    if upto is not None:
        return nn.Sequential(*layers)
    if len(shape) != 1:
        raise PlaygroundError(
            f"The model ends with shape {_shape_str(shape)}; end with Flatten and a Linear layer to get one score per class."
        )
    if shape[0] != num_classes:
        raise PlaygroundError(
            f"The last layer gives {shape[0]} outputs but there are {num_classes} classes; "
            "set the last Linear's out_features to the number of classes (or leave it empty)."
        )
    return nn.Sequential(*layers)


def _check_given_input(
    where: str,
    kind: str,
    opts: dict[str, Any],
    shape: tuple[int, ...],
    before: list[nn.Module],
    num_classes: int,
    before_shape: tuple[int, ...],
) -> None:
    """A typed in_features / in_channels that does not match the input: the error PyTorch gives, in plain words."""
    key = _GIVEN_INPUT[kind]
    given, needed = int(opts[key]), int(shape[0])
    if given == needed:
        return
    if kind == "Linear":
        got = f"{needed} values"
        if before and isinstance(before[-1], nn.Flatten):
            got += f" (the Flatten before it turns {_shape_str(before_shape)} into {needed} numbers)"
        try:  # the real layer on a real input: the message a learner will meet in their own code
            out = opts.get("out_features")
            nn.Linear(given, out if isinstance(out, int) else num_classes)(torch.zeros(1, needed))
            torch_says = ""
        except RuntimeError as exc:
            torch_says = f' PyTorch says: "{str(exc).splitlines()[0]}".'
        raise PlaygroundError(
            f"{where}: in_features is {given} but it gets {got}; it needs in_features={needed}.{torch_says} "
            f"Set it to {needed}, or leave the cell blank to have it worked out."
        )
    raise PlaygroundError(
        f"{where}: in_channels is {given} but the input has {needed} channels "
        f"({_shape_str(shape)}); it needs in_channels={needed}. Set it to {needed}, "
        "or leave the cell blank to have it worked out."
    )


def spec_of(model: nn.Sequential) -> LayerSpec:
    """The spec of an nn.Sequential made of spec-able layers (used to edit presets as tables)."""
    spec: LayerSpec = []
    for layer in model:
        kind = type(layer).__name__
        if kind not in LAYER_OPTIONS:
            raise PlaygroundError(f"{kind} layers cannot be edited as a layer spec.")
        entry: dict[str, Any] = {"type": kind}
        for key in LAYER_OPTIONS[kind]:
            if key == _GIVEN_INPUT.get(kind):
                continue  # left blank: worked out from the layers above, so editing them flows through
            value = getattr(layer, key, None)
            if key == "bias":
                value = getattr(layer, "bias", None) is not None
            if isinstance(value, tuple):
                value = value[0]
            entry[key] = value
        spec.append(entry)
    return spec


# --------------------------------------------------------------------------- torchvision + weights


@lru_cache(maxsize=1)
def torchvision_classifiers() -> tuple[str, ...]:
    """Every classification network torchvision builds (resnet50, efficientnet_b0, vit_b_16, ...), sorted."""
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


# Built without their auxiliary classifiers, so the model always returns one tensor of logits (training uses the
# main logits; torchvision's own pretrained GoogLeNet drops them too). Their keys in a weights file are skipped.
AUX_HEADS: dict[str, tuple[str, ...]] = {"inception_v3": ("AuxLogits",), "googlenet": ("aux1", "aux2")}


def _builder_kwargs(name: str, size: int) -> dict[str, Any]:
    """What a family needs beyond weights=None, the same for every build of it (training, Predict, resume)."""
    if name in AUX_HEADS:
        # transform_input: the pretrained weights expect inputs scaled to [-1, 1]; this maps ImageNet-normalized
        # inputs there (a fixed affine map, harmless when training from scratch). init_weights: no FutureWarning.
        return {"aux_logits": False, "transform_input": True, "init_weights": True}
    if name.startswith("vit_"):
        return {"image_size": size}  # the position embeddings are made for one image size
    if name.startswith("maxvit_"):
        return {"input_size": (size, size)}
    return {}


def _torchvision_model(name: str, size: int) -> nn.Module:
    import torchvision

    try:
        return torchvision.models.get_model(name, weights=None, **_builder_kwargs(name, size))
    except (AssertionError, ValueError, RuntimeError) as exc:  # e.g. ViT: a size its patches do not divide
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise PlaygroundError(
            f"{name} cannot be built for {size}x{size} images ({reason}); use its own input size, {preset_input_size(name)}."
        ) from None


def fixed_input_size(name: str) -> bool:
    """True for networks that work only at the size they were built for (ViT's position embeddings, MaxViT's windows)."""
    return name.startswith(("vit_", "maxvit_"))


def cifar_stem(model: nn.Module, in_channels: int) -> None:
    """ResNet's ImageNet stem (7x7 stride-2 conv + max-pool) shrinks 32x32 images to 8x8
    before the first block; a 3x3 stride-1 conv and no pool keep the detail."""
    model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()


def module_expr(path: str) -> str:
    """How Python code reaches a submodule: "features.6" -> "model.features[6]", "0" -> "model[0]"."""
    return "model" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path.split(".")) if path else "model"


def _get_submodule_parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, leaf = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), leaf


def find_head(model: nn.Module) -> str:
    """The classifier's module path in any torchvision network: its last Linear (`fc`, `classifier.1`, `heads.head`,
    `classifier.5`, ...), or for SqueezeNet, whose head is a 1x1 convolution, its last Conv2d."""
    linear = [path for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linear:
        return linear[-1]
    conv = [path for path, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not conv:
        raise PlaygroundError(f"{type(model).__name__} has no Linear or Conv2d layer to use as its classifier.")
    return conv[-1]


def head_path(model: nn.Module, name: str) -> str | None:
    """The module path of a torchvision model's classifier (the preset's declared one, or found); None for others."""
    if name in PRESETS:
        return PRESETS[name].head
    return find_head(model) if is_torchvision(name) else None


def replace_head(model: nn.Module, name: str, num_classes: int) -> None:
    """Swap the ImageNet classifier for one with `num_classes` outputs (new, untrained weights)."""
    parent, leaf = _get_submodule_parent(model, head_path(model, name))
    old = getattr(parent, leaf)
    if isinstance(old, nn.Linear):
        if old.out_features != num_classes:
            setattr(parent, leaf, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    elif isinstance(old, nn.Conv2d):
        if old.out_channels != num_classes:
            setattr(
                parent, leaf, nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding, bias=old.bias is not None)
            )
    else:
        raise PlaygroundError(f"{name}'s classifier {head_path(model, name)} is a {type(old).__name__}; expected Linear or Conv2d.")


def head_parameters(model: nn.Module, name: str) -> list[str]:
    prefix = head_path(model, name) if is_torchvision(name) else None
    return [n for n, _ in model.named_parameters() if prefix and n.startswith(prefix + ".")]


def weight_choices(name: str) -> list[str]:
    """Names of torchvision's pretrained weights for a torchvision model, e.g. ['IMAGENET1K_V1']."""
    if not is_torchvision(name):
        return []
    return [w.name for w in _weights_enum_class(name)]


def _weights_enum_class(name: str):
    import torchvision

    if name in PRESETS:
        return getattr(torchvision.models, PRESETS[name].weights_enum)
    return torchvision.models.get_model_weights(name)


def weights_enum(name: str, choice: str):
    enum = _weights_enum_class(name)
    if choice == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[choice]
    except KeyError:
        raise PlaygroundError(
            f"{name} has no weights called {choice!r}; choose one of {', '.join(w.name for w in enum)} or a file path."
        ) from None


def weights_transforms(name: str, choice: str = "DEFAULT") -> dict[str, Any]:
    """The eval preprocessing torchvision's weights were trained with: crop_size, resize_size, mean, std (from
    `weights.transforms()`), so a fine-tuned model sees images the way its features expect."""
    t = weights_enum(name, choice).transforms()
    return {
        "crop_size": int(t.crop_size[0]),
        "resize_size": int(t.resize_size[0]),
        "mean": tuple(float(v) for v in t.mean),
        "std": tuple(float(v) for v in t.std),
    }


def weights_info(name: str, choice: str = "DEFAULT") -> dict[str, Any]:
    """What a learner compares networks by: parameters, ImageNet top-1, GFLOPs, download size, input size."""
    weights = weights_enum(name, choice)
    meta = weights.meta
    return {
        "name": weights.name,
        "params": meta.get("num_params"),
        "url": weights.url,
        "top1": meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1"),
        "gflops": meta.get("_ops"),
        "file_mb": meta.get("_file_size"),
        "min_size": int(meta.get("min_size", (1, 1))[0]),
        "file_name": Path(weights.url).name,
        **weights_transforms(name, choice),
    }


def is_weights_name(name: str, weights: Any) -> bool:
    """True when `weights` names torchvision's pretrained weights ("DEFAULT", "IMAGENET1K_V1") rather than a file."""
    return isinstance(weights, str) and is_torchvision(name) and weights in ["DEFAULT"] + weight_choices(name)


def pretrained_normalization(name: str, weights: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) a torchvision model's pretrained features expect, from its weights' transforms; None when it
    starts from scratch (the data's own statistics are used then). A file is taken to hold ImageNet weights,
    unless it is a Torch Playground export that says how it was normalized."""
    if weights is None or not is_torchvision(name):
        return None
    if is_weights_name(name, weights):
        t = weights_transforms(name, weights)
        return t["mean"], t["std"]
    if str(weights).endswith((".pt", ".pth")) and Path(str(weights)).is_file():
        from core.runs import safe_torch_load

        try:
            blob = safe_torch_load(weights)
        except PlaygroundError:
            blob = None
        norm = blob.get("normalization") if isinstance(blob, dict) else None
        if isinstance(norm, dict) and "mean" in norm and "std" in norm:
            return tuple(norm["mean"]), tuple(norm["std"])
    t = weights_transforms(name)
    return t["mean"], t["std"]


def weights_cached(name: str, choice: str) -> bool:
    """Whether torchvision's weights file is already in torch's hub cache (so no download is needed)."""
    try:
        return pretrained.is_cached(weights_enum(name, choice))
    except PlaygroundError:
        return False


def download_weights(name: str, choice: str, progress: Callable[[int, int], None] | None = None) -> Path:
    """torchvision's weights file for `name`, downloaded into torch's hub cache when it is not there yet."""
    return pretrained.download(name, weights_enum(name, choice), progress)


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
        raise PlaygroundError(
            f"{path.name} does not hold a state_dict (a dict of tensors); save it with torch.save(model.state_dict(), path)."
        )
    return obj


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict) with an error that lists every key and shape that does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es): " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
        if missing:
            parts.append(f"{len(missing)} missing key(s): " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        raise PlaygroundError(
            f"The weights in {source} do not fit this model: "
            + " | ".join(parts)
            + ". Pick the architecture (and number of classes) they were trained with."
        )
    model.load_state_dict(state)


def _use_running_stats(module: nn.Module, args: Any) -> None:
    module.training = False


def freeze_backbone(model: nn.Module, name: str) -> None:
    """Train only the head: the classic fine-tuning set-up for a small dataset.

    The frozen backbone's BatchNorm layers also keep normalizing with their pretrained statistics while the head
    trains (as Keras does for a frozen base): with a batch of 8 pictures, batch statistics would be noise, and the
    head would learn from features that differ from the ones it sees at test time.
    """
    head = set(head_parameters(model, name))
    if not head:
        raise PlaygroundError(
            f"Freezing the backbone is available for torchvision models ({', '.join(TORCHVISION_MODELS)}, "
            f"efficientnet_b0, ...), not {name}."
        )
    for pname, p in model.named_parameters():
        p.requires_grad_(pname in head)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            module.register_forward_pre_hook(_use_running_stats)


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


# --------------------------------------------------------------------------- build


def _weights_state(name: str, weights: Any) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The tensors `weights` stands for (downloaded, read from a file, or given) and where they come from."""
    if weights is None:
        return None, ""
    if isinstance(weights, dict):
        return weights, "the checkpoint"
    if is_weights_name(name, weights):
        return pretrained.load_state_dict(name, weights_enum(name, str(weights))), f"torchvision {name} {weights}"
    return read_state_dict(weights), Path(str(weights)).name


def _build_torchvision(name: str, num_classes: int, in_channels: int, weights: Any, freeze: bool, size: int) -> nn.Module:
    model = _torchvision_model(name, size)
    state, source = _weights_state(name, weights)
    if state is not None:
        state = {k: v for k, v in state.items() if not k.startswith(tuple(f"{aux}." for aux in AUX_HEADS.get(name, ())))}
    # Small images get ResNet-18's CIFAR stem, unless the weights were made for the ImageNet one (7x7 conv1).
    conv1 = state.get("conv1.weight") if state is not None else None
    if name == "resnet18" and size <= 64 and (conv1 is None or conv1.shape[-1] == 3):
        cifar_stem(model, in_channels)
    elif in_channels != 3:
        raise PlaygroundError(f"{name} expects 3-channel (RGB) images.")
    if state is not None:
        # ImageNet's 1000 classes, or an already fine-tuned model's own: the head is sized to fit the weights first.
        head_key = head_path(model, name) + ".weight"
        if head_key in state and state[head_key].shape[0] != model.state_dict()[head_key].shape[0]:
            replace_head(model, name, state[head_key].shape[0])
        load_state_dict_checked(model, state, source)
    replace_head(model, name, num_classes)
    if freeze:
        freeze_backbone(model, name)
    return model


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
            state, source = _weights_state("custom", weights)
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
        return _build_torchvision(name, num_classes, in_channels, weights, freeze, size)
    builders: dict[str, Callable[[], nn.Module]] = {
        "cifar10_quick": lambda: cifar10_quick(num_classes, in_channels),
        "mycnn": lambda: MyCNN(num_classes, in_channels, size),
        "lenet5": lambda: lenet5(num_classes, in_channels),
        "speedrun": lambda: speedrun.build_speedrun(num_classes, in_channels, **({"widths": tuple(widths)} if widths else {})),
    }
    model = builders[name]()
    if weights is not None:
        state, source = _weights_state(name, weights)
        load_state_dict_checked(model, state, source)
    if freeze:
        raise PlaygroundError(f"Freezing the backbone needs a torchvision model ({', '.join(TORCHVISION_MODELS)}, ...).")
    return model
