"""The `speedrun` preset: a small airbench94-style CIFAR-10 network and its recipe.

Follows the ideas of KellerJordan/cifar10-airbench (airbench94), scaled down so a
whole training command (load + train + eval) fits in 10 minutes on a 2-core CPU:

- a frozen 2x2 "whitening" first conv, initialised from the eigenvectors of the
  training images' 2x2 patch covariance, so the rest of the net sees decorrelated,
  unit-variance inputs from step one (this is most of the speed-up over a plain CNN);
- three conv groups (conv -> maxpool -> BN -> GELU -> conv -> BN -> GELU), no
  residual adds but a Dirac (identity) init of the convs acts like an implicit one;
- BatchNorm with frozen scale, trainable bias, low-momentum running stats;
- a bias-free linear head whose logits are scaled down (a softer start);
- Nesterov SGD with a short linear warm-up then a linear decay, label smoothing,
  and flip (+ optionally translate) test-time augmentation.

Not a copy of airbench: on a CPU, widths, epochs and batch size were re-tuned for
throughput (fp32, channels_last; bf16 is emulated and slower on CPUs without AMX).
On a CUDA GPU the recipe's "gpu" values apply: airbench94's widths (64/256/256) and
batch (1024), trained in bf16 with each step replayed as a CUDA graph (core/training/fastloop.py).
"""

from __future__ import annotations

import torch
from torch import nn

# 32/128/128 is ~4x fewer MACs than airbench94's 64/256/256 and still clears 92%.
DEFAULT_WIDTHS = (32, 128, 128)

# Training hyperparameters: TrainConfig fields, applied by TrainConfig.for_model (via Preset.recipe).
# lr is for a *mean* loss: airbench's 11.5 "per 1024 examples" with a summed loss and
# momentum 0.85 is lr = 11.5 * B / (1024 * (1 + 1 / 0.15)) ~= 0.75 at B=512 (mean loss),
# the same per-example step. Weight decay is multiplied by lr inside SGD, so 5e-4*...
RECIPE: dict = {
    "epochs": 10,
    "batch_size": 512,
    "optimizer": "sgd",
    "lr": 0.75,
    "momentum": 0.85,
    "nesterov": True,
    "weight_decay": 1.33e-3,
    "label_smoothing": 0.2,
    "schedule": "onecycle",
    "warmup": 0.23,
    "warmup_start": 0.2,
    "ema": None,
    "tta": True,
    "augment": True,  # random crop (crop_padding) + horizontal flip
    "crop_padding": 2,
    # On a CUDA GPU: airbench94's widths and batch, the lr scaled with the batch (11.5 * 1024 / (1024 * (1 + 1 /
    # 0.15)) = 1.5), and the mirror + shift test-time augmentation. A GPU runs the wide net about as fast as the
    # narrow one (the step is bound by launches, not arithmetic), so the width is free accuracy there.
    # TrainConfig.for_model applies these when the run's device is a CUDA GPU (core.models.presets.recipe_for).
    "gpu": {"widths": [64, 256, 256], "batch_size": 1024, "lr": 1.5, "tta": 2},
}

# airbench trains the whitening bias for the first 3 epochs only. A property of the net (read in on_epoch_start),
# not of TrainConfig, so it is the constructor's default rather than a recipe entry the loop would ignore.
WHITEN_BIAS_EPOCHS = 3


class _BatchNorm(nn.BatchNorm2d):
    """BN with a frozen scale (it is redundant before GELU + the next BN) and a trainable shift.

    momentum=0.4 (airbench's 0.6 in the usual "keep" convention) makes the running
    stats follow the fast-moving weights of a short run closely.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


class _Conv(nn.Conv2d):
    """3x3 'same' conv without bias (BN follows) and a Dirac init of the first in_channels filters.

    The identity part lets the signal pass through untouched at init, like a residual
    connection, without paying for the add.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data
        nn.init.dirac_(w[: w.size(1)])


class _ConvGroup(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _Conv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)  # pooling right after conv1 makes the rest 4x cheaper
        self.norm1 = _BatchNorm(out_channels)
        self.conv2 = _Conv(out_channels, out_channels)
        self.norm2 = _BatchNorm(out_channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class SpeedrunNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = DEFAULT_WIDTHS,
        whiten_kernel: int = 2,
        logit_scale: float = 1 / 9,
        whiten_bias_epochs: int = WHITEN_BIAS_EPOCHS,
    ) -> None:
        super().__init__()
        # Each patch eigenvector is used twice, as +v and -v, so GELU keeps both signs.
        whiten_width = 2 * in_channels * whiten_kernel**2
        self.whiten = nn.Conv2d(in_channels, whiten_width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # fixed by init_from_data, never trained
        self.act = nn.GELU()
        w1, w2, w3 = widths
        self.groups = nn.Sequential(_ConvGroup(whiten_width, w1), _ConvGroup(w1, w2), _ConvGroup(w2, w3))
        self.pool = nn.AdaptiveMaxPool2d(1)  # 3x3 -> 1x1 at 32px; any input size works
        self.head = nn.Linear(w3, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.whiten_bias_epochs = whiten_bias_epochs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        x = self.pool(self.groups(x)).flatten(1)
        return self.head(x) * self.logit_scale

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, max_images: int = 5000, eps: float = 5e-4) -> None:
        """Set the whitening filters from the 2x2 patch covariance of normalized training images.

        With C = V diag(l) V^T, the filters v_i / sqrt(l_i + eps) map patches to
        decorrelated unit-variance channels (eps keeps the near-zero-variance
        directions from blowing up). Patches are not re-centred: the inputs are
        already normalized, and the trainable bias absorbs what is left.
        """
        weight = self.whiten.weight
        c, kh, kw = weight.shape[1:]
        x = images[:max_images].to(device=weight.device, dtype=torch.float32)
        patches = x.unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)
        cov = patches.T @ patches / len(patches)
        eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending; order does not matter
        filters = (eigvecs.T / torch.sqrt(eigvals + eps)[:, None]).reshape(-1, c, kh, kw)
        weight.copy_(torch.cat((filters, -filters)))
        self.whiten.bias.zero_()

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called by the training loop before each epoch (also after a resume)."""
        self.whiten_bias_trainable(epoch < self.whiten_bias_epochs)

    def whiten_bias_trainable(self, flag: bool) -> None:
        """airbench trains the whitening bias only for the first few epochs, then freezes it.

        With zero_grad(set_to_none=True) a frozen bias gets no grad, so SGD skips it.
        """
        self.whiten.bias.requires_grad_(flag)

    def param_groups(self, lr: float, weight_decay: float, bias_lr_scale: float = 64.0) -> list[dict]:
        """Two groups for SGD: the BatchNorm shifts and everything else.

        The biases get a much larger lr (they are few and their gradients small), with
        weight decay divided by the same factor so the decay per step, lr * wd, is
        unchanged. Frozen tensors (whitening filters, BN scales) are left out; the
        whitening bias (plain lr, as in airbench94) is included even while frozen so
        freezing it later needs no new optimizer.
        """
        biases = [m.bias for m in self.modules() if isinstance(m, _BatchNorm)]
        bias_ids = {id(p) for p in biases}
        others = [p for p in self.parameters() if id(p) not in bias_ids and (p.requires_grad or p is self.whiten.bias)]
        return [
            {"params": biases, "lr": lr * bias_lr_scale, "weight_decay": weight_decay / bias_lr_scale},
            {"params": others, "lr": lr, "weight_decay": weight_decay},
        ]


def build_speedrun(num_classes: int = 10, in_channels: int = 3, widths: tuple[int, int, int] = DEFAULT_WIDTHS) -> SpeedrunNet:
    """The speedrun net in channels_last (about 1.5x faster convs on CPU, also good on GPU)."""
    model = SpeedrunNet(num_classes=num_classes, in_channels=in_channels, widths=tuple(widths))
    return model.to(memory_format=torch.channels_last)
