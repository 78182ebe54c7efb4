"""The layer-spec builder: a list of {"type": "Conv2d", ...} rows becomes an nn.Sequential, with errors that name the
layer and the shapes that do not fit (the Architecture page's table, a custom model's `layers`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from core.errors import LayerError, PlaygroundError

LayerSpec = list[dict[str, Any]]

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
