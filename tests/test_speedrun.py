"""core.speedrun: the airbench-style preset builds, trains a step, whitens, and has a full recipe."""

from __future__ import annotations

import torch

from core.models.speedrun import RECIPE, SpeedrunNet, build_speedrun

SMALL = (8, 16, 16)  # keeps the tests fast; the structure is the same as the default widths


def _correlated_images(n: int = 64, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Images whose channels and neighbouring pixels are strongly correlated, like photos."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, size + 1, size + 1, generator=g)
    smooth = (base[..., 1:, 1:] + base[..., :-1, 1:] + base[..., 1:, :-1] + base[..., :-1, :-1]) / 4
    mix = torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    return smooth * mix + 0.1 * torch.randn(n, 3, size, size, generator=g)


def test_builds_and_trains_one_step():
    model = build_speedrun(num_classes=10, in_channels=3, widths=SMALL)
    assert isinstance(model, SpeedrunNet)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    model.init_from_data(x)
    out = model(x)
    assert out.shape == (8, 10)
    loss = torch.nn.functional.cross_entropy(out, y)
    loss.backward()
    assert model.head.weight.grad is not None and torch.isfinite(model.head.weight.grad).all()
    assert model.whiten.weight.grad is None  # the whitening filters stay fixed


def test_other_shapes():
    model = build_speedrun(num_classes=3, in_channels=1, widths=SMALL)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_init_from_data_whitens():
    model = build_speedrun(widths=SMALL)
    images = _correlated_images()
    model.init_from_data(images, eps=0.0)
    k = model.whiten.out_channels // 2  # the second half is the negated first half
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, model.whiten.weight[:k])
    flat = out.permute(1, 0, 2, 3).reshape(k, -1)
    cov = flat @ flat.T / flat.shape[1]
    assert torch.allclose(cov, torch.eye(k), atol=1e-2), cov
    # The raw patches were far from white, so this is not trivially true.
    raw = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, k)
    raw_cov = raw.T @ raw / len(raw)
    assert (raw_cov - torch.diag(raw_cov.diag())).abs().max() > 0.1
    assert torch.equal(model.whiten.weight[k:], -model.whiten.weight[:k])


def test_param_groups_cover_trainable_params_once():
    model = build_speedrun(widths=SMALL)
    groups = model.param_groups(lr=0.5, weight_decay=1e-3)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters() if p.requires_grad}
    # Decay per step (lr * wd) is the same in every group.
    assert len({round(g["lr"] * g["weight_decay"], 12) for g in groups}) == 1
    opt = torch.optim.SGD(groups, momentum=RECIPE["momentum"], nesterov=True)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()


def test_whiten_bias_freezes():
    model = build_speedrun(widths=SMALL)
    model.whiten_bias_trainable(False)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.whiten.bias.grad is None
    model.whiten_bias_trainable(True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.whiten.bias.grad is not None


def test_recipe_keys():
    required = {
        "epochs",
        "batch_size",
        "optimizer",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "label_smoothing",
        "schedule",
        "warmup",
        "ema",
        "tta",
        "augment",
        "crop_padding",
    }
    assert required <= RECIPE.keys()
    assert RECIPE["optimizer"] == "sgd" and RECIPE["nesterov"] is True
    assert RECIPE["schedule"] in ("onecycle", "cosine", "constant")
    assert RECIPE["ema"] is None or 0 < RECIPE["ema"] < 1
