"""Classify images with a trained run, using exactly the run's eval preprocessing.

Never RandomResizedCrop (or any randomness) at inference: the same photo must
get the same answer every time. The path is: decode safely -> RGB -> resize the
shorter side and center-crop to the size the run's data was prepared at ->
the run's resize to the model input and normalization (core.data.batches.normalize_batch).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core import device as dev
from core.data.batches import IMAGENET_MEAN, IMAGENET_STD, normalize_batch
from core.data.images import ImageSource, load_for_model
from core.errors import PlaygroundError, command
from core.files import safe_torch_load
from core.insight.ood import OODCheck
from core.models.backbones import imagenet_categories, preset_input_size, read_state_dict
from core.models.build import build
from core.models.scoring import EVAL_BATCH, eval_batch_size, tta_logits
from core.serving import runs


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
    dtype: torch.dtype = torch.float32  # autocast precision: device.eval_precision, as the run's own test pass
    channels_last: bool = False  # the memory format the run trained (and was scored) in
    eval_batch: int = EVAL_BATCH  # images per forward pass over a test split (eval_batch_size of the run's batch)
    run_dir: Path | None = None  # set by from_run: the out-of-distribution check fits on the run's own data
    _ood: Any = field(default=None, init=False, repr=False, compare=False)
    _ood_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str = "cpu") -> Predictor:
        ckpt = runs.load_checkpoint(run_dir)
        config = ckpt.get("config") or runs.read_config(run_dir)
        spec = config.get("layers") if config.get("model") == "custom" else config["model"]
        # Built around its own weights: details such as ResNet-18's stem follow what the run trained.
        model = build(
            spec, num_classes=len(ckpt["classes"]), input_size=ckpt["input_size"], weights=ckpt["model"], widths=config.get("widths")
        )
        predictor = cls._ready(
            model,
            list(ckpt["classes"]),
            ckpt["normalization"],
            int(ckpt["image_size"]),
            int(ckpt["input_size"]),
            device,
            int(config.get("tta") or 0),
            precision=str(config.get("precision") or "auto"),
            channels_last=bool(config.get("channels_last", True)),
        )
        predictor.run_dir = Path(run_dir)
        predictor.eval_batch = eval_batch_size(int(config.get("batch_size") or 0))
        return predictor

    @classmethod
    def from_weights(
        cls,
        weights: str | os.PathLike,
        model: str | list,
        classes: Sequence[str] | None = None,
        input_size: int | None = None,
        normalization: dict[str, Sequence[float]] | None = None,
        device: str = "cpu",
        info: dict[str, Any] | None = None,
    ) -> Predictor:
        """Uploaded weights (state_dict .pt or .safetensors) plus the architecture they belong to.

        `info` is the JSON that comes with an exported state_dict (runs.weights_info: classes, normalization,
        sizes); older exports carried the same inside the .pt. Explicit arguments win over both.
        """
        state = read_state_dict(weights)
        meta: dict[str, Any] = dict(info or {})
        if not meta and str(weights).endswith((".pt", ".pth")):
            blob = safe_torch_load(weights)
            if isinstance(blob, dict) and isinstance(blob.get("model"), dict):
                meta = blob  # an export from before the JSON sidecar: classes and normalization inside the .pt
        classes = list(classes or meta.get("classes") or [])
        if not classes:
            out = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
            n = out[-1].shape[0] if out else 10
            classes = imagenet_categories(model) if n == 1000 and isinstance(model, str) else [str(i) for i in range(n)]
        size = input_size or meta.get("input_size") or (preset_input_size(model) if isinstance(model, str) else 32)
        norm = normalization or meta.get("normalization") or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        net = build(model, num_classes=len(classes), weights=weights, input_size=size, widths=meta.get("widths"))
        return cls._ready(net, classes, norm, int(meta.get("image_size", size)), int(size), device, int(meta.get("tta") or 0))

    @classmethod
    def _ready(
        cls,
        model: nn.Module,
        classes: list[str],
        norm: dict,
        image_size: int,
        input_size: int,
        device: str,
        tta: int,
        *,
        precision: str = "auto",
        channels_last: bool = False,
    ) -> Predictor:
        target = dev.resolve_device(device)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(target, memory_format=memory_format).eval()
        return cls(
            model,
            classes,
            torch.tensor(norm["mean"], device=target),
            torch.tensor(norm["std"], device=target),
            image_size,
            input_size,
            target,
            tta,
            dev.eval_precision(precision, target),
            channels_last,
        )

    def prepare(self, source: ImageSource, name: str | None = None) -> torch.Tensor:
        """uint8 (3, S, S) at the size the run's data was prepared at; `probabilities` takes a batch of these."""
        return load_for_model(source, self.image_size, name=name)

    def model_view(self, prepared: torch.Tensor) -> torch.Tensor:
        """uint8 (3, I, I): what the model sees, at its input size, before normalization (for display)."""
        x = normalize_batch(
            prepared[None].to(self.device),
            torch.zeros_like(self.mean),
            torch.ones_like(self.std) / 255,
            self.input_size,
            channels_last=False,
        )
        return x[0].round().clamp(0, 255).to(torch.uint8).cpu()

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> the normalized float batch the model takes, on its device."""
        return normalize_batch(batch.to(self.device), self.mean, self.std, self.input_size, channels_last=self.channels_last)

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        with dev.autocast(self.device, self.dtype):
            return tta_logits(self.model, self.inputs(batch), self.tta).float().cpu()

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return self.logits(batch).softmax(dim=1)

    @property
    def ood_ready(self) -> bool:
        return self._ood is not None

    def ood_check(self) -> OODCheck:
        """The out-of-distribution check (core.insight.ood), fitted on first use and cached in the run folder."""
        with self._ood_lock:
            if self._ood is None:
                self._ood = OODCheck.for_predictor(self)
            return self._ood

    def classify(self, batch: torch.Tensor, ood: bool = True) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Probabilities of a uint8 batch and, per image, the `ood` and `warning` fields (core.insight.ood)."""
        check = self.ood_check() if ood else OODCheck(unavailable="not asked for")
        with check.capture() as captured:
            probs = self.probabilities(batch)
        scores = check.scores(captured, batch)
        return probs, [check.assess(p, self.classes, s) for p, s in zip(probs, scores)]

    def topk(self, probs: torch.Tensor, k: int = 5) -> list[dict[str, Any]]:
        values, index = probs.topk(min(k, len(self.classes)))
        return [{"label": self.classes[i], "prob": round(float(v), 6)} for v, i in zip(values, index)]

    def predict(
        self, sources: Sequence[ImageSource], names: Sequence[str] | None = None, k: int = 5, batch_size: int = 64, ood: bool = True
    ) -> list[dict[str, Any]]:
        """One result per input, in order: {"file", "top", "ood", "warning"} or {"file", "error"}; a bad file
        never stops the rest. `warning` says in words when the answer is a guess (core.insight.ood), else None."""
        names = (
            list(names)
            if names is not None
            else [str(s) if isinstance(s, (str, os.PathLike)) else f"image {i + 1}" for i, s in enumerate(sources)]
        )
        results: list[dict[str, Any]] = [{} for _ in sources]
        ready: list[tuple[int, torch.Tensor]] = []
        for i, (source, name) in enumerate(zip(sources, names)):
            try:
                ready.append((i, self.prepare(source, Path(name).name)))
            except PlaygroundError as exc:
                results[i] = {"file": name, "error": str(exc)}
        for start in range(0, len(ready), batch_size):
            chunk = ready[start : start + batch_size]
            probs, notes = self.classify(torch.stack([t for _, t in chunk]), ood=ood)
            for (i, _), p, note in zip(chunk, probs, notes):
                results[i] = {"file": names[i], "top": self.topk(p, k), **note}
        return results


def add_image_options(p: argparse.ArgumentParser) -> None:
    """A run and images to look at it with: the options `python -m core.predict` and `core.explain` share."""
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="cpu", choices=dev.DEVICE_CHOICES)
    p.add_argument(
        "--no-ood",
        action="store_true",
        help="skip the unusual-image check (the first use per checkpoint "
        "fits it on the run's data and caches ood.safetensors in the run folder)",
    )


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.predict", description="Classify images with a trained run.")
    add_image_options(p)
    args = p.parse_args(argv)
    predictor = Predictor.from_run(args.run_dir, device=args.device)
    print(json.dumps(predictor.predict(args.images, names=args.images, k=max(1, args.topk), ood=not args.no_ood), indent=1))
    return 0
