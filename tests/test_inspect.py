"""core.inspect: layer table, conv arithmetic, freezing, code export."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from core.errors import PlaygroundError
from core.models.build import count_parameters
from core.models.inspect import (
    LAYER_COLUMNS,
    conv_output_size,
    explain_conv_output,
    format_count,
    freeze_map,
    padding_for_size,
    summary,
    to_code,
)


def quick_cifar() -> nn.Sequential:
    """The tutorial's CIFAR-10 "quick" model: three 5x5 convs with 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 5, padding=2),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1024, 64),
        nn.Linear(64, 10),
    )


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None)


@pytest.fixture
def vgg_unfrozen(vgg16: nn.Module) -> nn.Module:
    vgg16.requires_grad_(True)
    yield vgg16
    vgg16.requires_grad_(True)


# ---------------------------------------------------------------- layer table


def test_quick_model_table() -> None:
    table = summary(quick_cifar(), (3, 32, 32))
    df = table.layers
    assert list(df.columns) == LAYER_COLUMNS
    assert table.total_params == 145_578 == df["params"].sum()
    assert table.trainable_params == 145_578
    assert list(df["name"]) == [str(i) for i in range(9)]
    assert list(df["type"]) == [
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
    assert list(df["output_shape"]) == [
        "32 x 32 x 32",
        "32 x 16 x 16",
        "32 x 16 x 16",
        "32 x 8 x 8",
        "64 x 8 x 8",
        "64 x 4 x 4",
        "1024",
        "64",
        "10",
    ]
    assert list(df["params"]) == [2432, 0, 25632, 0, 51264, 0, 0, 65600, 650]
    assert df["macs"][0] == 3 * 32 * 5 * 5 * 32 * 32 == 2_457_600
    assert df["macs"][7] == 1024 * 64
    assert table.total_macs == df["macs"].sum()
    assert table.input_shape == (3, 32, 32)
    assert table.output_shape == (10,)
    totals = table.totals_row()
    assert totals["params"] == 145_578 and totals["output_shape"] == "10"


def test_frozen_layer_shows_fewer_trainable() -> None:
    model = quick_cifar()
    model[0].requires_grad_(False)
    model[7].bias.requires_grad_(False)
    table = summary(model)
    rows = table.layers.set_index("name")
    assert rows.loc["0", "trainable"] == 0 < rows.loc["0", "params"]
    assert rows.loc["7", "trainable"] == 1024 * 64 < rows.loc["7", "params"]
    assert table.trainable_params == 145_578 - 2432 - 64
    assert count_parameters(model) == (145_578 - 2432 - 64, 145_578)


def test_summary_puts_model_back_as_it_was() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(), nn.Flatten())
    model.train()
    model[1].eval()  # a deliberate mix that model.train(flag) would flatten
    summary(model)
    assert [m.training for m in model.modules()] == [True, True, False, True, True]
    assert torch.is_grad_enabled()
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_summary_returns_model_to_its_device() -> None:
    model = quick_cifar().cuda()
    assert summary(model).total_params == 145_578
    assert all(p.is_cuda for p in model.parameters())


def test_depth_collapses_containers_and_lists_each_layer_once() -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Flatten(), nn.Linear(8 * 32 * 32, 10)),
    )
    deep = summary(model, depth=3).layers
    assert list(deep["name"]) == ["0.0", "0.1", "1.0", "1.1"]
    shallow = summary(model, depth=1).layers
    assert list(shallow["name"]) == ["0", "1"]
    assert list(shallow["type"]) == ["Sequential", "Sequential"]
    assert list(shallow["output_shape"]) == ["8 x 32 x 32", "10"]
    assert list(shallow["params"]) == [8 * 27 + 8, 8 * 1024 * 10 + 10]
    assert shallow["macs"].sum() == deep["macs"].sum()


def test_container_with_own_parameter_is_listed() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * self.scale

    table = summary(Scaled())
    assert table.layers["params"].sum() == table.total_params == 4 * 27 + 4 + 1


def test_summary_of_vgg16_at_224(vgg_unfrozen: nn.Module) -> None:
    table = summary(vgg_unfrozen, (3, 224, 224))
    assert table.total_params == 138_357_544 == table.layers["params"].sum()
    assert table.output_shape == (1000,)
    assert len(table.layers) == 39  # 31 features + avgpool + 7 classifier layers
    rows = table.layers.set_index("name")
    assert rows.loc["features.30", "output_shape"] == "512 x 7 x 7"
    assert rows.loc["classifier.0", "params"] == 25088 * 4096 + 4096
    assert 15.4e9 < table.total_macs < 15.6e9  # the well-known 15.5 GMACs


# ------------------------------------------------------------- failing forward


def test_forward_failure_names_the_layer() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))
    with pytest.raises(PlaygroundError, match=r"Layer 1 \(Linear\) failed on input 3072: .*in_features to 3072"):
        summary(model, (3, 32, 32))


def test_linear_without_flatten_suggests_flatten() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Linear(100, 10))
    with pytest.raises(PlaygroundError, match=r"Layer 1 \(Linear\).*4 x 32 x 32.*nn\.Flatten\(\).*4096"):
        summary(model)


def test_wrong_channels_suggests_in_channels() -> None:
    with pytest.raises(PlaygroundError, match=r"Layer 0 \(Conv2d\).*set in_channels to 3"):
        summary(nn.Sequential(nn.Conv2d(1, 8, 3)))


def test_too_small_input_names_deep_layer(vgg_unfrozen: nn.Module) -> None:
    with pytest.raises(PlaygroundError) as info:
        summary(vgg_unfrozen, (3, 16, 16))
    message = str(info.value)
    assert "Layer features.30 (MaxPool2d) failed on input 512 x 1 x 1" in message
    assert "larger input size" in message and "\n" not in message
    assert not vgg_unfrozen.training or all(m.training for m in vgg_unfrozen.modules())


@pytest.mark.parametrize("shape", [(3, 0, 32), (3, -1, 32), "3x32x32", (3, 32.5, 32), ()])
def test_bad_input_shape(shape: object) -> None:
    with pytest.raises(PlaygroundError, match="Input shape"):
        summary(quick_cifar(), shape)  # type: ignore[arg-type]


# ------------------------------------------------------------ conv arithmetic


@pytest.mark.parametrize(
    "size, kernel, stride, padding, dilation, expected",
    [
        (32, 5, 1, 2, 1, 32),  # the tutorial's 'same' 5x5 conv
        (32, 3, 1, 1, 1, 32),
        (32, 5, 1, 0, 1, 28),
        (32, 3, 2, 1, 1, 16),  # stride 2 halves
        (7, 3, 2, 0, 1, 3),  # floor: (7 - 3) / 2 + 1
        (32, 3, 1, 0, 2, 28),  # dilation 2: a 3x3 kernel spans 5 pixels
        (32, 3, 1, 2, 2, 32),
        (5, 5, 1, 0, 1, 1),
        (32, 2, 2, 0, 1, 16),  # MaxPool2d(2)
    ],
)
def test_conv_output_size_matches_conv2d(size: int, kernel: int, stride: int, padding: int, dilation: int, expected: int) -> None:
    assert conv_output_size(size, kernel, stride, padding, dilation) == expected
    conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    with torch.no_grad():
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == expected


@pytest.mark.parametrize(
    "size, kernel, stride, dilation, target, expected",
    [
        (32, 5, 1, 1, None, 2),  # the tutorial's derivation
        (32, 3, 1, 1, None, 1),
        (32, 3, 2, 1, None, 1),  # stride 2 -> ceil(32/2) = 16
        (31, 3, 2, 1, None, 1),  # ceil(31/2) = 16
        (32, 7, 2, 1, 16, 3),
        (32, 3, 1, 2, None, 2),  # dilation 2: span 5 needs 2 each side
        (32, 5, 1, 1, 30, 1),
        (32, 4, 1, 1, None, None),  # even kernel would need half a pixel
        (32, 3, 1, 1, 10, None),  # padding cannot shrink
    ],
)
def test_padding_for_size(size: int, kernel: int, stride: int, dilation: int, target: int | None, expected: int | None) -> None:
    assert padding_for_size(size, kernel, stride, dilation, target) == expected


def test_padding_for_size_is_smallest_and_none_is_honest() -> None:
    for size in (5, 8, 13):
        for kernel in (1, 2, 3, 4, 5):
            for stride in (1, 2, 3):
                for target in range(1, size + 3):
                    got = padding_for_size(size, kernel, stride, target=target)
                    works = [
                        p
                        for p in range(3 * size + kernel)
                        if (size + 2 * p - kernel) >= 0 and conv_output_size(size, kernel, stride, p) == target
                    ]
                    assert got == (works[0] if works else None), (size, kernel, stride, target)


def test_explain_conv_output() -> None:
    assert explain_conv_output(32, 5, padding=2) == "(32 + 2*2 - 1*(5-1) - 1) / 1 + 1 = 32"
    assert explain_conv_output(32, 3, stride=2, padding=1) == ("floor((32 + 2*1 - 1*(3-1) - 1) / 2) + 1 = floor(31/2) + 1 = 16")


@pytest.mark.parametrize(
    "args",
    [(3, 5), (1, 3, 1, 0, 1), (32, 3, 0), (32, 3, 1, -1), (32, 0), (32, 3, 1, 0, 0), (32.0, 3), (True, 3)],
)
def test_conv_output_size_errors(args: tuple) -> None:
    with pytest.raises(PlaygroundError):
        conv_output_size(*args)


def test_too_small_message_says_what_to_do() -> None:
    with pytest.raises(PlaygroundError, match="larger input size"):
        conv_output_size(3, 5)


# ------------------------------------------------------ parameters and freezing


def test_vgg16_frozen_features(vgg_unfrozen: nn.Module) -> None:
    vgg = vgg_unfrozen
    assert count_parameters(vgg) == (138_357_544, 138_357_544)
    vgg.features.requires_grad_(False)
    classifier = sum(p.numel() for p in vgg.classifier.parameters())
    assert count_parameters(vgg) == (classifier, 138_357_544)

    fmap = freeze_map(vgg).set_index("name")
    assert len(fmap) == 31 + 1 + 7
    assert fmap.loc["features.0", "status"] == "frozen"
    assert fmap.loc["features.1", "status"] == "no parameters"
    assert fmap.loc["avgpool", "status"] == "no parameters"
    assert fmap.loc["classifier.0", "status"] == "trains"
    assert fmap["trainable"].sum() == classifier
    assert fmap["params"].sum() == 138_357_544

    vgg.classifier[6].bias.requires_grad_(False)
    fmap = freeze_map(vgg).set_index("name")
    assert fmap.loc["classifier.6", "status"] == "partly frozen"
    assert fmap.loc["classifier.6", "trainable"] == 4096 * 1000


def test_freeze_map_of_sequential_is_one_row_per_layer() -> None:
    fmap = freeze_map(quick_cifar())
    assert list(fmap["name"]) == [str(i) for i in range(9)]
    assert list(fmap["status"][:2]) == ["trains", "no parameters"]


def test_format_count() -> None:
    assert format_count(145_578) == "145.6 K"
    assert format_count(138_357_544) == "138.4 M"
    assert format_count(999) == "999"
    assert format_count(999_960) == "1.0 M"
    assert format_count(7_000_000_000) == "7.0 B"


# ------------------------------------------------------------------ code export


def _exec_net(code: str, class_name: str = "Net") -> nn.Module:
    namespace: dict = {}
    exec(compile(code, "<generated>", "exec"), namespace)  # noqa: S102
    return namespace[class_name]()


def _same_outputs(a: nn.Module, b: nn.Module, shape: tuple[int, ...] = (3, 32, 32)) -> bool:
    a.eval()
    b.eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        return torch.allclose(a(x), b(x))


def test_to_code_round_trip() -> None:
    torch.manual_seed(0)
    model = quick_cifar()
    code = to_code(model)
    assert code.startswith("import torch\nfrom torch import nn\n")
    assert "class Net(nn.Module):" in code
    assert "nn.Conv2d(3, 32, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2)),  # -> 32 x 32 x 32" in code
    assert "# -> 1024" in code
    net = _exec_net(code)
    net.layers.load_state_dict(model.state_dict(), strict=True)
    assert _same_outputs(model, net)


def test_to_code_nested_named_and_odd_layers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(nn.Conv2d(3, 8, 3, padding="same", bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True)),
            pool=nn.MaxPool2d(2),
            head=nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(8 * 16 * 16, 10)),
        )
    )
    model.stem[1].running_mean.normal_()  # buffers must round-trip too
    code = to_code(model, class_name="TinyNet")
    net = _exec_net(code, "TinyNet")
    net.layers.load_state_dict(model.state_dict(), strict=True)
    assert _same_outputs(model, net)


def test_to_code_wrapper_loads_strict_into_net() -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    model = Wrapper()
    code = to_code(model, input_shape=(1, 28, 28))
    assert "self.body = nn.Sequential(" in code and "# -> 4 x 26 x 26" in code
    net = _exec_net(code)
    net.load_state_dict(model.state_dict(), strict=True)
    assert _same_outputs(model, net, (1, 28, 28))


def test_to_code_refuses_what_it_cannot_write() -> None:
    class Preprocessing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x * 2)

    class Custom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(PlaygroundError, match="own forward"):
        to_code(Preprocessing())
    with pytest.raises(PlaygroundError, match=r"Layer 1 \(Custom\) is not a torch.nn layer"):
        to_code(nn.Sequential(nn.Flatten(), Custom()))
    with pytest.raises(PlaygroundError, match="valid Python name"):
        to_code(quick_cifar(), class_name="my net")
