"""How a model's test images are scored, the same in a run's own test pass and in prediction afterwards: the
test-time augmentation views and the batch size. Here, not in either of them, so that training and prediction
share it without one importing the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tta_logits(model: nn.Module, x: torch.Tensor, level: int = 0) -> torch.Tensor:
    """Logits of a normalized batch with test-time augmentation: the same image seen in several ways, averaged.

    0: the image alone. 1: averaged with its mirror image. 2: half that, half the mirror-averaged views of the
    image shifted by one pixel up-left and down-right (edges reflected); the crops a run trained on make these
    views familiar, and averaging them cancels some of the net's position noise (as airbench94 evaluates).
    """
    logits = model(x)
    if level >= 1:
        logits = (logits + model(x.flip(-1))) / 2
    if level >= 2:
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :h, :w], padded[..., 2:, 2:]]
        logits = (logits + sum((model(v) + model(v.flip(-1))) / 2 for v in shifted) / 2) / 2
    return logits


EVAL_BATCH = 500  # the fewest images per forward pass a test split is scored in (eval_batch_size)


def eval_batch_size(train_batch_size: int) -> int:
    """Images per forward pass when scoring a test split, in training and in core.insight.evaluate alike: a conv's kernels
    can depend on the batch's shape, and the two must give the same test accuracy to the image."""
    return max(EVAL_BATCH, train_batch_size)
