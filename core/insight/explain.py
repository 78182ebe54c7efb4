"""Where the model looks: Grad-CAM, saliency and integrated gradients (Captum) for one image.

Every map is computed on exactly what the model sees (core.insight.predict's deterministic eval
preprocessing: the centre square of the image, at the model's input size, normalized) and
then put back on the user's own picture: stretched over the centre square the model saw and
zero outside it, never stretched over the whole image.

- gradcam (default): Grad-CAM (Selvaraju et al., 2017) on the last conv layer, found by
  running the model once (so presets and layer specs alike work); where the modules run right
  after it keep its shape (its BatchNorm and ReLU, the ResNet stage or speedrun group it ends),
  the last of them is used, so the map weighs the activations the next layers receive. Coarse
  (the layer's own grid, e.g. 4 x 4 for ResNet-18 at 32 px) but class-specific.
- saliency: the gradient of the class score w.r.t. each input pixel (Simonyan et al., 2014).
- integrated_gradients: gradients summed along a straight path from a baseline (Sundararajan
  et al., 2017); the baseline is the training data's mean colour (zero after normalization),
  so no colour is "free", unlike a black baseline that cannot credit dark pixels.

Gradients are taken w.r.t. inputs and activations only, so frozen parameters (a frozen
backbone, the speedrun's whitening conv) and channels_last weights change nothing.

`python -m core.explain RUN_DIR IMAGE... [--method M] [--target CLASS] [--out DIR]` prints one
JSON list and writes DIR/<stem>.<method>.png (the map over the image) and .npy (the map,
float32 in [0, 1], at the image's own height x width).
"""

from __future__ import annotations

import argparse
import copy
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.data.images import ImageSource, center_crop_box, open_image, prepare_image
from core.errors import PlaygroundError, command
from core.insight.predict import Predictor, add_image_options
from core.models.build import forward_calls

METHODS: dict[str, str] = {"gradcam": "Grad-CAM", "saliency": "Saliency", "integrated_gradients": "Integrated gradients"}
IG_STEPS = 32  # Riemann/Gauss-Legendre steps; the completeness error is already small at 32 for these nets
SPREAD_PERCENTILE = 99.0  # saliency and IG are spiky: their maps reach 1 at this percentile, not at one hot pixel
OVERLAY_ALPHA = 0.7  # strongest tint, where the map is 1
OUTSIDE_DIM = 0.45  # brightness kept outside the centre square the model sees


@dataclass
class Explanation:
    method: str
    target: int  # class index the map explains
    label: str
    probs: torch.Tensor  # (classes,) the run's probabilities for the image
    heat: np.ndarray  # float32 (I, I) in [0, 1] over what the model sees: the centre square at its input size
    grid: tuple[int, int]  # the map's real resolution: the Grad-CAM layer's height x width, or the input's

    @property
    def empty(self) -> bool:
        """Nothing in the image speaks for this class (Grad-CAM keeps positive evidence only)."""
        return not bool(self.heat.any())

    def on_image(self, width: int, height: int) -> np.ndarray:
        """The map on an image of this size: over the centre square the model saw, zero outside it."""
        left, top, side = center_crop_box(width, height)
        x0, y0 = int(left), int(top)  # the box starts at a half pixel when the margin is odd
        out = np.zeros((height, width), dtype=np.float32)
        square = F.interpolate(torch.from_numpy(self.heat)[None, None], size=(side, side), mode="bilinear", align_corners=False)[
            0, 0
        ].clamp_(0, 1)
        out[y0 : y0 + side, x0 : x0 + side] = square.numpy()
        return out


def resolve_target(target: str | int | None, classes: Sequence[str]) -> int | None:
    """A class name (as the run calls it) or an index; None means the predicted class."""
    if target is None or target == "":
        return None
    names = list(classes)
    if isinstance(target, str) and target in names:
        return names.index(target)
    text = str(target).strip()
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise PlaygroundError(f"--target {target!r} is not one of this run's classes ({shown}) nor an index 0-{len(names) - 1}.")


def gradcam_layer(model: nn.Module, input_size: int, device: torch.device | str = "cpu") -> tuple[str, nn.Module, tuple[int, int]]:
    """(name, module, output height x width) of the layer Grad-CAM reads: the last conv layer a forward pass
    runs, or the last module run right after it that keeps its output shape (its BatchNorm and ReLU, the
    ResNet stage or speedrun group that ends with it), so the map weighs what the next layers really receive."""
    calls = forward_calls(model, input_size, device)  # in the order modules finish: children first
    last = max((i for i, (m, _) in enumerate(calls) if isinstance(m, nn.Conv2d)), default=None)
    if last is None:
        raise PlaygroundError("Grad-CAM needs a Conv2d layer and this model has none; use --method saliency or integrated_gradients.")
    shape = calls[last][1]
    assert shape is not None
    times_called: dict[nn.Module, int] = {}
    for m, _ in calls:
        times_called[m] = times_called.get(m, 0) + 1
    chosen = calls[last][0]
    for module, out in calls[last + 1 :]:
        if out != shape or module is model:
            break
        if times_called[module] == 1:  # a module run twice (a block's shared ReLU) would be hooked twice
            chosen = module
    names = {m: n for n, m in model.named_modules()}
    return names[chosen], chosen, (int(shape[-2]), int(shape[-1]))


def _spread(values: torch.Tensor) -> np.ndarray:
    """Non-negative map -> [0, 1], 1 at the SPREAD_PERCENTILE-th value (all zero stays zero)."""
    top = torch.quantile(values.flatten().float(), SPREAD_PERCENTILE / 100)
    if not top > 0:
        top = values.max()
    return (values / top).clamp(0, 1).numpy().astype(np.float32) if top > 0 else np.zeros(values.shape, np.float32)


class Explainer:
    """Attributions for one Predictor's model, on a private copy of it.

    Captum hooks the layer while it attributes; other browser sessions predicting with the
    shared model at the same time must not pass through those hooks, so the explainer owns
    its own copy and explains one image at a time.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.model = copy.deepcopy(predictor.model).eval()
        self._lock = threading.Lock()
        self._layer: tuple[str, nn.Module, tuple[int, int]] | None = None

    def layer(self) -> tuple[str, nn.Module, tuple[int, int]]:
        if self._layer is None:
            self._layer = gradcam_layer(self.model, self.predictor.input_size, self.predictor.device)
        return self._layer

    def explain(
        self, source: ImageSource, name: str | None = None, method: str = "gradcam", target: str | int | None = None
    ) -> Explanation:
        return self.explain_prepared(self.predictor.prepare(source, name), method, target)

    def explain_prepared(
        self, prepared: torch.Tensor, method: str = "gradcam", target: str | int | None = None, probs: torch.Tensor | None = None
    ) -> Explanation:
        """Explain a uint8 (3, S, S) image as `Predictor.prepare` makes it; `probs` saves a forward pass."""
        if method not in METHODS:
            raise PlaygroundError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        p = self.predictor
        if probs is None:
            probs = p.probabilities(prepared[None])[0]
        wanted = resolve_target(target, p.classes)
        index = int(probs.argmax()) if wanted is None else wanted
        x = p.inputs(prepared[None])
        x.requires_grad_()  # Captum would set it anyway, with a warning
        with self._lock, torch.enable_grad():
            heat, grid = self._attribute(x, method, index)
        return Explanation(method, index, p.classes[index], probs, heat, grid)

    def _attribute(self, x: torch.Tensor, method: str, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

        size = (x.shape[-2], x.shape[-1])
        if method == "gradcam":
            _, layer, grid = self.layer()
            cam = LayerGradCam(self.model, layer).attribute(x, target=index, relu_attributions=True)
            cam = LayerAttribution.interpolate(cam.detach().float(), size, interpolate_mode="bilinear")[0, 0].cpu()
            top = cam.max()
            heat = (cam / top).clamp(0, 1).numpy().astype(np.float32) if top > 0 else np.zeros(size, np.float32)
            return heat, grid
        if method == "saliency":
            grads = Saliency(self.model).attribute(x, target=index, abs=True)
            return _spread(grads.detach()[0].amax(0).cpu()), size
        attributions = IntegratedGradients(self.model).attribute(
            x, baselines=torch.zeros_like(x), target=index, n_steps=IG_STEPS, internal_batch_size=IG_STEPS
        )
        # Summed over colour channels and kept where positive: evidence *for* the class.
        return _spread(attributions.detach()[0].sum(0).clamp_min(0).cpu()), size


def overlay(image: Image.Image, heat: np.ndarray) -> Image.Image:
    """The map as colour over the image: none where it is 0, red where it is 1 (matplotlib's jet), and the
    part the model never sees (outside the centre square) dimmed."""
    import matplotlib

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    height, width = heat.shape
    left, top, side = center_crop_box(width, height)
    x0, y0 = int(left), int(top)
    seen = np.full((height, width, 1), OUTSIDE_DIM, dtype=np.float32)
    seen[y0 : y0 + side, x0 : x0 + side] = 1.0
    colours = matplotlib.colormaps["jet"](heat)[..., :3].astype(np.float32)
    alpha = OVERLAY_ALPHA * heat[..., None]  # no evidence, no tint: the picture stays readable around the hot spots
    out = ((1 - alpha) * rgb * seen + alpha * colours).clip(0, 1)
    return Image.fromarray((out * 255).round().astype(np.uint8))


def explain_files(
    explainer: Explainer,
    paths: Sequence[str],
    out_dir: Path,
    method: str = "gradcam",
    target: str | int | None = None,
    k: int = 5,
    ood: bool = True,
) -> list[dict[str, Any]]:
    """The CLI's work: per file a result dict, with the overlay PNG and the raw .npy map written to out_dir."""
    p = explainer.predictor
    resolve_target(target, p.classes)  # a bad --target is the user's one mistake for every file: fail before any work
    if method == "gradcam":
        explainer.layer()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlaygroundError(f"Cannot create {out_dir} ({exc.strerror or exc}); choose another --out folder.") from None
    results: list[dict[str, Any]] = []
    stems: set[str] = set()
    for path in paths:
        try:
            img = open_image(path)
            prepared = prepare_image(img, p.image_size)
            probs, notes = p.classify(prepared[None], ood=ood)
            e = explainer.explain_prepared(prepared, method, target, probs=probs[0])
            heat = e.on_image(*img.size)
        except PlaygroundError as exc:
            results.append({"file": path, "error": str(exc)})
            continue
        stem, n = Path(path).stem, 1
        while stem in stems:  # a/cat.jpg and b/cat.png must not overwrite each other
            n += 1
            stem = f"{Path(path).stem}-{n}"
        stems.add(stem)
        png, npy = out_dir / f"{stem}.{method}.png", out_dir / f"{stem}.{method}.npy"
        try:
            np.save(npy, heat)
            overlay(img, heat).save(png)
        except OSError as exc:
            raise PlaygroundError(
                f"Cannot write {png.name} into {out_dir} ({exc.strerror or exc}); free disk space or choose another --out folder."
            ) from None
        results.append(
            {"file": path, "top": p.topk(e.probs, k), "method": method, "target": e.label, "heatmap": str(png), "map": str(npy), **notes[0]}
        )
    return results


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.explain", description="Show where a trained run looks in images.")
    add_image_options(p)
    p.add_argument("--method", default="gradcam", choices=list(METHODS))
    p.add_argument("--target", help="class name or index to explain (default: the predicted class)")
    p.add_argument("--out", help="folder for <stem>.<method>.png and .npy (default: RUN_DIR/explain)")
    args = p.parse_args(argv)
    predictor = Predictor.from_run(args.run_dir, device=args.device)
    out = Path(args.out) if args.out else Path(args.run_dir) / "explain"
    results = explain_files(Explainer(predictor), args.images, out, args.method, args.target, max(1, args.topk), ood=not args.no_ood)
    print(json.dumps(results, indent=1))
    return 0
