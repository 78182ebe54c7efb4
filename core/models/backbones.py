"""torchvision's classification networks: building any of them at a size, their pretrained weights (names,
transforms, download, cache), replacing and freezing around the head, and reading weights files safely."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import PlaygroundError
from core.files import safe_torch_load
from core.models import pretrained
from core.models.presets import PRESETS, TORCHVISION_MODELS, is_torchvision

# --------------------------------------------------------------------------- torchvision + weights


def preset_input_size(name: str) -> int:
    """The side a model is built for: the preset's, a torchvision model's own (its weights' crop size), else 32."""
    if name in PRESETS:
        return PRESETS[name].input_size
    if is_torchvision(name):
        return weights_transforms(name)["crop_size"]
    return 32


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


def weights_summary(name: str, choice: str = "DEFAULT") -> dict[str, Any]:
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


# --------------------------------------------------------------------------- build


def weights_state(name: str, weights: Any) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The tensors `weights` stands for (downloaded, read from a file, or given) and where they come from."""
    if weights is None:
        return None, ""
    if isinstance(weights, dict):
        return weights, "the checkpoint"
    if is_weights_name(name, weights):
        return pretrained.load_state_dict(name, weights_enum(name, str(weights))), f"torchvision {name} {weights}"
    return read_state_dict(weights), Path(str(weights)).name


def build_torchvision(name: str, num_classes: int, in_channels: int, weights: Any, freeze: bool, size: int) -> nn.Module:
    model = _torchvision_model(name, size)
    state, source = weights_state(name, weights)
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
