"""The training loop for a TrainConfig, as a short PyTorch program (the Train page's code panel).

Like First steps' code, it is the loop itself with the form's settings filled in, and it runs: the
tests execute it. It leans on the studio's helpers for what is not the lesson (building the model,
loading the images, the crop and flip, the learning-rate curve) and spells out the rest: the loss,
the optimizer and the four lines every training step is made of. The full standalone script of a
run is the export's job (core.export.formats); this one follows the form as it changes.
"""

from __future__ import annotations

from core.training import losses
from core.training.config import TrainConfig
from core.training.parts import image_sides

_TEMPLATE = """\
import torch
from torch import nn
from torch.nn import functional as F

from core.data.batches import normalize_batch, random_crop, random_flip
from core.data.datasets import load_dataset
from core.models.build import build
from core.training.parts import lr_factor

torch.manual_seed({seed})
data = load_dataset({data!r}, image_size={data_size}, seed={seed})  # uint8 images (N, 3, H, W) and labels
mean, std = (torch.tensor(v) for v in data.channel_stats())
train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.train.images, data.train.labels),
                                           batch_size={batch_size}, shuffle=True)

model = build({model_arg}, num_classes=len(data.classes){build_extra})
loss_fn = {loss}
{optimizer}
total_steps = {epochs} * len(train_loader)
scheduler = torch.optim.lr_scheduler.LambdaLR(  # {schedule}: the learning rate's curve over the run
    optimizer, lambda step: lr_factor({schedule!r}, step, total_steps, warmup={warmup}, warmup_start={warmup_start}))

for epoch in range({epochs}):
    model.train()
    for images, labels in train_loader:
{augment}        logits = model(normalize_batch(images, mean, std, {input_size}, channels_last=False))
        loss = loss_fn(logits, labels)
        optimizer.zero_grad()  # forget the last step's gradients
        loss.backward()        # d(loss)/d(every weight)
        optimizer.step()       # nudge every weight downhill
        scheduler.step()

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(normalize_batch(x, mean, std, {input_size}, channels_last=False))
                            for x in data.test.images.split(256)])
    accuracy = (logits.argmax(1) == data.test.labels).float().mean().item()
    print(f"epoch {{epoch + 1}} of {epochs}: last batch loss {{loss.item():.3f}}, test accuracy {{accuracy:.1%}}")
"""

_AUGMENT = """\
        images = random_flip(random_crop(images, {padding}, gen), gen)  # augmentation: shifted and mirrored copies
"""


def _optimizer(config: TrainConfig) -> str:
    if config.model == "speedrun":  # its own parameter groups (e.g. no decay on the whitening layer)
        lines, groups = "", f"model.param_groups({config.lr:g}, {config.weight_decay:g})"
    else:
        lines = (
            "weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]\n"
            "others = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]  # biases, norm scales: no decay\n"
        )
        groups = f'[{{"params": weights, "weight_decay": {config.weight_decay:g}}}, {{"params": others, "weight_decay": 0.0}}]'
    if config.optimizer == "sgd":
        args = f"lr={config.lr:g}, momentum={config.momentum:g}, nesterov={bool(config.nesterov and config.momentum > 0)}"
        name = "SGD"
    else:
        args, name = f"lr={config.lr:g}", {"adam": "Adam", "adamw": "AdamW"}[config.optimizer]
    return f"{lines}optimizer = torch.optim.{name}({groups}, {args})"


def loop_code(config: TrainConfig) -> str:
    """The program that trains `config` (the studio's trainer adds checkpoints, logging, devices and Stop)."""
    data_size, input_size = image_sides(config)
    model_arg = repr(config.layers) if config.model == "custom" else repr(config.model)
    extra = ""
    if config.weights:
        extra += f", weights={config.weights!r}"
    if config.freeze_backbone:
        extra += ", freeze=True"
    if config.model == "custom" or config.image_size:
        extra += f", input_size={input_size}"
    augment = _AUGMENT.format(padding=config.crop_padding) if config.augment else ""
    code = _TEMPLATE.format(
        seed=config.seed,
        data=config.data,
        data_size=data_size,
        batch_size=config.batch_size,
        model_arg=model_arg,
        build_extra=extra,
        loss=losses.code(config.loss, config.label_smoothing),
        optimizer=_optimizer(config),
        epochs=config.epochs,
        schedule=config.schedule,
        warmup=f"{config.warmup:g}",
        warmup_start=f"{config.warmup_start:g}",
        augment=augment,
        input_size=input_size,
    )
    if config.augment:
        code = code.replace(
            "for epoch in range(", f"gen = torch.Generator().manual_seed({config.seed})  # the augmentation's dice\nfor epoch in range(", 1
        )
    return code
