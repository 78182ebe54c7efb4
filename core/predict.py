"""Classify images with a trained run, using exactly the run's eval preprocessing.

Never RandomResizedCrop (or any randomness) at inference: the same photo must
get the same answer every time. The path is: decode safely -> RGB -> resize the
shorter side and center-crop to the size the run's data was prepared at ->
the run's resize to the model input and normalization (core.data.normalize_batch).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core import device as dev
from core import runs
from core.data import IMAGENET_MEAN, IMAGENET_STD, normalize_batch
from core.errors import PlaygroundError
from core.images import ImageSource, load_for_model
from core.models import build, imagenet_categories, preset_input_size, read_state_dict


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


@dataclass
class Predictor:
    model: nn.Module
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    image_size: int  # side the image is prepared at (as the training data was)
    input_size: int  # side the model sees
    device: torch.device
    tta: int = 0  # test-time augmentation level, as the run was evaluated with (see tta_logits)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str = "cpu") -> "Predictor":
        ckpt = runs.load_checkpoint(run_dir)
        config = ckpt.get("config") or runs.read_config(run_dir)
        spec = config.get("layers") if config.get("model") == "custom" else config["model"]
        model = build(spec, num_classes=len(ckpt["classes"]), input_size=ckpt["input_size"], widths=config.get("widths"))
        model.load_state_dict(ckpt["model"])
        return cls._ready(model, list(ckpt["classes"]), ckpt["normalization"], int(ckpt["image_size"]),
                          int(ckpt["input_size"]), device, int(config.get("tta") or 0))

    @classmethod
    def from_weights(cls, weights: str | os.PathLike, model: str | list, classes: Sequence[str] | None = None,
                     input_size: int | None = None, normalization: dict[str, Sequence[float]] | None = None,
                     device: str = "cpu") -> "Predictor":
        """Uploaded weights (state_dict .pt or .safetensors) plus the architecture they belong to."""
        state = read_state_dict(weights)
        meta: dict[str, Any] = {}
        if str(weights).endswith((".pt", ".pth")):
            blob = runs.safe_torch_load(weights)
            if isinstance(blob, dict) and "model" in blob:
                meta = blob  # a Torch Playground export carries its classes and normalization
        classes = list(classes or meta.get("classes") or [])
        if not classes:
            out = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
            n = out[-1].shape[0] if out else 10
            classes = imagenet_categories(model) if n == 1000 and isinstance(model, str) else [str(i) for i in range(n)]
        size = input_size or meta.get("input_size") or (preset_input_size(model) if isinstance(model, str) else 32)
        norm = normalization or meta.get("normalization") or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        net = build(model, num_classes=len(classes), weights=weights, input_size=size)
        return cls._ready(net, classes, norm, int(meta.get("image_size", size)), int(size), device, 0)

    @classmethod
    def _ready(cls, model: nn.Module, classes: list[str], norm: dict, image_size: int, input_size: int,
               device: str, tta: int) -> "Predictor":
        target = dev.resolve_device(device)
        model = model.to(target).eval()
        return cls(model, classes, torch.tensor(norm["mean"], device=target), torch.tensor(norm["std"], device=target),
                   image_size, input_size, target, tta)

    def prepare(self, source: ImageSource, name: str | None = None) -> torch.Tensor:
        """uint8 (3, S, S) at the size the run's data was prepared at; `probabilities` takes a batch of these."""
        return load_for_model(source, self.image_size, name=name)

    def model_view(self, prepared: torch.Tensor) -> torch.Tensor:
        """uint8 (3, I, I): what the model sees, at its input size, before normalization (for display)."""
        x = normalize_batch(prepared[None].to(self.device), torch.zeros_like(self.mean), torch.ones_like(self.std) / 255,
                            self.input_size, channels_last=False)
        return x[0].round().clamp(0, 255).to(torch.uint8).cpu()

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> the normalized float batch the model takes, on its device."""
        return normalize_batch(batch.to(self.device), self.mean, self.std, self.input_size, channels_last=False)

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return tta_logits(self.model, self.inputs(batch), self.tta).float().cpu()

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return self.logits(batch).softmax(dim=1)

    def topk(self, probs: torch.Tensor, k: int = 5) -> list[dict[str, Any]]:
        values, index = probs.topk(min(k, len(self.classes)))
        return [{"label": self.classes[i], "prob": round(float(v), 6)} for v, i in zip(values, index)]

    def predict(self, sources: Sequence[ImageSource], names: Sequence[str] | None = None, k: int = 5,
                batch_size: int = 64) -> list[dict[str, Any]]:
        """One result per input, in order: {"file", "top"} or {"file", "error"}; a bad file never stops the rest."""
        names = list(names) if names is not None else [str(s) if isinstance(s, (str, os.PathLike)) else f"image {i + 1}"
                                                       for i, s in enumerate(sources)]
        results: list[dict[str, Any]] = [{} for _ in sources]
        ready: list[tuple[int, torch.Tensor]] = []
        for i, (source, name) in enumerate(zip(sources, names)):
            try:
                ready.append((i, self.prepare(source, Path(name).name)))
            except PlaygroundError as exc:
                results[i] = {"file": name, "error": str(exc)}
        for start in range(0, len(ready), batch_size):
            chunk = ready[start:start + batch_size]
            probs = self.probabilities(torch.stack([t for _, t in chunk]))
            for (i, _), p in zip(chunk, probs):
                results[i] = {"file": names[i], "top": self.topk(p, k)}
        return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.predict", description="Classify images with a trained run.")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="cpu", choices=dev.DEVICE_CHOICES)
    args = p.parse_args(argv)
    try:
        predictor = Predictor.from_run(args.run_dir, device=args.device)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(predictor.predict(args.images, names=args.images, k=max(1, args.topk)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
