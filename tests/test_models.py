"""Presets, layer specs, torchvision heads, freezing, and weight files (trusted and hostile)."""

from __future__ import annotations

import pickle
import urllib.error
import urllib.request
import warnings

import pytest
import torch
import torchvision
from conftest import HostilePayload
from safetensors.torch import save_file

from core.errors import PlaygroundError
from core.models.build import build, count_parameters, module_expr
from core.models.layers import build_from_spec, spec_of
from core.models.presets import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_trains_one_step(name):
    size = 64 if name in ("vgg16", "alexnet") else 32  # their adaptive pooling makes 64 enough
    model = build(name, num_classes=7, input_size=size)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_cifar10_quick_is_the_tutorial_model():
    model = build("cifar10_quick")
    assert count_parameters(model) == (145_578, 145_578)
    assert [type(m).__name__ for m in model] == [
        "Conv2d",
        "MaxPool2d",
        "Conv2d",
        "MaxPool2d",
        "Conv2d",
        "MaxPool2d",
        "Flatten",
        "Linear",
        "Linear",
    ]
    assert model[0].padding == (2, 2)  # (32 + 2*2 - 5) / 1 + 1 = 32 keeps the size


def test_vgg16_with_1000_classes_prints_exactly_torchvision():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no `pretrained=` deprecation warning anywhere
        assert str(build("vgg16", num_classes=1000)) == str(torchvision.models.vgg16(weights=None))


def test_heads_are_replaced_and_backbone_frozen():
    model = build("alexnet", num_classes=10, freeze=True)
    assert model.classifier[6].out_features == 10
    trainable, total = count_parameters(model)
    assert trainable == 4096 * 10 + 10 and total > 50_000_000
    resnet = build("resnet18", num_classes=5, freeze=True)
    assert resnet.fc.out_features == 5
    assert {n for n, p in resnet.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}


def test_resnet18_gets_a_cifar_stem():
    model = build("resnet18")
    assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, torch.nn.Identity)


def test_mycnn_linear_is_sized_from_the_input():
    assert build("mycnn", input_size=224).fc.in_features == 16 * 222 * 222  # the lesson's hard-coded number
    assert build("mycnn", input_size=32).fc.in_features == 16 * 30 * 30


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_imagenet_weights_load_then_head_is_replaced(tmp_path, suffix):
    """The lesson loads alexnet-owt-7be5be79.pth from disk: a 1000-class state_dict."""
    reference = torchvision.models.alexnet(weights=None)
    path = tmp_path / f"alexnet-owt{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        save_file(reference.state_dict(), str(path))
    model = build("alexnet", num_classes=10, weights=path, freeze=True)
    assert torch.equal(model.features[0].weight, reference.features[0].weight)
    assert model.classifier[6].out_features == 10


def test_weights_that_do_not_fit_list_the_mismatches(tmp_path):
    path = tmp_path / "quick.pt"
    torch.save(build("cifar10_quick", num_classes=5).state_dict(), path)
    with pytest.raises(PlaygroundError, match=r"do not fit.*shape mismatch.*8\.weight") as err:
        build("cifar10_quick", num_classes=10, weights=path)
    assert "\n" not in str(err.value)
    with pytest.raises(PlaygroundError, match="missing key"):
        build("lenet5", weights=path)


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": HostilePayload(str(marker))}, f)
    torch.save({"weight": HostilePayload(str(marker))}, tmp_path / "evil2.pt")
    assert not marker.exists()  # pickling only records the call; loading would make it
    for bad in (path, tmp_path / "evil2.pt"):
        with pytest.raises(PlaygroundError, match="refused for safety|not a readable"):
            build("cifar10_quick", weights=bad)
    assert not marker.exists()


def test_offline_torchvision_download_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(PlaygroundError, match=r"alexnet's ImageNet weights \(alexnet-owt-7be5be79\.pth\) are not on this computer"):
        build("alexnet", weights="DEFAULT")


SPEC = [
    {"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
    {"type": "BatchNorm2d"},
    {"type": "ReLU"},
    {"type": "MaxPool2d"},
    {"type": "Dropout", "p": 0.1},
    {"type": "Flatten"},
    {"type": "Linear", "out_features": 32},
    {"type": "GELU"},
    {"type": "Linear"},
]


def test_spec_infers_input_sizes():
    model = build(SPEC, num_classes=4)
    assert model[0].in_channels == 3 and model[1].num_features == 16
    assert model[6].in_features == 16 * 16 * 16 and model[8].out_features == 4
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert build(spec_of(model), num_classes=4)[6].in_features == 4096  # specs round-trip


@pytest.mark.parametrize(
    "spec, message",
    [
        ([{"type": "Linear", "out_features": 10}], r"Layer 1 \(Linear\): needs a flat input but gets 3 x 32 x 32; add a Flatten"),
        (
            [
                {"type": "Conv2d", "out_channels": 8, "kernel_size": 7},
                {"type": "MaxPool2d", "kernel_size": 8},
                {"type": "MaxPool2d", "kernel_size": 8},
                {"type": "Flatten"},
                {"type": "Linear"},
            ],
            r"Layer 3 \(MaxPool2d\) cannot take input 8 x 3 x 3",
        ),
        ([{"type": "Conv2d", "kernal_size": 3}], r"Layer 1 \(Conv2d\): unexpected option kernal_size"),
        ([{"type": "Conv2d", "kernel_size": 3}], r"Layer 1 \(Conv2d\).*needs out_channels"),
        ([{"type": "Flatten"}, {"type": "Conv2d", "out_channels": 3}], r"Layer 2 \(Conv2d\): needs an image-shaped input"),
        ([{"type": "Flatten"}, {"type": "Linear", "out_features": 7}], r"gives 7 outputs but there are 10 classes"),
        ([{"type": "Conv2d", "out_channels": 4}], r"ends with shape 4 x 30 x 30"),
        ([{"type": "Transformer"}], r"unknown layer type"),
        ([], r"non-empty list"),
        ([{"type": "Dropout", "p": 1.5}, {"type": "Flatten"}, {"type": "Linear"}], r"Layer 1 \(Dropout\).*p must be"),
    ],
)
def test_spec_errors_name_the_layer_and_shapes(spec, message):
    with pytest.raises(PlaygroundError, match=message) as err:
        build_from_spec(spec, num_classes=10, input_shape=(3, 32, 32))
    assert "\n" not in str(err.value)


def test_unknown_model_lists_the_choices():
    with pytest.raises(PlaygroundError, match="cifar10_quick"):
        build("resnet1000")


def test_module_expr_is_the_code_that_reaches_the_layer():
    model = build("resnet18", num_classes=10)
    for path in ("fc", "layer1.0.conv1", "layer4.1.bn2"):
        assert eval(module_expr(path), {"model": model}) is model.get_submodule(path)
    seq = build("cifar10_quick", num_classes=10)
    assert module_expr("0") == "model[0]" and eval("model[0]", {"model": seq}) is seq.get_submodule("0")
