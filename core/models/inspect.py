"""Look inside a model: layer table (shapes, parameters, MACs), the conv
output-size formula, which parts are frozen, and the model as PyTorch source.

torchinfo runs the forward pass and does the bookkeeping; this module turns its
rows into a plain DataFrame, names the layer that broke when a forward fails,
and keeps the model exactly as it found it (device and per-layer train/eval mode).
"""

from __future__ import annotations

import contextlib
import inspect as pyinspect
import keyword
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torchinfo
from torch import nn
from torch.nn.parameter import is_lazy

from core.errors import LayerError, PlaygroundError
from core.models.build import count_parameters
from core.models.layers import LayerSpec, build_from_spec

LAYER_COLUMNS = ["name", "type", "output_shape", "params", "trainable", "macs"]
FREEZE_COLUMNS = ["name", "type", "params", "trainable", "status"]

# Containers that only group layers; freeze_map looks one level inside them so
# that VGG's `features` / `classifier` show per layer instead of as two blobs.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


# ---------------------------------------------------------------- layer table


@dataclass
class LayerTable:
    """One row per layer: see LAYER_COLUMNS. Shapes omit the batch dimension."""

    layers: pd.DataFrame
    total_params: int
    trainable_params: int
    total_macs: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    def totals_row(self) -> dict[str, Any]:
        return {
            "name": "Total",
            "type": "",
            "output_shape": shape_str(self.output_shape),
            "params": self.total_params,
            "trainable": self.trainable_params,
            "macs": self.total_macs,
        }


@dataclass
class PartialBuild:
    """A layer spec built as far as it goes: while one layer is wrong, the layers above it still have shapes to show."""

    model: nn.Sequential | None  # the layers that work (all of them when only the model's end is wrong); None if none
    error: str | None  # what is wrong, naming the layer; None when the whole model builds
    broken: int | None  # the broken layer's row, from 1


def build_what_works(spec: LayerSpec, num_classes: int, input_shape: tuple[int, int, int]) -> PartialBuild:
    """The model of `spec`, or, where it cannot be built, the layers above the broken one and the error."""
    try:
        return PartialBuild(build_from_spec(spec, num_classes, input_shape), None, None)
    except LayerError as exc:
        above = build_from_spec(spec, num_classes, input_shape, upto=exc.layer - 1) if exc.layer > 1 else None
        return PartialBuild(above, str(exc), exc.layer)
    except PlaygroundError as exc:
        if not isinstance(spec, (list, tuple)) or not spec:
            raise
        # Every layer fits, but the model does not end in one score per class: all of it is worth showing.
        return PartialBuild(build_from_spec(spec, num_classes, input_shape, upto=len(spec)), str(exc), None)


def shape_str(shape: Any) -> str:
    """(32, 16, 16) -> '32 x 16 x 16', the way the pages and tutorials write shapes."""
    return " x ".join(str(int(d)) for d in shape)


def summary(model: nn.Module, input_shape: tuple[int, int, int] = (3, 32, 32), depth: int = 3) -> LayerTable:
    """Layer table for any model from one batch-1 forward pass on the CPU.

    Rows are the layers that ran, in call order: leaf layers down to `depth`
    (top-level children are depth 1), and containers at exactly `depth`
    collapsed into one row. Totals count every parameter of the model, used or not.
    """
    shape = _check_input_shape(input_shape)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise PlaygroundError(f"depth must be a whole number >= 1 (got {depth!r}).")

    with _on_cpu_in_eval(model), _ForwardTracker(model) as tracker:
        try:
            stats = torchinfo.summary(model, input_size=(1, *shape), depth=depth, device="cpu", mode="eval", verbose=0)
        except Exception as exc:  # torchinfo wraps whatever the forward raised
            raise tracker.error(exc.__cause__ or exc) from exc
        finally:
            # torchinfo keeps the last run per model class alive in a module global;
            # for VGG that would pin half a gigabyte of weights.
            _clear_torchinfo_cache()

    rows = []
    total_macs = 0
    for info in stats.summary_list:
        if info.is_leaf_layer:
            total_macs += _layer_macs(info)
        if info.depth > depth:
            continue
        name = _dotted_name(info) or ("model" if info.is_leaf_layer else "(own parameters)")
        if info.is_leaf_layer or info.depth == depth:
            params = 0 if info.is_recursive else info.num_params
            trainable = 0 if info.is_recursive else info.trainable_params
            macs = _layer_macs(info) if info.is_leaf_layer else sum(_layer_macs(c) for c in info.children if c.is_leaf_layer)
        elif not info.is_recursive and info.leftover_params() > 0:
            # A container with parameters of its own (e.g. a learned scale used in its
            # forward): without this row those parameters would appear nowhere.
            params, trainable, macs = info.leftover_params(), info.leftover_trainable_params(), 0
        else:
            continue
        rows.append(
            {
                "name": name,
                "type": info.class_name,
                "output_shape": shape_str(info.output_size[1:]) if info.output_size else "",
                "params": int(params),
                "trainable": int(trainable),
                "macs": int(macs),
            }
        )

    trainable_params, total_params = count_parameters(model)
    return LayerTable(
        layers=pd.DataFrame(rows, columns=LAYER_COLUMNS).astype({"params": "int64", "trainable": "int64", "macs": "int64"}),
        total_params=total_params,
        trainable_params=trainable_params,
        total_macs=int(total_macs),
        input_shape=shape,
        output_shape=tracker.output_shape,
    )


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
        ok = len(shape) >= 1 and all(d >= 1 for d in shape) and all(float(d) == int(d) for d in input_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise PlaygroundError(
            f"Input shape {input_shape!r} is not valid: give positive whole numbers, channels x height x width, e.g. (3, 32, 32)."
        )
    return shape


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in (*model.parameters(), *model.buffers()):
        if not is_lazy(tensor):
            return tensor.device
    return None


@contextlib.contextmanager
def _on_cpu_in_eval(model: nn.Module) -> Iterator[None]:
    """Run a side-effect-free look at the model, then put it back as it was.

    Modes are saved per module because `model.train(flag)` would flatten a
    deliberate mix (say, frozen BatchNorm kept in eval while the rest trains).
    """
    modes = [(m, m.training) for m in model.modules()]
    device = _model_device(model)
    try:
        model.to("cpu")
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training
        if device is not None and device.type != "cpu":
            model.to(device)


def _clear_torchinfo_cache() -> None:
    clear = getattr(getattr(torchinfo, "torchinfo", None), "clear_cached_forward_pass", None)
    if clear is not None:
        clear()


def _dotted_name(info: Any) -> str:
    parts = []
    while info.parent_info is not None:
        parts.append(info.var_name)
        info = info.parent_info
    return ".".join(reversed(parts))


def _layer_macs(info: Any) -> int:
    """Multiply-accumulates of one layer for one image.

    Conv and Linear count weight multiplies only (the textbook C_in*C_out*k*k*H*W
    for a conv); torchinfo also adds one per bias element, which no one means by MACs.
    """
    module = info.module
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and not is_lazy(weight) and info.output_size:
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            # Each *input* pixel is spread over the kernel, so count input positions.
            return weight.numel() * math.prod(info.input_size[2:])
        if isinstance(module, nn.modules.conv._ConvNd):
            return weight.numel() * math.prod(info.output_size[2:])
        if isinstance(module, nn.Linear):
            return weight.numel() * math.prod(info.output_size[:-1])
    return int(info.macs)


class _ForwardTracker:
    """Knows which module is running, so a failed forward can name its layer.

    A stack (pushed by a pre-hook, popped by a forward hook) leaves the innermost
    unfinished module on top when an exception escapes. It also records the
    model's output shape.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.stack: list[tuple[str, nn.Module, str]] = []
        self.output_shape: tuple[int, ...] = ()
        self.handles: list[Any] = []

    def __enter__(self) -> _ForwardTracker:
        for name, module in self.model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            self.handles.append(module.register_forward_hook(self._post_hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()

    def _pre_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            tensor = _first_tensor(args)
            shape = shape_str(tensor.shape[1:]) if tensor is not None else "?"
            self.stack.append((name, module, shape))

        return hook

    def _post_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.stack:
                self.stack.pop()
            if module is self.model:
                tensor = _first_tensor(output)
                if tensor is not None:
                    self.output_shape = tuple(int(d) for d in tensor.shape[1:])

        return hook

    def error(self, exc: BaseException) -> PlaygroundError:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        if not self.stack:
            return PlaygroundError(f"The model's forward pass failed: {reason} — check the model code.")
        name, module, in_shape = self.stack[-1]
        kind = type(module).__name__
        where = f"Layer {name} ({kind})" if name else f"The model ({kind})"
        return PlaygroundError(f"{where} failed on input {in_shape}: {reason} — {_hint(module, reason, in_shape)}")


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        return _first_tensor(list(value.values()))
    return None


def _hint(module: nn.Module, reason: str, in_shape: str) -> str:
    """What to change, for the mistakes learners actually make with shapes."""
    low = reason.lower()
    dims = in_shape.split(" x ")
    if "too small" in low or "greater than" in low or "smaller than kernel" in low:
        return "use a larger input size, padding, or fewer downsampling layers"
    if isinstance(module, nn.Linear) and "shapes cannot be multiplied" in low:
        if len(dims) > 1 and all(d.isdigit() for d in dims):
            flat = math.prod(int(d) for d in dims)
            return f"add nn.Flatten() before it; it then gets {flat} values, so set in_features to {flat}"
        return f"set in_features to {dims[-1]} (the size of what reaches this layer)"
    if isinstance(module, nn.modules.conv._ConvNd) and "channels" in low:
        return f"set in_channels to {dims[0]} (the channels of what reaches this layer)"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and "running_mean" in low:
        return f"set num_features to {dims[0]} (the channels of what reaches this layer)"
    return "check that this layer's sizes match the shape of its input"


# ------------------------------------------------------------ conv arithmetic


def _check_ints(**values: Any) -> None:
    minimums = {"size": 1, "kernel_size": 1, "stride": 1, "padding": 0, "dilation": 1, "target": 1}
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < minimums[name]:
            raise PlaygroundError(f"{name} must be a whole number >= {minimums[name]} (got {value!r}).")


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """H_out = floor((H + 2p - d(k-1) - 1) / s) + 1, as in nn.Conv2d's docs (pooling too)."""
    _check_ints(size=size, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
    span = dilation * (kernel_size - 1) + 1
    out = (size + 2 * padding - span) // stride + 1
    if out < 1:
        raise PlaygroundError(
            f"Output size would be {out}: the {span}-pixel kernel span is larger than the "
            f"{size + 2 * padding}-pixel padded input — use a larger input size, more padding "
            "or a smaller kernel."
        )
    return out


def padding_for_size(size: int, kernel_size: int, stride: int = 1, dilation: int = 1, target: int | None = None) -> int | None:
    """Smallest padding p >= 0 that gives output size `target`, or None if none does.

    `target` defaults to "same" size: `size`, or ceil(size / stride) for a strided conv.
    Solving floor((size + 2p - span) / s) + 1 == target for p gives
    s*(target-1) <= size + 2p - span <= s*target - 1, so p has a least value and a ceiling;
    an even kernel at stride 1, for example, would need half a pixel on each side.
    """
    _check_ints(size=size, kernel_size=kernel_size, stride=stride, dilation=dilation)
    if target is None:
        target = -(-size // stride)
    _check_ints(target=target)
    span = dilation * (kernel_size - 1) + 1
    low = stride * (target - 1) - size + span  # lower bound for 2p
    high = stride * target - 1 - size + span  # upper bound for 2p
    p = max(0, -(-low // 2))
    return p if 2 * p <= high else None


def explain_conv_output(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> str:
    """The formula with the numbers filled in, e.g. '(32 + 2*2 - 1*(5-1) - 1) / 1 + 1 = 32'."""
    out = conv_output_size(size, kernel_size, stride, padding, dilation)
    inner = f"{size} + 2*{padding} - {dilation}*({kernel_size}-1) - 1"
    numerator = size + 2 * padding - dilation * (kernel_size - 1) - 1
    if numerator % stride == 0:
        return f"({inner}) / {stride} + 1 = {out}"
    # Spell out the rounding so the numbers on the page add up.
    return f"floor(({inner}) / {stride}) + 1 = floor({numerator}/{stride}) + 1 = {out}"


# ------------------------------------------------------ parameters and freezing


def format_count(n: int) -> str:
    """145578 -> '145.6 K', 138357544 -> '138.4 M' (B for billions, as in "7B")."""
    n = int(n)
    if abs(n) < 1000:
        return str(n)
    for factor, unit in ((10**3, "K"), (10**6, "M"), (10**9, "B"), (10**12, "T")):
        text = f"{n / factor:.1f}"
        # Move up a unit when rounding reaches 1000: 999,960 reads '1.0 M', not '1000.0 K'.
        if abs(float(text)) < 1000 or unit == "T":
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def freeze_map(model: nn.Module) -> pd.DataFrame:
    """Which parts of the model train: one row per top-level child, one level deeper
    inside plain containers (VGG's `features`, ResNet's `layer1`, a Sequential's
    own children are already top level)."""
    rows = []
    own = [p for p in model.parameters(recurse=False)]
    if own:
        rows.append(_freeze_row("(own parameters)", type(model).__name__, own))
    children = list(model.named_children())
    if not children and not own:
        rows.append(_freeze_row("model", type(model).__name__, list(model.parameters())))
    for name, child in children:
        grandchildren = list(child.named_children())
        if isinstance(child, _CONTAINERS) and grandchildren:
            for sub, grandchild in grandchildren:
                rows.append(_freeze_row(f"{name}.{sub}", type(grandchild).__name__, list(grandchild.parameters())))
        else:
            rows.append(_freeze_row(name, type(child).__name__, list(child.parameters())))
    return pd.DataFrame(rows, columns=FREEZE_COLUMNS).astype({"params": "int64", "trainable": "int64"})


def _freeze_row(name: str, kind: str, params: list[nn.Parameter]) -> dict[str, Any]:
    params = [p for p in params if not is_lazy(p)]
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    if total == 0:
        status = "no parameters"
    elif trainable == total:
        status = "trains"
    elif trainable == 0:
        status = "frozen"
    else:
        status = "partly frozen"
    return {"name": name, "type": kind, "params": total, "trainable": trainable, "status": status}


# ------------------------------------------------------------------ code export


def to_code(model: nn.Module, class_name: str = "Net", input_shape: tuple[int, ...] = (3, 32, 32)) -> str:
    """PyTorch source for a model made of torch.nn layers in an nn.Sequential
    (nesting allowed), or a module whose forward is just one such Sequential.

    Each line is `'nn.' + repr(layer)`: torch.nn reprs are constructor calls. The
    generated state_dict keys match a wrapper model's exactly; a bare Sequential's
    weights load with `net.layers.load_state_dict(...)`.
    """
    if not isinstance(class_name, str) or not class_name.isidentifier() or keyword.iskeyword(class_name):
        raise PlaygroundError(f"Class name {class_name!r} is not a valid Python name; try 'Net'.")

    table = summary(model, input_shape, depth=10**6)
    shapes = dict(zip(table.layers["name"], table.layers["output_shape"]))

    if isinstance(model, nn.Sequential):
        attr, body, prefix = "layers", model, ""
    else:
        attr, body = _sequential_body(model, table.input_shape)
        prefix = attr + "."

    needs_ordered_dict = [False]
    lines = [f"        self.{attr} = " + _sequential_code(body, prefix, 3, shapes, needs_ordered_dict)]

    header = ["import torch", "from torch import nn"]
    if needs_ordered_dict[0]:
        header.insert(0, "from collections import OrderedDict\n")
    note = (
        f"    # Weights saved from the original nn.Sequential load with:\n    #     net.{attr}.load_state_dict(state_dict)\n"
        if isinstance(model, nn.Sequential)
        else ""
    )
    return (
        "\n".join(header)
        + "\n\n\n"
        + f"class {class_name}(nn.Module):\n"
        + f"    # input {shape_str(table.input_shape)} -> output {shape_str(table.output_shape)}\n"
        + note
        + "    def __init__(self):\n"
        + "        super().__init__()\n"
        + "\n".join(lines)
        + "\n\n"
        + "    def forward(self, x):\n"
        + f"        return self.{attr}(x)\n"
    )


def class_source(model: nn.Module) -> str:
    """The model's own nn.Module class as written (inspect.getsource), for models with their own forward()
    that to_code cannot flatten into one nn.Sequential: the class is the lesson there."""
    cls = type(model)
    try:
        source = pyinspect.getsource(cls)
    except (OSError, TypeError):
        raise PlaygroundError(f"The source of {cls.__name__} is not available (it was not defined in a Python file).") from None
    where = cls.__module__.replace(".", "/") + ".py"
    return f"# {cls.__qualname__} as written in {where}\nimport torch\nfrom torch import nn\n\n\n{source}"


def _sequential_body(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, nn.Sequential]:
    """The one Sequential a wrapper model delegates to, proven by identity on a real
    forward: the wrapper must hand its input straight in and return the output untouched."""
    children = list(model.named_children())
    own_state = list(model.parameters(recurse=False)) + list(model.buffers(recurse=False))
    refusal = PlaygroundError(
        f"{type(model).__name__} has its own forward code, so it cannot be written as one "
        "nn.Sequential — export works for models built as a stack of torch.nn layers."
    )
    if len(children) != 1 or not isinstance(children[0][1], nn.Sequential) or own_state:
        raise refusal
    attr, body = children[0]
    seen: dict[str, tuple[Any, Any]] = {}
    handles = [
        model.register_forward_hook(lambda m, a, o: seen.__setitem__("model", (a[0] if a else None, o))),
        body.register_forward_hook(lambda m, a, o: seen.__setitem__("body", (a[0] if a else None, o))),
    ]
    try:
        with _on_cpu_in_eval(model):
            model(torch.rand(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    if "body" not in seen or seen["model"][0] is not seen["body"][0] or seen["model"][1] is not seen["body"][1]:
        raise refusal
    return attr, body


def _sequential_code(seq: nn.Sequential, prefix: str, indent: int, shapes: dict[str, str], needs_ordered_dict: list[bool]) -> str:
    pad = "    " * indent
    children = list(seq.named_children())
    # Positional Sequential names its layers 0, 1, 2...; any other names must be
    # kept (via an OrderedDict) or the state_dict keys would not match.
    positional = all(name == str(i) for i, (name, _) in enumerate(children))
    if not positional:
        needs_ordered_dict[0] = True
    lines = ["nn.Sequential(" if positional else "nn.Sequential(OrderedDict(["]
    for name, layer in children:
        path = prefix + name
        if isinstance(layer, nn.Sequential):
            code = _sequential_code(layer, path + ".", indent + 1, shapes, needs_ordered_dict)
        else:
            code = _layer_code(layer, path)
        entry = code if positional else f"({name!r}, {code})"
        shape = shapes.get(path, "")
        lines.append(f"{pad}{entry}," + (f"  # -> {shape}" if shape else ""))
    lines.append("    " * (indent - 1) + (")" if positional else "]))"))
    return "\n".join(lines)


def _layer_code(layer: nn.Module, path: str) -> str:
    kind = type(layer).__name__
    if getattr(nn, kind, None) is not type(layer):
        raise PlaygroundError(
            f"Layer {path} ({kind}) is not a torch.nn layer, so it has no one-line constructor — "
            "export works for models built from torch.nn layers."
        )
    code = "nn." + repr(layer)
    padding = getattr(layer, "padding", None)
    if isinstance(layer, nn.modules.conv._ConvNd) and isinstance(padding, str):
        # Conv's repr prints padding='same' without quotes.
        code = code.replace(f"padding={padding}", f"padding={padding!r}")
    problem = "its repr spans several lines" if "\n" in code else ""
    if not problem:
        try:
            # Safe to eval: the class is torch's own, so the text is torch's repr.
            rebuilt = eval(code, {"nn": nn, "torch": torch})  # noqa: S307
            same_state = {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in layer.state_dict().items()}
            if repr(rebuilt) != repr(layer) or not same_state:
                problem = "its repr does not rebuild the same layer"
        except Exception as exc:  # noqa: BLE001 - any failure means the repr is not code
            problem = f"its repr is not a valid constructor call ({exc})"
    if problem:
        raise PlaygroundError(f"Layer {path} ({kind}) cannot be exported: {problem} — write this layer by hand.")
    return code
