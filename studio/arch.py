"""Layer specs as an editable table, and architectures saved for the Train page.

No Streamlit here: the conversions are plain functions the tests call directly.
A spec is core.models.layers' list of dicts; the table folds the options of every
layer type into a few shared columns so it stays narrow enough to edit.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import PlaygroundError
from core.files import write_json
from core.models.build import count_parameters, module_expr
from core.models.layers import LAYER_OPTIONS
from core.serving import runs

TABLE_COLUMNS = ["#", "type", "in", "out", "kernel", "stride", "padding", "dilation", "p", "bias"]
INT_COLUMNS = ["in", "out", "kernel", "stride", "padding", "dilation"]
# table column -> spec option, per layer type ("in" / "out" mean channels, features or pooled size)
_COLUMN_OPTION = {
    "Conv2d": {
        "in": "in_channels",
        "out": "out_channels",
        "kernel": "kernel_size",
        "stride": "stride",
        "padding": "padding",
        "dilation": "dilation",
        "bias": "bias",
    },
    "MaxPool2d": {"kernel": "kernel_size", "stride": "stride", "padding": "padding"},
    "AvgPool2d": {"kernel": "kernel_size", "stride": "stride", "padding": "padding"},
    "AdaptiveAvgPool2d": {"out": "output_size"},
    "Dropout": {"p": "p"},
    "Linear": {"in": "in_features", "out": "out_features", "bias": "bias"},
}
COLUMN_HELP = {
    "#": "Order of the layers: to insert a layer between 2 and 3, add a row and give it 2.5.",
    "type": "The layer, as in torch.nn.",
    "in": "Conv2d: in_channels. Linear: in_features. Blank = worked out from the shape that reaches the layer; "
    "type a number to write it yourself as in PyTorch code (a wrong one gives PyTorch's error, explained).",
    "out": "Conv2d: out_channels. Linear: out_features (leave the last one empty = number of classes). AdaptiveAvgPool2d: output size.",
    "kernel": "Conv2d / pooling: kernel size (a square kernel).",
    "stride": "Conv2d / pooling: step between windows (pooling: empty = kernel size).",
    "padding": "Conv2d / pooling: zeros added on each side.",
    "dilation": "Conv2d: spacing between kernel taps.",
    "p": "Dropout: probability of zeroing each value while training.",
    "bias": "Conv2d / Linear: learn a bias (untick before BatchNorm, which has its own).",
}
ARCH_FOLDER = "_architectures"  # starts with '_' so it can never be a run id (core.serving.runs.RUN_ID_PATTERN)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$")


def spec_to_table(spec: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for i, layer in enumerate(spec, start=1):
        row: dict[str, Any] = {c: None for c in TABLE_COLUMNS}
        row["#"], row["type"] = float(i), layer.get("type")
        for column, option in _COLUMN_OPTION.get(str(layer.get("type")), {}).items():
            value = layer.get(option, LAYER_OPTIONS.get(str(layer.get("type")), {}).get(option))
            row[column] = value
        rows.append(row)
    return typed_table(pd.DataFrame(rows, columns=TABLE_COLUMNS))


def typed_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Column types the editor can show as numbers and checkboxes (nullable: blank = default)."""
    frame = frame.copy()
    for column in INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").round().astype("Int64")
    frame["#"] = pd.to_numeric(frame["#"], errors="coerce").astype("float64")
    frame["p"] = pd.to_numeric(frame["p"], errors="coerce").astype("float64")
    frame["bias"] = frame["bias"].astype("boolean")
    frame["type"] = frame["type"].astype("object")
    return frame


def table_to_spec(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows in '#' order (rows without a number go last); rows without a type are skipped
    (a row just added and not filled in yet)."""
    frame = frame.copy()
    frame["_order"] = pd.to_numeric(frame.get("#"), errors="coerce").fillna(math.inf)
    frame["_row"] = range(len(frame))
    spec: list[dict[str, Any]] = []
    for _, row in frame.sort_values(["_order", "_row"]).iterrows():
        kind = row.get("type")
        if kind is None or (isinstance(kind, float) and math.isnan(kind)) or not str(kind).strip():
            continue
        kind = str(kind)
        layer: dict[str, Any] = {"type": kind}
        for column, option in _COLUMN_OPTION.get(kind, {}).items():
            value = row.get(column)
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                continue
            if column == "bias":
                if not bool(value):
                    layer["bias"] = False
            elif column == "p":
                layer[option] = float(value)
            else:
                layer[option] = int(value)
        spec.append(layer)
    return spec


# --------------------------------------------------------------------------- saved architectures


def _folder(root: str | Path | None = None) -> Path:
    return Path(root or runs.MODELS_DIR) / ARCH_FOLDER


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-.") or "architecture"


def save_architecture(name: str, spec: list[dict[str, Any]], input_size: int, root: str | Path | None = None) -> Path:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise PlaygroundError("Name the architecture with up to 40 letters, digits, spaces, '-', '_' or '.'.")
    if not spec:
        raise PlaygroundError("The architecture has no layers to save.")
    folder = _folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_slug(name)}.json"
    write_json(path, {"name": name, "layers": spec, "input_size": int(input_size), "saved": time.time()})
    return path


def saved_architectures(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Newest first; unreadable files are skipped rather than breaking the Train page."""
    folder = _folder(root)
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("layers"), list) and data.get("name"):
            found.append(data)
    return sorted(found, key=lambda d: d.get("saved", 0), reverse=True)


# --------------------------------------------------------------------------- one model, every view


def inspect_model(name_or_spec: str | list[dict[str, Any]], num_classes: int = 10, side: int = 32, freeze: bool = False) -> dict[str, Any]:
    """Everything the Architecture page shows about one model, as plain data (so the page
    can cache it without keeping a large model in memory). While one layer of a spec is wrong,
    `error` says what and `broken` which row; the layers above it are still shown, the rest marked."""
    from core.models import inspect as look
    from core.models.build import build
    from core.models.presets import PRESETS

    if not 8 <= side <= 512:
        raise PlaygroundError("Use an input size between 8 and 512 pixels.")
    if not 1 <= num_classes <= 10_000:
        raise PlaygroundError("Use between 1 and 10,000 classes.")
    shape = (3, side, side)
    error, broken = None, None
    if isinstance(name_or_spec, str):
        model = build(name_or_spec, num_classes=num_classes, input_size=side, freeze=freeze)
        torchvision = PRESETS[name_or_spec].torchvision
    else:
        built = look.build_what_works(name_or_spec, num_classes, shape)
        model, error, broken, torchvision = built.model, built.error, built.broken, False
    if model is None:  # the first layer is the broken one: nothing above it to show
        return _with_unbuilt_rows(_empty_result(shape), name_or_spec, error, broken)
    table = look.summary(model, shape, depth=2)
    code_note = None
    try:
        code, code_error = look.to_code(model, "Net", shape), None
    except PlaygroundError as exc:
        code, code_error = None, str(exc)
        try:  # a module with its own forward(): its class is the code to read
            code = look.class_source(model)
            code_note = (
                f"{type(model).__name__} has its own forward(), so here is its nn.Module class as written: "
                "`__init__` makes the layers, `forward` says how the input flows through them."
            )
        except PlaygroundError:
            pass
    if error:  # half a model is no code to copy
        code, code_error, code_note = None, "The code appears once every layer fits.", None
    layers = table.layers
    # The code that reaches each layer (model[0], model.layer1[0]): the names PyTorch prints, and the other pages use.
    in_code = [module_expr(name) for name in layers["name"]]
    if not isinstance(name_or_spec, str):  # one row per spec row: number them as the editor and the errors do
        layers = overview = layers.assign(name=[str(i) for i in range(1, len(layers) + 1)])
    else:
        # The diagram draws every layer that runs (leaf modules, in call order), never a container as one block;
        # an Identity (ResNet's max-pool, removed for small images) does nothing, so it is left out.
        leaves = look.summary(model, shape, depth=10**6).layers
        overview = leaves[leaves["type"] != "Identity"].reset_index(drop=True)
    trainable, total = count_parameters(model)
    layers = layers.copy()  # the diagram may share the frame
    layers.insert(1, "in code", in_code)
    result = {
        "layers": layers,
        "overview": overview,
        "total_params": table.total_params,
        "trainable_params": trainable,
        "total": total,
        "total_macs": table.total_macs,
        "output_shape": table.output_shape,
        "printed": str(model),
        "code": code,
        "code_error": code_error,
        "code_note": code_note,
        "freeze_map": look.freeze_map(model) if torchvision else None,
    }
    return _with_unbuilt_rows(result, name_or_spec, error, broken)


BROKEN = "✗ does not fit: see the error"  # the output shape of the broken layer's row
NOT_BUILT = "not built (below the broken layer)"


def _empty_result(shape: tuple[int, int, int]) -> dict[str, Any]:
    from core.models.inspect import LAYER_COLUMNS

    return {
        "layers": pd.DataFrame(columns=[LAYER_COLUMNS[0], "in code", *LAYER_COLUMNS[1:]]),
        "overview": pd.DataFrame(columns=LAYER_COLUMNS),
        "total_params": 0,
        "trainable_params": 0,
        "total": 0,
        "total_macs": 0,
        "output_shape": shape,
        "printed": "",
        "code": None,
        "code_error": "The code appears once every layer fits.",
        "code_note": None,
        "freeze_map": None,
    }


def _with_unbuilt_rows(result: dict[str, Any], spec: Any, error: str | None, broken: int | None) -> dict[str, Any]:
    """The broken layer's row and the rows below it added to the table (so the editor's rows all show), and the
    printout ending with a line that names the broken layer."""
    result = {**result, "error": error, "broken": broken}
    if broken is None:
        return result
    rows = [
        {
            "name": str(i),
            "in code": f"model[{i - 1}]",
            "type": str(layer.get("type", "?")) if isinstance(layer, dict) else "?",
            "output_shape": BROKEN if i == broken else NOT_BUILT,
        }
        for i, layer in enumerate(spec[broken - 1 :], start=broken)
    ]
    layers = pd.concat([result["layers"], pd.DataFrame(rows)], ignore_index=True)
    result["layers"] = layers.astype({c: "Int64" for c in ("params", "trainable", "macs") if c in layers})
    printed = result["printed"].rstrip(")").rstrip() if result["printed"] else "Sequential("
    result["printed"] = f"{printed}\n  ({broken - 1}): ✗ {rows[0]['type']}: does not fit, see the error above\n)"
    return result


def mark_broken(layers: pd.DataFrame, broken: int | None) -> pd.DataFrame | Any:
    """The layer table with the broken layer's row in red (a pandas Styler, which st.dataframe draws)."""
    if broken is None:
        return layers
    return layers.style.apply(
        lambda row: ["background-color: #fde2df; color: #a4161a" if row.name == broken - 1 else "" for _ in row], axis=1
    )
