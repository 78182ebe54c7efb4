"""Any torchvision classification network as a backbone: the head of every family, freezing, InceptionV3 and
GoogLeNet without their auxiliary outputs, the size and normalization of the weights' transforms, and a fine-tune
from a weights file that Predict and resume rebuild. Random weights only: tests make their own weight files."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import urllib.error
import urllib.request
import warnings

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from core.data import classes
from core.data.batches import IMAGENET_MEAN, IMAGENET_STD
from core.errors import PlaygroundError
from core.insight.predict import Predictor
from core.models import backbones, presets, pretrained
from core.models.backbones import find_head, preset_input_size, pretrained_normalization
from core.models.build import build, count_parameters
from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import resume, train
from core.training.parts import load_data


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny inputs through big networks are many small ops: one thread runs them fastest, and much faster than two
    fighting over a busy 2-core machine (measured: shufflenet build + step 0.2 s vs 12 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# One network per family, at the smallest input it takes, and where its classifier is.
FAMILIES = [
    ("resnet34", 32, "fc", nn.Linear),
    ("vgg11", 32, "classifier.6", nn.Linear),
    ("alexnet", 64, "classifier.6", nn.Linear),
    ("efficientnet_b0", 32, "classifier.1", nn.Linear),
    ("mobilenet_v2", 32, "classifier.1", nn.Linear),
    ("mobilenet_v3_small", 32, "classifier.3", nn.Linear),
    ("convnext_tiny", 32, "classifier.2", nn.Linear),
    ("regnet_x_400mf", 32, "fc", nn.Linear),
    ("densenet121", 32, "classifier", nn.Linear),
    ("squeezenet1_1", 32, "classifier.1", nn.Conv2d),  # a 1x1 convolution is its classifier
    ("vit_b_32", 32, "heads.head", nn.Linear),
    ("swin_t", 32, "head", nn.Linear),
    ("maxvit_t", 224, "classifier.5", nn.Linear),  # its windows fit multiples of 224 only
    ("inception_v3", 75, "fc", nn.Linear),
    ("googlenet", 32, "fc", nn.Linear),
    ("shufflenet_v2_x0_5", 32, "fc", nn.Linear),
    ("mnasnet0_5", 32, "classifier.1", nn.Linear),
]


def test_the_picker_lists_every_torchvision_classifier():
    names = presets.torchvision_classifiers()
    assert set(names) == set(torchvision.models.list_models(module=torchvision.models))
    assert {"efficientnet_b0", "inception_v3", "vit_b_16", "mobilenet_v3_small"} <= set(names)
    assert {family for family, *_ in FAMILIES} <= set(names)
    assert "quantized_resnet18" not in names  # classification only, not the quantized or video ones
    for name in ("efficientnet_b0", "inception_v3"):
        assert presets.is_torchvision(name) and backbones.weight_choices(name) == ["IMAGENET1K_V1"]
    assert not presets.is_torchvision("cifar10_quick") and not presets.is_torchvision("efficientnet_b99")


@pytest.mark.parametrize("name, size, head, kind", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_gets_a_new_head_trains_and_freezes(name, size, head, kind):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation or init warnings from any builder
        model = build(name, num_classes=3, input_size=size)
    assert find_head(model) == head
    new_head = model.get_submodule(head)
    assert isinstance(new_head, kind) and (new_head.out_features if kind is nn.Linear else new_head.out_channels) == 3

    x = torch.randn(2, 3, size, size)
    out = model.train()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)  # a tensor in training too (no aux outputs)
    nn.functional.cross_entropy(out, torch.tensor([0, 2])).backward()
    first = next(p for p in model.parameters() if p.ndim == 4)
    for p in (new_head.weight, first):  # the step reaches the new head and the first layer
        assert p.grad is not None and p.grad.abs().sum() > 0

    backbones.freeze_backbone(model, name)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{head}.{n}" for n, _ in new_head.named_parameters()}
    assert count_parameters(model)[0] == sum(p.numel() for p in new_head.parameters())
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3)


def test_a_frozen_backbone_keeps_its_batchnorm_statistics():
    model = build("mobilenet_v3_small", num_classes=2, input_size=32, freeze=True)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model.train()
    model(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert all(torch.equal(stats[k], v) for k, v in model.state_dict().items() if k in stats)
    unfrozen = build("mobilenet_v3_small", num_classes=2, input_size=32)
    before = unfrozen.state_dict()["features.0.1.running_mean"].clone()
    unfrozen.train()(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert not torch.equal(before, unfrozen.state_dict()["features.0.1.running_mean"])


@pytest.mark.parametrize(
    "name, size, extra",
    [
        ("inception_v3", 75, {"aux_logits": True, "init_weights": True}),  # torchvision's file holds the aux head
        ("googlenet", 32, {"aux_logits": True, "init_weights": True}),
        ("squeezenet1_1", 32, {}),
        ("vit_b_32", 32, {"image_size": 32}),
    ],
)
def test_an_imagenet_shaped_weights_file_loads_and_only_the_head_is_new(tmp_path, name, size, extra):
    reference = torchvision.models.get_model(name, weights=None, **extra)  # 1000 classes, as torchvision ships it
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    model = build(name, num_classes=4, weights=path, input_size=size)
    own = model.state_dict()
    head = find_head(model)
    shared = [k for k in own if not k.startswith(head + ".")]
    assert shared and all(torch.equal(own[k], reference.state_dict()[k]) for k in shared)
    assert own[head + ".weight"].shape[0] == 4
    assert not any(k.startswith(("AuxLogits.", "aux1.", "aux2.")) for k in own)


def test_a_vit_file_for_another_image_size_says_what_does_not_fit(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(torchvision.models.vit_b_32(weights=None, image_size=64).state_dict(), path)
    with pytest.raises(PlaygroundError, match=r"do not fit.*pos_embedding"):
        build("vit_b_32", num_classes=2, weights=path, input_size=32)
    with pytest.raises(PlaygroundError, match=r"maxvit_t cannot be built for 64x64 images.*224"):
        build("maxvit_t", num_classes=2, input_size=64)


def test_size_and_normalization_come_from_the_weights_transforms(tmp_path):
    assert preset_input_size("efficientnet_b0") == 224 and preset_input_size("inception_v3") == 299
    assert preset_input_size("efficientnet_b1") == 240 and preset_input_size("swin_v2_t") == 256
    assert preset_input_size("resnet18") == 32 and preset_input_size("cifar10_quick") == 32  # presets keep theirs
    t = backbones.weights_transforms("efficientnet_b1")
    assert (t["crop_size"], t["resize_size"]) == (240, 255)
    assert pretrained_normalization("efficientnet_b0", "DEFAULT") == (IMAGENET_MEAN, IMAGENET_STD)
    assert pretrained_normalization("efficientnet_b0", None) is None  # from scratch: the data's own statistics
    assert pretrained_normalization("cifar10_quick", "x.pth") is None
    weights = tmp_path / "mine.pth"
    torch.save({"model": {}, "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}, weights)
    assert pretrained_normalization("mobilenet_v3_small", str(weights)) == ((0.5,) * 3, (0.25,) * 3)
    info = backbones.weights_summary("mobilenet_v3_small")
    assert info["params"] == 2_542_856 and info["file_name"] == "mobilenet_v3_small-047dcff4.pth" and info["top1"] > 60


def test_trainconfig_accepts_torchvision_names_and_rejects_others():
    config = TrainConfig.for_model("efficientnet_b0", data="shapes")
    config.validate()
    assert config.batch_size == presets.FINE_TUNE_RECIPE["batch_size"] and config.lr == presets.FINE_TUNE_RECIPE["lr"]
    with pytest.raises(PlaygroundError, match="efficientnet_b99.*torchvision classification model"):
        TrainConfig.for_model("efficientnet_b99", data="shapes").validate()
    with pytest.raises(PlaygroundError, match="Unknown model 'efficientnet_b99'.*efficientnet_b0"):
        build("efficientnet_b99")


def test_pretrained_normalization_and_size_reach_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_DATA_DIR", str(tmp_path / "data"))
    set_path = _two_class_set(tmp_path, 4)
    config = TrainConfig.for_model("inception_v3", data=classes.spec(set_path), weights="DEFAULT", data_dir=str(tmp_path / "data"))
    ds, norm, data_size, input_size = load_data(config, torch.device("cpu"), None)
    assert input_size == data_size == 299 and ds.train.images.shape[-1] == 299
    assert torch.allclose(norm.mean, torch.tensor(IMAGENET_MEAN)) and torch.allclose(norm.std, torch.tensor(IMAGENET_STD))


def _two_class_set(tmp_path, per_class: int):
    set_path = classes.create_set(tmp_path / "sets", "colours")
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        classes.add_class(set_path, name)
        files = []
        for i in range(per_class):
            buffer = io.BytesIO()
            Image.new("RGB", (40 + i, 36), tuple(min(255, c + 7 * i) for c in colour)).save(buffer, "PNG")
            files.append((f"{name}{i}.png", buffer.getvalue()))
        classes.add_images(set_path, name, files)
    return set_path


def test_fine_tune_from_a_weights_file_then_predict_and_resume(tmp_path, models_root):
    """The offline path: a mobilenet_v3_small state_dict file (random here, torchvision's in real life) is
    fine-tuned on two classes; config.json rebuilds it for Predict and for a resume after Stop."""
    torch.manual_seed(0)
    weights = tmp_path / "mobilenet_v3_small-random.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), weights)
    set_path = _two_class_set(tmp_path, 6)
    config = TrainConfig.for_model(
        "mobilenet_v3_small",
        data=classes.spec(set_path),
        weights=str(weights),
        freeze_backbone=True,
        image_size=32,
        epochs=2,
        batch_size=8,
        precision="fp32",
    )
    stop = threading.Event()
    result = train(config, models_root / "r", stop_event=stop, on_record=lambda r: r["kind"] == "epoch" and stop.set())
    assert result["status"] == "stopped" and result["epochs"] == 1
    saved = json.loads((models_root / "r" / "config.json").read_text())
    assert saved["model"] == "mobilenet_v3_small" and saved["classes"] == ["blue", "red"] and saved["input_size"] == 32
    assert saved["normalization"] == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert saved["params"]["trainable"] == 1024 * 2 + 2  # only the new head
    dataset = saved["dataset"]
    assert {k: dataset[k] for k in ("n_train", "n_test", "skipped", "has_test_split")} == {
        "n_train": 6,
        "n_test": 6,  # at least 3 per class test
        "skipped": 0,
        "has_test_split": False,
    }
    assert dataset["test_split_warning"].startswith("6 test images")  # and the run records what that means

    predictor = Predictor.from_run(models_root / "r")
    [answer] = predictor.predict([sorted((set_path / "red").iterdir())[0]], k=2)
    assert {t["label"] for t in answer["top"]} == {"blue", "red"}

    result = resume(models_root / "r")
    assert result["status"] == "finished" and result["epochs"] == 2
    after = runs.load_checkpoint(models_root / "r")["model"]
    backbone = "features.0.0.weight"
    assert torch.equal(after[backbone], torch.load(weights, weights_only=True)[backbone])  # frozen all along


def test_resnet18_fine_tuned_from_imagenet_weights_at_32_pixels_rebuilds_for_predict(tmp_path, models_root):
    """ImageNet weights keep ResNet-18's own 7x7 stem even at 32 pixels; Predict must rebuild that stem, not the CIFAR one."""
    weights = tmp_path / "resnet18-imagenet-shaped.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    config = TrainConfig.for_model(
        "resnet18", data="shapes:600", weights=str(weights), freeze_backbone=True, epochs=1, batch_size=100, precision="fp32"
    )
    train(config, models_root / "r")
    predictor = Predictor.from_run(models_root / "r")
    assert predictor.model.conv1.kernel_size == (7, 7)
    assert build("resnet18").conv1.kernel_size == (3, 3)  # from scratch at 32: the CIFAR stem, as before


# --------------------------------------------------------------------------- torchvision's weights files, offline


class _Served:
    """What urllib.request.urlopen returns for a file: headers and read() in chunks."""

    def __init__(self, payload: bytes):
        self.body, self.headers = io.BytesIO(payload), {"Content-Length": str(len(payload))}

    def read(self, n: int = -1) -> bytes:
        return self.body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _offline(monkeypatch, tmp_path) -> list[str]:
    """No network (the resolver fails, as on a machine without one) and an empty torch hub cache; returns the URLs asked for."""
    asked: list[str] = []

    def urlopen(url, *args, **kwargs):
        asked.append(str(url))
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def test_offline_imagenet_weights_fail_with_one_plain_line_on_the_command_line(monkeypatch, tmp_path, capsys):
    """The message names the file, the folder it goes in and where to get it, or how to do without; no socket text."""
    from core.training import cli as train_module

    asked = _offline(monkeypatch, tmp_path)
    monkeypatch.setattr(train_module.signal, "signal", lambda *args: None)  # main() sets a SIGTERM handler: not in pytest
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    url = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.url
    with pytest.raises(PlaygroundError) as caught:
        build("mobilenet_v3_small", num_classes=2, weights="DEFAULT")
    message = str(caught.value)
    assert asked == [url] and not list(checkpoints.glob("*"))  # nothing half-downloaded is left
    assert "\n" not in message and "Errno" not in message and "urlopen" not in message and "Name or service" not in message
    for part in ("mobilenet_v3_small-047dcff4.pth", url, str(checkpoints), "upload it in the studio", "--weights"):
        assert part in message, (part, message)

    code = train_module.main(
        ["--model", "mobilenet_v3_small", "--data", "shapes:600", "--weights", "DEFAULT", "--epochs", "1", "--out", str(tmp_path / "run")]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code != 0 and errors == [f"error: {message}"]


def test_weights_are_downloaded_into_the_hub_cache_and_checked(monkeypatch, tmp_path):
    """A download with progress lands where torchvision looks; a damaged one (hash in the name not matching) does not."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, buffer)
    payload = buffer.getvalue()
    good = type("Weights", (), {"url": f"https://example.invalid/tiny-{hashlib.sha256(payload).hexdigest()[:8]}.pth"})()
    damaged = type("Weights", (), {"url": "https://example.invalid/tiny-00000000.pth"})()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _Served(payload))
    seen = []
    path = pretrained.download("tiny", good, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / good.url.rsplit("/", 1)[1] and path.read_bytes() == payload
    assert seen == [(len(payload), len(payload))] and pretrained.is_cached(good)
    assert torch.equal(pretrained.load_state_dict("tiny", good)["w"], torch.arange(3.0))
    with pytest.raises(PlaygroundError, match="arrived damaged"):
        pretrained.download("tiny", damaged)
    assert not pretrained.is_cached(damaged) and sorted(p.name for p in path.parent.iterdir()) == [path.name]
