"""Exports: the plain state_dict, the standalone script and notebook, ONNX, and `python -m core.export`.

The script and the notebook are checked the way traingenerator checks its templates: render every
option combination (preset or layer spec x optimizer x schedule x augmentation) and run it for a
couple of steps; one cifar10_quick run is also retrained by its exported script in a clean folder
and must land near the studio's own accuracy.
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from core.data.batches import normalize_batch
from core.data.datasets import SHAPES_CLASSES, load_dataset, shapes_dataset
from core.errors import PlaygroundError
from core.export import formats as export
from core.insight.predict import Predictor
from core.models.build import build
from core.models.presets import PRESETS
from core.serving import runs
from core.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
from core.training.loop import train

ROOT = Path(__file__).resolve().parent.parent

# A layer spec that uses every kind of layer a spec can hold.
CUSTOM_SPEC = [
    {"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
    {"type": "BatchNorm2d"},
    {"type": "GELU"},
    {"type": "MaxPool2d"},
    {"type": "Dropout", "p": 0.1},
    {"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "bias": False},
    {"type": "ReLU"},
    {"type": "AvgPool2d"},
    {"type": "AdaptiveAvgPool2d", "output_size": 2},
    {"type": "Flatten"},
    {"type": "Linear", "out_features": 16},
    {"type": "Linear"},
]
# Small inputs keep vgg16/alexnet steps to a second or two (alexnet's stem needs at least 63 pixels).
INPUT_SIZES = {"alexnet": 64}


def recipe_config(model: str, *, n_train: int = 16, n_test: int = 8, **overrides) -> dict:
    """A config.json as the trainer writes it, for a tiny shapes run (rendering needs no training)."""
    input_size = INPUT_SIZES.get(model, 32)
    config = TrainConfig.for_model(
        model, data="shapes", batch_size=4, image_size=input_size, layers=CUSTOM_SPEC if model == "custom" else None, **overrides
    ).to_dict()
    config.update(
        run_id=f"test-{model}",
        classes=list(SHAPES_CLASSES),
        input_size=input_size,
        data_size=32,
        normalization={"mean": [0.49, 0.5, 0.5], "std": [0.28, 0.28, 0.29]},
        dataset={"n_train": n_train, "n_test": n_test},
    )
    return config


def _statements(nodes):
    for node in nodes:  # statements only: imports are statements, and expressions are most of the tree
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _statements(getattr(node, field, None) or [])


def assert_standalone(source: str, name: str = "export.py") -> None:
    """Compiles, and imports nothing but the standard library, torch, torchvision, numpy and PIL."""
    tree = ast.parse(source, name)
    compile(tree, name, "exec")
    imported = set()
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    outside = imported - set(sys.stdlib_module_names) - set(export.SCRIPT_PACKAGES)
    assert not outside, f"{name} imports {outside}"


def run_script_in_process(source: str, tmp_path: Path, *args: str) -> tuple[dict, str]:
    """Exec the script as a module (its main() is not called on import), then call main(args)."""
    path = tmp_path / "exported.py"
    path.write_text(source)
    namespace = runpy.run_path(str(path))
    out = io.StringIO()
    saved = sys.stdout
    sys.stdout = out
    try:
        namespace["main"](list(args))
    finally:
        sys.stdout = saved
    return namespace, out.getvalue()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def last_test_acc(output: str) -> float:
    found = re.findall(r"test acc ([0-9.]+)", output)
    assert found, output[-2000:]
    return float(found[-1])


# --------------------------------------------------------------------------- runs to export


def write_image_folder(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Shapes saved as PNGs in train/ and test/ class folders."""
    from PIL import Image

    shapes = shapes_dataset(n_train, n_test, seed=seed)
    for split, part in (("train", shapes.train), ("test", shapes.test)):
        for i, (image, label) in enumerate(zip(part.images, part.labels.tolist())):
            target = root / split / SHAPES_CLASSES[label] / f"{i}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(target)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny real runs on a small image folder (100 test images, so evaluating resnet18 stays cheap), trained
    on first use: model name -> run folder."""
    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("export-runs")
    folder = write_image_folder(root / "images", 120, 100)

    def get(model: str) -> Path:
        if model not in made:
            config = TrainConfig.for_model(
                model,
                data=f"imagefolder:{folder}",
                epochs=1,
                batch_size=64,
                precision="fp32",
                layers=CUSTOM_SPEC if model == "custom" else None,
                data_dir=str(root / "data"),
            )
            train(config, root / model)
            made[model] = root / model
        return made[model]

    return get


# --------------------------------------------------------------------------- state_dict (the tutorial's way 2)


def test_state_dict_download_is_exactly_model_state_dict(trained, tmp_path):
    run_dir = trained("cifar10_quick")
    path = tmp_path / "weights.pt"
    path.write_bytes(runs.state_dict_bytes(run_dir))
    state = torch.load(path, weights_only=True)
    model = build("cifar10_quick")
    assert list(state) == list(model.state_dict())
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in state.values())
    model.load_state_dict(state)  # the tutorial's line, strict
    info = runs.weights_info(run_dir)
    assert info["classes"] == sorted(SHAPES_CLASSES) and info["model"] == "cifar10_quick"
    assert set(info["normalization"]) == {"mean", "std"} and info["input_size"] == 32
    json.dumps(info)  # plain JSON


def test_speedrun_state_dict_is_contiguous_and_loads(trained):
    state = torch.load(io.BytesIO(runs.state_dict_bytes(trained("speedrun"))), weights_only=True)
    assert all(t.is_contiguous() for t in state.values())  # the run trains channels_last
    build("speedrun").load_state_dict(state)


def test_predictor_takes_the_new_download_with_its_json_and_old_exports(trained, tmp_path):
    run_dir = trained("cifar10_quick")
    weights = tmp_path / "mine.pt"
    weights.write_bytes(runs.state_dict_bytes(run_dir))
    info = runs.read_weights_info(json.dumps(runs.weights_info(run_dir)).encode(), "mine.json")
    from_run = Predictor.from_run(run_dir)
    new = Predictor.from_weights(weights, info["model"], info=info)
    assert new.classes == from_run.classes and new.input_size == from_run.input_size
    legacy = tmp_path / "old-export.pt"  # the format this button gave before: weights + metadata in one dict
    ckpt = runs.load_checkpoint(run_dir)
    torch.save({k: ckpt[k] for k in ("model", "classes", "normalization", "config", "image_size")}, legacy)
    old = Predictor.from_weights(legacy, "cifar10_quick")
    images = shapes_dataset(10, 50, seed=0).test.images
    expected = from_run.probabilities(images)
    assert torch.allclose(new.probabilities(images), expected) and torch.allclose(old.probabilities(images), expected)
    assert old.classes == from_run.classes


@pytest.mark.parametrize(
    "text, problem",
    [
        (b"[1, 2]", "not a JSON object"),
        (b'{"classes": "cat"}', "list of names"),
        (b'{"normalization": {"mean": [0.5]}}', "normalization"),
        (b"{nope", "not a readable"),
    ],
)
def test_a_bad_weights_json_is_named_and_explained(text, problem):
    with pytest.raises(PlaygroundError, match=problem) as err:
        runs.read_weights_info(text, "my-info.json")
    assert "my-info.json" in str(err.value)


def test_whole_model_pickle_is_refused_on_purpose_with_how_to_convert(tmp_path):
    path = tmp_path / "my model.pt"
    path.write_bytes(runs.whole_model_bytes(build("mycnn")))
    with pytest.raises(PlaygroundError) as err:
        Predictor.from_weights(path, "mycnn")
    message = str(err.value)
    assert "my model.pt" in message and "refused on purpose" in message and "runs whatever code" in message
    assert "weights_only=False" in message and "torch.save(model.state_dict()" in message


# --------------------------------------------------------------------------- the script


def option_matrix():
    models = [*PRESETS, "custom"]
    return list(itertools.product(models, OPTIMIZERS, SCHEDULES, (True, False)))


def test_every_option_combination_renders_a_standalone_script():
    for model, optimizer, schedule, augment in option_matrix():
        source = export.render_script(recipe_config(model, optimizer=optimizer, schedule=schedule, augment=augment))
        assert_standalone(source, f"{model}-{optimizer}-{schedule}-{augment}.py")
    for model in ("resnet18", "vgg16", "alexnet"):  # pretrained and frozen: rendered (running them downloads weights)
        source = export.render_script(recipe_config(model, weights="DEFAULT", freeze_backbone=True))
        assert_standalone(source, model)
        assert 'weights="DEFAULT"' in source and "requires_grad" in source


# Every combination renders (above); each model's script runs one training step and one test batch with every value
# of each option at least once (4 combinations per model: the options are independent template blocks, so this covers
# each block with each model; the whole product would take minutes of vgg16/alexnet steps for no new code path).
RUN_MATRIX = [
    pytest.param(model, optimizer, schedule, augment, id=f"{model}-{optimizer}-{schedule}-{augment}")
    for model in [*PRESETS, "custom"]
    for optimizer, schedule, augment in zip(OPTIMIZERS * 2, SCHEDULES, (True, False, True, False))
]


@pytest.mark.parametrize("model, optimizer, schedule, augment", RUN_MATRIX)
def test_exported_script_takes_a_training_step(model, optimizer, schedule, augment, tmp_path):
    source = export.render_script(recipe_config(model, optimizer=optimizer, schedule=schedule, augment=augment))
    out = tmp_path / "w.pt"
    namespace, output = run_script_in_process(source, tmp_path, "--epochs", "1", "--steps", "1", "--out", str(out))
    loss = float(re.search(r"epoch 1: train loss (\S+)", output).group(1))
    assert np.isfinite(loss), output[-2000:]
    namespace["build_model"]().load_state_dict(torch.load(out, weights_only=True))  # saved the tutorial's way, loads back
    assert json.loads(out.with_suffix(".json").read_text())["classes"] == list(SHAPES_CLASSES)


@pytest.mark.parametrize("model", [*PRESETS, "custom"])
def test_script_builds_the_studios_model_with_the_same_initial_weights(model, tmp_path):
    """Seeded first and built in the same order, the script's model starts exactly where the studio's does,
    so a state_dict from the studio loads into the script's build_model() and the other way round."""
    config = recipe_config(model)
    (tmp_path / "s.py").write_text(export.render_script(config))
    namespace = runpy.run_path(str(tmp_path / "s.py"))
    torch.manual_seed(config["seed"])
    ours = build(CUSTOM_SPEC if model == "custom" else model, input_size=config["input_size"]).state_dict()
    torch.manual_seed(config["seed"])
    theirs = namespace["build_model"]().state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_script_starts_from_a_local_weights_file(tmp_path):
    """A run that began from a .pth file: the script loads it, keeping the new head."""
    import torchvision

    source_weights = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), source_weights)
    config = recipe_config("resnet18", weights=str(source_weights))
    source = export.render_script(config)
    namespace, output = run_script_in_process(source, tmp_path, "--steps", "1", "--epochs", "1", "--out", str(tmp_path / "w.pt"))
    assert "epoch 1" in output
    model = namespace["build_model"]()
    assert torch.equal(model.layer1[0].conv1.weight, torch.load(source_weights, weights_only=True)["layer1.0.conv1.weight"])
    assert model.fc.out_features == len(SHAPES_CLASSES)


def test_script_regenerates_the_studios_shapes_exactly(tmp_path):
    (tmp_path / "s.py").write_text(export.render_script(recipe_config("lenet5")))
    namespace = runpy.run_path(str(tmp_path / "s.py"))
    studio = shapes_dataset(2050, 40, seed=3)  # more than one 2000-image chunk
    train_split = namespace["shapes_split"](2050, 3, stream=0)
    test_split = namespace["shapes_split"](40, 3, stream=1)
    assert torch.equal(train_split.tensors[0], studio.train.images) and torch.equal(train_split.tensors[1], studio.train.labels)
    assert torch.equal(test_split.tensors[0], studio.test.images) and torch.equal(test_split.tensors[1], studio.test.labels)


def test_script_trains_on_a_folder_of_images(tmp_path):
    folder = write_image_folder(tmp_path / "folder", 40, 20, seed=1)
    source = export.render_script(recipe_config("speedrun"))
    _, output = run_script_in_process(
        source, tmp_path, "--data", str(folder), "--steps", "2", "--epochs", "1", "--out", str(tmp_path / "w.pt")
    )
    assert "40 training images, 20 test images, 10 classes" in output


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two 36,000-image epochs (studio + script): past 900 s on a busy 2-core machine
def test_exported_script_trains_like_the_studio_in_a_clean_folder(tmp_path):
    """The issue's fidelity check: same data and seed, 1 epoch, within 5 accuracy points.

    36,000 images make the epoch long enough to leave the steep start of learning, where one epoch's result
    swings by several points with the batch order alone (12,000 images: 52-59% across seeds); here the
    studio gave 86.2% and the script 86.6% (85.7% with another batch order).
    """
    run_dir = tmp_path / "run"
    studio = train(TrainConfig.for_model("cifar10_quick", data="shapes:36000", epochs=1, seed=0, precision="fp32"), run_dir)
    clean = tmp_path / "clean"
    clean.mkdir()
    script = clean / export.script_filename(runs.read_config(run_dir))
    script.write_text(export.export_script(run_dir))
    assert_standalone(script.read_text())
    # -I: no PYTHONPATH, no user site, not even the script's folder on sys.path: core/studio cannot be imported.
    proc = subprocess.run(
        [sys.executable, "-I", script.name, "--epochs", "1"],
        check=False,
        cwd=clean,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    script_acc = last_test_acc(proc.stdout)
    print(f"\nfidelity: studio 1-epoch test accuracy {studio['val_acc']:.4f}, exported script {script_acc:.4f}")
    assert abs(script_acc - studio["val_acc"]) <= 0.05
    assert (clean / "model.pt").exists() and json.loads((clean / "model.json").read_text())["classes"] == list(SHAPES_CLASSES)


# --------------------------------------------------------------------------- the notebook


def test_notebook_is_valid_and_in_the_tutorials_order():
    notebook = nbformat.reads(export.render_notebook(recipe_config("speedrun")), as_version=4)
    nbformat.validate(notebook)
    headings = [c.source.splitlines()[0] for c in notebook.cells if c.cell_type == "markdown"]
    steps = [h for h in headings if re.match(r"## \d\.", h)]
    assert [s.split(". ", 1)[1].split(" ")[0] for s in steps] == [
        "Data",
        "DataLoader",
        "Model",
        "Loss",
        "Optimizer",
        "Train",
        "Test",
        "Save",
    ]
    kinds = [c.cell_type for c in notebook.cells]
    assert all(kinds[i] == "markdown" and kinds[i + 1] == "code" for i in range(2, len(kinds), 2))


@pytest.mark.parametrize("model", ["cifar10_quick", "custom", "resnet18"])
def test_notebook_cells_show_no_stray_values(model):
    """A notebook displays the value of a cell's last line: only print() may end a cell (torch.manual_seed
    last would show <torch._C.Generator object at 0x...> under the settings)."""
    notebook = nbformat.reads(export.render_notebook(recipe_config(model)), as_version=4)
    for cell in (c for c in notebook.cells if c.cell_type == "code"):
        last = ast.parse(cell.source).body[-1]
        shown = isinstance(last, ast.Expr) and not (isinstance(last.value, ast.Call) and ast.unparse(last.value.func) == "print")
        assert not shown, f"a cell ends with {ast.unparse(last)!r}, so the notebook prints its value"


def test_notebook_code_cells_run_in_a_clean_folder(tmp_path):
    notebook = nbformat.reads(export.render_notebook(recipe_config("cifar10_quick", n_train=64, n_test=16)), as_version=4)
    code = "\n\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert_standalone(code)
    code = code.replace("epochs = EPOCHS", "epochs = 1").replace("max_steps = None", "max_steps = 3")
    (tmp_path / "notebook.py").write_text(code)
    proc = subprocess.run(
        [sys.executable, "-I", "notebook.py"], check=False, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 0 <= last_test_acc(proc.stdout) <= 1 and (tmp_path / "model.pt").exists()


# --------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("model", ["cifar10_quick", "speedrun", "resnet18", "custom"])
def test_onnx_export_matches_pytorch_on_the_runs_test_images(model, trained, tmp_path):
    import onnx
    import onnxruntime

    run_dir = trained(model)
    path = tmp_path / "model.onnx"
    result = export.export_onnx(run_dir, path, check_images=100)
    assert result["check"]["passed"] and result["check"]["on"] == "the run's test images"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # a named, dynamic batch
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["classes"]) == sorted(SHAPES_CLASSES) and "mean" in json.loads(meta["normalization"])
    # Checked here again, independently of the exporter's own check, on every test image of the run.
    predictor = Predictor.from_run(run_dir)
    config = runs.read_config(run_dir)
    test = load_dataset(config["data"], image_size=config["data_size"], data_dir=config["data_dir"]).test
    x = normalize_batch(test.images, predictor.mean, predictor.std, predictor.input_size, channels_last=False)
    with torch.no_grad():
        expected = predictor.model(x).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"image": x[i:j].numpy()})[0] for i, j in ((0, 1), (1, 8), (8, len(x)))])
    assert len(got) == len(test) == 100
    assert np.abs(got - expected).max() <= 1e-3
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_onnx_tooling_is_not_imported_at_start_up():
    code = (
        "import sys, core.train, core.predict, core.export, studio.live, studio.export_view; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxscript', 'onnxruntime', 'jinja2', "
        "'nbformat') or m == 'torch.onnx'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------- command line


def test_cli_script_to_stdout_and_every_format_to_files(trained, tmp_path, capsys):
    run_dir = trained("lenet5")
    assert export.main([str(run_dir)]) == 0
    script = capsys.readouterr().out
    assert script.startswith('"""') and "def build_model" in script
    compile(script, "stdout.py", "exec")

    assert export.main([str(run_dir), "--format", "notebook", "--out", str(tmp_path / "nb.ipynb")]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "nb.ipynb")
    nbformat.validate(nbformat.read(tmp_path / "nb.ipynb", as_version=4))

    assert export.main([str(run_dir), "--format", "state_dict", "--out", str(tmp_path / "w.pt")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["info_path"] == str(tmp_path / "w.json") and result["info"]["classes"] == sorted(SHAPES_CLASSES)
    build("lenet5").load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))

    assert export.main([str(run_dir), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--check-images", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["check"]["passed"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert export.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a run folder" in err and err.count("\n") == 1
    (tmp_path / "config.json").write_text(json.dumps({"model": "cifar10_quick", "data": "shapes"}))
    assert export.main([str(tmp_path)]) == 2
    assert "has not started training" in capsys.readouterr().err
