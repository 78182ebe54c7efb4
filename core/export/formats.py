"""Take a run out of the studio: a training script, a notebook, ONNX, and `python -m core.export`.

The script and the notebook are rendered from Jinja templates in core/export/templates/, one per
concern (data, DataLoader, model, loss, optimizer, train, test, save), the way traingenerator renders
its code. Where the studio's own code is already plain PyTorch/numpy (the preset models, the speedrun
net, the shapes generator, the learning-rate schedule) the templates receive that code itself, read
with `inspect.getsource`, so the exported recipe cannot drift from the one the studio trains with.
The plain state_dict and its JSON sidecar come from core.serving.runs (state_dict_bytes, weights_info).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import pprint
import sys
import tempfile
import warnings
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch

from core.data.spec import SHAPES_TEST, DataSpec
from core.errors import PlaygroundError, command
from core.serving import runs

FORMATS = ("script", "notebook", "onnx", "state_dict")
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
# The tutorial's order; each name is a template in TEMPLATE_DIR with title / markdown / define / run blocks.
SECTIONS = ("data", "dataloader", "model", "loss", "optimizer", "train", "test", "save")
# What an exported script may import besides the standard library.
SCRIPT_PACKAGES = ("torch", "torchvision", "numpy", "PIL")
ONNX_MAX_ABS_DIFF = 1e-3  # the check an ONNX export must pass against PyTorch
ONNX_OPSET = 18
_OPTIMIZER_TITLES = {"sgd": "SGD with momentum", "adam": "Adam", "adamw": "AdamW"}


@dataclass
class Section:
    number: int
    name: str
    title: str
    markdown: str
    define: str
    run: str
    run_title: str


# --------------------------------------------------------------------------- what the templates get


@cache
def _source(*objects: Any) -> str:
    return "\n\n\n".join(inspect.getsource(o).rstrip() for o in objects)


def _model_context(config: dict[str, Any], num_classes: int, input_size: int) -> dict[str, Any]:
    """Which model template, and the code or names it needs."""
    from core.models import backbones, presets
    from core.models.build import module_expr

    name = config["model"]
    if name == "custom":
        return {
            "model_template": "model_sequential.j2",
            "layers": _sequential_lines(config["layers"], num_classes, input_size),
            "input_shape": f"3 x {input_size} x {input_size}",
            "model_markdown": "Your own layer stack, as one `nn.Sequential`; the comment on each line is the shape of what "
            "that layer outputs for one image.",
        }
    preset = presets.PRESETS.get(name)
    if presets.is_torchvision(name):
        weights = config.get("weights")
        imagenet = backbones.is_weights_name(name, weights)
        weights_file = str(weights) if weights is not None and not imagenet else None
        stem = name == "resnet18" and input_size <= 64 and not imagenet
        with torch.device("meta"):  # only its structure is read: no memory, no weight init (VGG16: 1.8 s -> 0.05 s)
            probe = backbones._torchvision_model(name, input_size)  # any torchvision family: where its classifier is
        head = backbones.head_path(probe, name)
        head_conv = isinstance(probe.get_submodule(head), torch.nn.Conv2d)  # SqueezeNet classifies with a 1x1 conv
        head_expr = module_expr(head)
        kwargs = "".join(f", {k}={v!r}" for k, v in backbones._builder_kwargs(name, input_size).items())
        parts = [f"torchvision's `{name}`" + (f" with its ImageNet weights ({weights})" if imagenet else "")]
        if stem:
            parts.append("with the studio's CIFAR stem (a 3x3 first conv and no max-pool, so small images keep their detail)")
        parts.append(f"and a new head (`{head}`) with one output per class")
        return {
            "model_template": "model_torchvision.j2",
            "name": name,
            "weights": weights if imagenet else None,
            "weights_file": weights_file,
            "stem": stem,
            "stem_source": _source(backbones.cifar_stem) if stem else "",
            "head": head,
            "head_expr": head_expr,
            "head_conv": head_conv,
            "builder_kwargs": kwargs,
            "model_markdown": " ".join(parts) + ".",
        }
    if name == "speedrun":
        from core.models import speedrun

        constants = [(c, repr(getattr(speedrun, c))) for c in ("DEFAULT_WIDTHS", "WHITEN_BIAS_EPOCHS")]
        return {
            "model_template": "model_source.j2",
            "constants": constants,
            "model_source": _source(speedrun._BatchNorm, speedrun._Conv, speedrun._ConvGroup, speedrun.SpeedrunNet),
            "model_call": "SpeedrunNet(num_classes" + (f", widths={tuple(config['widths'])})" if config.get("widths") else ")"),
            "model_markdown": f"**{preset.title}**. {preset.description} The classes below are the studio's own code "
            "(core/models/speedrun.py), copied as they are; their comments explain each choice.",
        }
    builders = {
        "cifar10_quick": (presets.cifar10_quick, "cifar10_quick(num_classes)"),
        "lenet5": (presets.lenet5, "lenet5(num_classes)"),
        "mycnn": (presets.MyCNN, "MyCNN(num_classes, input_size=INPUT_SIZE)"),
    }
    builder, call = builders[name]
    return {
        "model_template": "model_source.j2",
        "constants": [],
        "model_source": _source(builder),
        "model_call": call,
        "model_markdown": f"**{preset.title}**. {preset.description} The code is the studio's own (core/models/presets.py).",
    }


def _sequential_lines(spec: list[dict[str, Any]], num_classes: int, input_size: int) -> tuple[tuple[str, str], ...]:
    return _spec_lines(json.dumps(spec, sort_keys=True), num_classes, input_size)


@lru_cache(maxsize=64)
def _spec_lines(spec_json: str, num_classes: int, input_size: int) -> tuple[tuple[str, str], ...]:
    """(constructor, output shape) per layer of a layer spec, as torch prints them."""
    from core.models.inspect import _layer_code, shape_str
    from core.models.layers import build_from_spec

    model = build_from_spec(json.loads(spec_json), num_classes, (3, input_size, input_size))
    x = torch.zeros(1, 3, input_size, input_size)
    lines = []
    with torch.no_grad():
        for i, layer in enumerate(model):
            x = layer.eval()(x)
            code = _layer_code(layer, str(i))
            if i == len(model) - 1 and isinstance(layer, torch.nn.Linear):
                code = code.replace(f"out_features={num_classes},", "out_features=num_classes,")
            lines.append((code, shape_str(x.shape[1:])))
    return tuple(lines)


def _data_context(config: dict[str, Any]) -> dict[str, Any]:
    from core.data import datasets

    spec = DataSpec.parse(str(config["data"]))
    shapes, cifar10 = spec.kind == "shapes", spec.kind == "cifar10"
    ctx: dict[str, Any] = {"shapes": shapes, "cifar10": cifar10, "folder": True}
    dataset = config.get("dataset") or {}
    if shapes:
        ctx.update(
            data="shapes",
            data_title="generated shapes",
            shapes_classes=repr(datasets.SHAPES_CLASSES),
            n_train=int(dataset.get("n_train") or spec.shapes_train),
            n_test=int(dataset.get("n_test") or SHAPES_TEST),
            shapes_source=_source(datasets._shape_masks, datasets._render_shapes),
            data_help="'shapes' regenerates the run's images; or a folder of class folders",
            data_option_help="shapes (the run's images, regenerated), shapes:N (N training images), "
            "or a folder of class folders (train/ and test/ inside, or only class folders; or a .zip)",
        )
    elif cifar10:
        ctx.update(
            data="cifar10",
            data_title="CIFAR-10",
            data_help="'cifar10' downloads it into ./data; or a folder of class folders",
            data_option_help="cifar10 (torchvision, downloads into ./data) or a folder of class folders "
            "(train/ and test/ inside, or only class folders; or a .zip)",
        )
    else:
        ctx.update(
            data=spec.path,
            data_title=f"the image folder {Path(spec.path).name}",
            data_help="a folder of class folders (train/ and test/ inside, or only class folders; or a .zip)",
            data_option_help="a folder of class folders (train/ and test/ inside, or only class folders; or a .zip)",
        )
    return ctx


def recipe_context(
    config: dict[str, Any], *, test_acc: float | None = None, epochs_done: int = 0, out_name: str = "model.pt"
) -> dict[str, Any]:
    """Everything the templates need, from a run's config.json."""
    from core.data.classes import run_test_split_warning
    from core.models.presets import PRESETS, is_torchvision
    from core.training import losses
    from core.training.config import TrainConfig
    from core.training.describe import SCHEDULE_TITLES
    from core.training.parts import lr_factor

    if not config.get("classes") or not config.get("normalization"):
        raise PlaygroundError(
            f"Run {config.get('run_id', '?')} has not started training yet (no classes recorded); export it once it has trained an epoch."
        )
    recipe = TrainConfig.from_dict(config)  # the defaults of fields an older config.json lacks
    input_size = int(config.get("input_size") or recipe.image_size or 32)
    data_size = int(config.get("data_size") or DataSpec.parse(recipe.data).stored_side(input_size))
    classes = list(config["classes"])
    name = recipe.model
    title = "Custom layers" if name == "custom" else PRESETS[name].title if name in PRESETS else name
    notes = []
    if recipe.ema:
        notes.append(
            f"Left out: the run evaluated an exponential moving average of the weights (decay {recipe.ema}); "
            "this script trains and tests the weights themselves."
        )
    if is_torchvision(name) and recipe.weights:
        notes.append(
            "With pretrained weights the new head starts from other random numbers than the studio's "
            "(the studio builds the model randomly, then loads the weights; torchvision skips that first step)."
        )
    if recipe.weights and Path(str(recipe.weights)).suffix == ".safetensors":
        notes.append("The run started from a .safetensors file; torch.load reads .pt/.pth only, so convert it first.")
    ctx: dict[str, Any] = {
        "run_id": config.get("run_id", ""),
        "model_name": name,
        "model_title": title,
        "classes_repr": pprint.pformat(classes, width=110, compact=True),
        "mean": tuple(round(float(v), 6) for v in config["normalization"]["mean"]),
        "std": tuple(round(float(v), 6) for v in config["normalization"]["std"]),
        "input_size": input_size,
        "data_size": data_size,
        "resize": input_size != data_size,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "lr": recipe.lr,
        "momentum": recipe.momentum,
        "nesterov": bool(recipe.nesterov and recipe.momentum > 0),
        "weight_decay": recipe.weight_decay,
        "label_smoothing": recipe.label_smoothing,
        "loss": recipe.loss,
        "loss_code": losses.code(recipe.loss, recipe.label_smoothing),
        "loss_title": losses.LOSSES[recipe.loss].title,
        "loss_help": losses.LOSSES[recipe.loss].help,
        "schedule": recipe.schedule,
        "warmup": recipe.warmup,
        "warmup_start": recipe.warmup_start,
        "optimizer": recipe.optimizer,
        "augment": recipe.augment,
        "crop_padding": recipe.crop_padding,
        "tta": int(recipe.tta),
        "seed": recipe.seed,
        "optimizer_title": _OPTIMIZER_TITLES[recipe.optimizer],
        "schedule_title": SCHEDULE_TITLES[recipe.schedule],
        "lr_factor_source": _source(lr_factor),
        "whiten": name == "speedrun",
        "param_groups": name == "speedrun",
        "freeze": bool(recipe.freeze_backbone),
        "torchvision_model": is_torchvision(name),
        "layers": pprint.pformat(recipe.layers, width=100, compact=True) if name == "custom" else None,
        "test_acc": test_acc,
        "test_split_warning": run_test_split_warning(config),  # said beside the accuracy
        "epochs_done": epochs_done,
        "out_name": out_name,
        "notes": notes,
        "speedrun": name == "speedrun",
    }
    ctx.update(_data_context(config))
    ctx.update(_model_context(config, len(classes), input_size))
    if not ctx["freeze"]:
        ctx.setdefault("head", "")
    return ctx


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )
    # Values written into the code as Python literals (double-quoted strings, like the rest of the code).
    env.filters["py"] = lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, str) else repr(v)
    return env


def _blocks(template_name: str, ctx: dict[str, Any]) -> dict[str, str]:
    template = _environment().get_template(template_name)
    context = template.new_context(ctx)
    return {name: "".join(render(context)).strip("\n") for name, render in template.blocks.items()}


def sections(ctx: dict[str, Any]) -> list[Section]:
    out = []
    for number, name in enumerate(SECTIONS, start=1):
        b = _blocks(f"{name}.j2", ctx)
        out.append(Section(number, name, b["title"], b["markdown"], b["define"], b["run"], b.get("run_title") or b["title"]))
    return out


def render_script(config: dict[str, Any], **kwargs: Any) -> str:
    """A standalone training script (torch, torchvision, numpy, PIL and the standard library only)."""
    ctx = {**recipe_context(config, **kwargs), "title": "training script"}
    header = _blocks("header.j2", ctx)
    settings = _blocks("settings.j2", ctx)
    text = (
        _environment()
        .get_template("script.j2")
        .render(
            header=f"{header['title']}.\n\n{header['markdown']}".replace('"""', "'''"),
            imports=_blocks("imports.j2", ctx)["code"],
            constants=settings["constants"],
            parse_args=settings["script"],
            settings=settings["script_run"],
            sections=sections(ctx),
        )
    )
    return text.rstrip() + "\n"


def render_notebook(config: dict[str, Any], **kwargs: Any) -> str:
    """The same code as the script, as a Jupyter notebook (nbformat 4): a markdown cell before each step."""
    import nbformat
    from nbformat import v4

    ctx = {**recipe_context(config, **kwargs), "title": "training notebook"}
    header = _blocks("header.j2", ctx)
    settings = _blocks("settings.j2", ctx)
    cells = [
        v4.new_markdown_cell(f"# {header['title']}\n\n{header['markdown']}"),
        v4.new_code_cell(_blocks("imports.j2", ctx)["code"] + "\n\n" + settings["constants"]),
        v4.new_markdown_cell(settings["notebook_markdown"]),
        v4.new_code_cell(settings["notebook"]),
    ]
    for section in sections(ctx):
        cells.append(v4.new_markdown_cell(section.markdown))
        cells.append(v4.new_code_cell("\n\n\n".join(part for part in (section.define, section.run) if part)))
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: the same run exports the same file
    notebook = v4.new_notebook(
        cells=cells,
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}, "language_info": {"name": "python"}},
    )
    nbformat.validate(notebook)
    return nbformat.writes(notebook)


def _run_context(run_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    info = runs.run_info(run_dir)
    return info.config, {"test_acc": info.last_acc, "epochs_done": info.epochs_done}


def script_filename(config: dict[str, Any]) -> str:
    """train_<model>.py: a module name, so `from train_cifar10_quick import build_model` works."""
    return f"train_{config.get('model', 'model')}.py"


def export_script(run_dir: str | os.PathLike) -> str:
    config, extra = _run_context(run_dir)
    return render_script(config, **extra)


def export_notebook(run_dir: str | os.PathLike) -> str:
    config, extra = _run_context(run_dir)
    return render_notebook(config, **extra)


def load_snippet(run_id: str, model: str) -> str:
    """The lines that load a downloaded state_dict (shown under the download button)."""
    module = Path(script_filename({"model": model})).stem
    return (
        f"from {module} import build_model  # the exported training script defines the model\n"
        f"model = build_model()\n"
        f'model.load_state_dict(torch.load("{run_id}.pt", weights_only=True))\n'
        f'info = json.load(open("{run_id}.json"))  # classes, normalization, input size'
    )


# --------------------------------------------------------------------------- ONNX


def _check_inputs(run_dir: Path, config: dict[str, Any], predictor, n: int) -> tuple[torch.Tensor, str]:
    """Up to n of the run's test images, normalized as the model sees them; random images when the data is gone."""
    from core.data import batches, datasets

    try:
        seed, size = int(config.get("seed", 0)), int(config.get("data_size") or predictor.image_size)
        if DataSpec.parse(str(config["data"])).kind == "shapes":  # the test stream does not depend on the training split's size
            test = datasets.shapes_dataset(n_train=0, n_test=max(n, 1), seed=seed).test
        else:
            test = datasets.load_dataset(
                str(config["data"]), image_size=size, seed=seed, download=False, data_dir=config.get("data_dir")
            ).test
        images, where = test.images[:n], "the run's test images"
    except PlaygroundError:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, predictor.image_size, predictor.image_size), dtype=torch.uint8, generator=gen)
        where = "random images (the run's data is not available here)"
    x = batches.normalize_batch(images, predictor.mean.cpu(), predictor.std.cpu(), predictor.input_size, channels_last=False)
    return x, where


def export_onnx(run_dir: str | os.PathLike, out: str | os.PathLike, *, check_images: int = 256) -> dict[str, Any]:
    """Write the run's model as ONNX (dynamic batch) and check it against PyTorch with onnxruntime.

    The graph takes normalized images (batch x 3 x S x S) and returns logits; classes, normalization
    and sizes are in its metadata. The check runs the run's test images through both and reports the
    largest logit difference and how often the top-1 class agrees.
    """
    import onnxruntime  # imported here: onnx/onnxscript/onnxruntime cost seconds, only exports need them

    from core.insight.predict import Predictor

    run_dir, out = Path(run_dir), Path(out)
    predictor = Predictor.from_run(run_dir)
    model = predictor.model.cpu().to(memory_format=torch.contiguous_format).eval()
    size = predictor.input_size
    info = runs.weights_info(run_dir)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # the exporter prints progress
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (torch.zeros(2, 3, size, size),),
            dynamo=True,
            opset_version=ONNX_OPSET,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    program.model.metadata_props.update(
        {
            "classes": json.dumps(info["classes"]),
            "normalization": json.dumps(info["normalization"]),
            "input_size": str(size),
            "image_size": str(info["image_size"]),
            "preprocessing": info["preprocessing"],
            "run_id": run_dir.name,
            "model": str(info["model"]),
        }
    )
    program.model.doc_string = (
        f"Torch Playground run {run_dir.name}: input 'image' is a batch of normalized "
        f"3 x {size} x {size} images, output 'logits' has one score per class (see metadata)."
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out))
    inputs, where = _check_inputs(run_dir, runs.read_config(run_dir), predictor, max(1, check_images))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    worst, agree = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(inputs), 64):
            x = inputs[start : start + 64]
            expected = model(x).float()
            got = torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
            worst = max(worst, float((got - expected).abs().max()))
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
    check = {
        "images": len(inputs),
        "on": where,
        "max_abs_logit_diff": worst,
        "top1_agreement": agree / len(inputs),
        "passed": worst <= ONNX_MAX_ABS_DIFF and agree == len(inputs),
    }
    return {
        "format": "onnx",
        "path": str(out),
        "opset": ONNX_OPSET,
        "bytes": out.stat().st_size,
        "input": f"image: batch x 3 x {size} x {size}, normalized",
        "output": f"logits: batch x {len(info['classes'])}",
        "check": check,
    }


def onnx_bytes(run_dir: str | os.PathLike, check_images: int = 64) -> bytes:
    """The ONNX file for a download button (checked like the command line's)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        result = export_onnx(run_dir, path, check_images=check_images)
        if not result["check"]["passed"]:
            raise PlaygroundError(f"The ONNX export does not match PyTorch ({result['check']}); use the state_dict instead.")
        return path.read_bytes()


# --------------------------------------------------------------------------- command line


def export(
    run_dir: str | os.PathLike, fmt: str = "script", out: str | os.PathLike | None = None, check_images: int = 256
) -> tuple[dict[str, Any] | None, str | None]:
    """(result JSON, text for stdout): a script or notebook without `out` is the text itself."""
    run_dir = Path(run_dir)
    run_id = run_dir.name
    if fmt in ("script", "notebook"):
        text = export_script(run_dir) if fmt == "script" else export_notebook(run_dir)
        if out is None:
            return None, text
        Path(out).write_text(text)
        return {"format": fmt, "path": str(out)}, None
    if fmt == "onnx":
        return export_onnx(run_dir, out or f"{run_id}.onnx", check_images=check_images), None
    if fmt == "state_dict":
        path = Path(out or f"{run_id}.pt")
        info = runs.weights_info(run_dir)
        path.write_bytes(runs.state_dict_bytes(run_dir))
        path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
        return {
            "format": "state_dict",
            "path": str(path),
            "info_path": str(path.with_suffix(".json")),
            "load": f"model.load_state_dict(torch.load({str(path)!r}, weights_only=True))",
            "info": info,
        }, None
    raise PlaygroundError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m core.export", description="Export a run as a script, notebook, ONNX model or plain state_dict."
    )
    p.add_argument("run_dir")
    p.add_argument("--format", default="script", choices=FORMATS)
    p.add_argument(
        "--out",
        metavar="PATH",
        help="file to write (script/notebook: stdout without it; onnx/state_dict: "
        "<run-id>.onnx / <run-id>.pt (+ .json) in the current folder)",
    )
    p.add_argument("--check-images", type=int, default=256, help="onnx: test images compared with PyTorch")
    args = p.parse_args(argv)
    if not (Path(args.run_dir) / runs.CONFIG_FILE).exists():
        raise PlaygroundError(f"{args.run_dir} is not a run folder (no {runs.CONFIG_FILE}).")
    result, text = export(args.run_dir, args.format, args.out, args.check_images)
    if text is not None:
        sys.stdout.write(text)
        return 0
    print(json.dumps(result, indent=1))
    if result.get("check", {}).get("passed") is False:
        print("error: the ONNX model does not match PyTorch within the tolerance; see check", file=sys.stderr)
        return 1
    return 0
