"""Does an image look like the run's training data? An honest "this is a guess" for predictions.

A softmax classifier always names one of its classes: its probabilities add up to 1 over the
classes it knows, whatever it is shown, so "dots 47%" for a photo of a cat says nothing about
the photo. This module asks a separate question, with two k-nearest-neighbour distances to a
bank of the run's own training images (loaded as training loaded them):

- features: the image's penultimate-layer features (the input of the last Linear layer, what
  the classifier reads), L2-normalized, as in Sun et al., 2022, "Out-of-distribution
  detection with deep nearest neighbors". Catches pictures of unknown *things* when the
  network's features are rich.
- edges: the distribution of edge strengths (quantiles of the grey-level gradient magnitude
  at full and half resolution), a classic natural-image statistic. Catches pictures of an
  unknown *kind*: a network trained on flat synthetic shapes has learned to ignore texture,
  so its features alone put a photo among the shapes (measured: class-conditional
  Mahalanobis on its penultimate features flagged 0% of CIFAR-10 photos, these edge
  statistics 99%+).

Each distance becomes a rank among the distances of held-out images of the same data (the
run's test split, never trained on): the fraction of them that are closer. An image's score is
the larger of its two ranks, and it is unusual above the PERCENTILE-th percentile of the
held-out images' own scores, so about 1 - PERCENTILE/100 of genuine images are called unusual
and pictures of other things, which land far away, are.

Computed lazily, once per checkpoint: cached in the run folder as `ood.safetensors` with the
checkpoint's mtime, so a resumed run (new weights) recalibrates.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.datasets import Split, load_dataset
from core.data.spec import DataSpec
from core.errors import PlaygroundError
from core.files import atomic_write_bytes
from core.models.build import forward_calls
from core.serving import runs

if TYPE_CHECKING:
    from core.insight.predict import Predictor

OOD_FILE = "ood.safetensors"
FORMAT = "knn-features-edges-v2"  # bump when the method changes: old caches are refitted
PERCENTILE = 97.5  # of held-out scores; above it an image is "unusual" (1 genuine image in 40)
LOW_CONFIDENCE = 0.5  # a top probability below even odds is called unsure, whatever the distances say
# Distance to the k-th nearest training image. Features: the 5th, one look-alike is not enough (Sun et al. use
# k ~ 0.1% of the bank). Edge statistics are 34 numbers in which training images lie dense: the nearest one
# separated best (CIFAR-10 photos vs shapes at 97.5%: 99.5% flagged with k=1, 93-96% with k=5).
FEATURE_NEIGHBOURS, EDGE_NEIGHBOURS = 5, 1
FEATURE_DIM = 128  # wider features go through a fixed random projection (distances roughly kept) to keep the bank small
BANK_IMAGES, MIN_BANK = 2000, 500  # training images kept as the reference
CALIBRATION_IMAGES, MIN_CALIBRATION = 1000, 200  # held-out images that set the threshold
BUDGET_S = 20.0  # the first prediction of a run waits for the fit: big models on a CPU use fewer images
_QUANTILES = torch.linspace(0, 1, 17)
_PROJECTION_SEED = 20220712

SOFTMAX_NOTE = (
    "Its last layer turns scores into probabilities with a *softmax*, and those always add up to 100% over "
    'the classes it was trained on. It has no "none of these" answer, so a picture of something else '
    "still gets a label, sometimes with a high percentage. That is why the studio also checks, separately, "
    "whether your picture resembles the training images at all: the percentages cannot tell you."
)


def head_layer(model: nn.Module, input_size: int, device: torch.device | str = "cpu") -> nn.Linear | None:
    """The last nn.Linear a forward pass calls (the classifier): its input is the penultimate features."""
    linears = [m for m, _ in forward_calls(model, input_size, device) if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


class FeatureTap:
    """The classifier's input, captured during a forward pass that runs inside `capture()`.

    One hook for the model's life and a per-thread slot: the studio shares one model between
    browser sessions, which may predict at the same time, and only the capturing thread's
    first forward pass (not a test-time-augmentation flip) is kept.
    """

    def __init__(self, model: nn.Module, input_size: int, device: torch.device | str = "cpu") -> None:
        layer = head_layer(model, input_size, device)
        if layer is None:
            raise PlaygroundError("This model has no Linear layer, so its features cannot be compared with the training data.")
        self._local = threading.local()
        layer.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        slot = getattr(self._local, "slot", None)
        if slot is not None and not slot:
            slot.append(args[0].detach().flatten(1).double().cpu())

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[torch.Tensor]]:
        self._local.slot = []
        try:
            yield self._local.slot
        finally:
            self._local.slot = None

    def __deepcopy__(self, memo: dict) -> FeatureTap:
        # A copied model (core.insight.explain keeps a private one) keeps pointing at this tap; it only
        # records inside capture(), so the copy's passes never land in a prediction's slot.
        return self


@functools.lru_cache(maxsize=4)
def _projection(in_dim: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_PROJECTION_SEED)
    return torch.randn(in_dim, FEATURE_DIM, generator=gen, dtype=torch.float64) / math.sqrt(FEATURE_DIM)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def normalized_features(feats: torch.Tensor) -> torch.Tensor:
    """Penultimate features on the unit sphere, projected to FEATURE_DIM when wider."""
    z = _unit(feats.double())
    return z if z.shape[1] <= FEATURE_DIM else _unit(z @ _projection(z.shape[1]))


def edge_statistics(images: torch.Tensor) -> torch.Tensor:
    """(N, 34): log-quantiles of the grey-level gradient magnitude of uint8 (N, 3, H, W) images, at full and half
    resolution. Flat regions, sharp outlines and pixel noise (drawings, synthetic shapes) and the heavy-tailed,
    scale-invariant edges of photos give very different curves."""
    per_chunk = max(1, 4_000_000 // max(1, images[0].numel()))  # torch.quantile refuses inputs over 16M values
    if len(images) > per_chunk:
        return torch.cat([edge_statistics(chunk) for chunk in images.split(per_chunk)])
    grey = images.float().mean(1, keepdim=True) / 255
    parts = []
    for x in (grey, F.avg_pool2d(grey, 2) if min(grey.shape[-2:]) >= 4 else grey):
        steps = torch.cat([(x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1), (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1)], dim=1)
        parts.append((torch.quantile(steps, _QUANTILES, dim=1).T + 1e-3).log())
    return torch.cat(parts, dim=1).double()


def _knn_distance(bank: torch.Tensor, query: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, len(bank))
    # float32 and the matrix-product form: a 1-image query against 2000 rows in well under a millisecond.
    d = torch.cdist(query.float(), bank.float(), compute_mode="use_mm_for_euclid_dist")
    return d.topk(k, dim=1, largest=False).values[:, -1]


@dataclass
class Reference:
    """The run's training images as two k-NN banks, and the held-out distances that calibrate them."""

    features: torch.Tensor  # (n, d) normalized penultimate features of training images
    edges: torch.Tensor  # (n, 34) standardized edge statistics of the same images
    edge_mean: torch.Tensor
    edge_std: torch.Tensor
    calibration: torch.Tensor  # (m, 2) float32, sorted per column: the held-out images' feature and edge distances
    threshold: float = 1.0  # scores above it are unusual
    info: dict[str, str] = field(default_factory=dict)

    def distances(self, feats: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """(N, 2) distance of each image to its k-th nearest training image: in features, in edge statistics."""
        edges = (edge_statistics(images) - self.edge_mean) / self.edge_std
        return torch.stack(
            [
                _knn_distance(self.features, normalized_features(feats), FEATURE_NEIGHBOURS),
                _knn_distance(self.edges, edges, EDGE_NEIGHBOURS),
            ],
            dim=1,
        )

    def score(self, distances: torch.Tensor) -> torch.Tensor:
        """(N,) in [0, 1]: the larger, over both distances, of the fraction of held-out images that are closer."""
        distances = distances.to(self.calibration.dtype)
        ranks = [
            torch.searchsorted(self.calibration[:, j].contiguous(), distances[:, j].contiguous(), right=True)
            for j in range(distances.shape[1])
        ]
        return torch.stack(ranks, dim=1).max(dim=1).values.double() / len(self.calibration)

    @classmethod
    def fit(
        cls,
        bank_feats: torch.Tensor,
        bank_images: torch.Tensor,
        held_feats: torch.Tensor,
        held_images: torch.Tensor,
        percentile: float = PERCENTILE,
    ) -> Reference:
        edges = edge_statistics(bank_images)
        mean, std = edges.mean(0), edges.std(0).clamp_min(1e-6)
        ref = cls(normalized_features(bank_feats).float(), ((edges - mean) / std).float(), mean, std, torch.empty(0, 2))
        held = ref.distances(held_feats, held_images)
        ref.calibration = held.sort(dim=0).values
        ref.threshold = float(np.percentile(ref.score(held).numpy(), percentile))
        ref.info = {"percentile": str(percentile), "n_bank": str(len(bank_images)), "n_calibration": str(len(held_images))}
        return ref

    _TENSORS = ("features", "edges", "edge_mean", "edge_std", "calibration")

    def save(self, path: Path, **meta: str) -> None:
        from safetensors.torch import save

        self.info.update(meta)
        tensors = {name: getattr(self, name).float().contiguous() for name in self._TENSORS}
        atomic_write_bytes(path, save(tensors, metadata={**self.info, "format": FORMAT, "threshold": repr(self.threshold)}))

    @classmethod
    def load(cls, path: Path) -> Reference:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != FORMAT:
                raise ValueError("written by another version")
            tensors = {name: f.get_tensor(name) for name in cls._TENSORS}
        tensors["edge_mean"], tensors["edge_std"] = tensors["edge_mean"].double(), tensors["edge_std"].double()
        return cls(**tensors, threshold=float(meta.pop("threshold")), info=meta)


def features(predictor: Predictor, tap: FeatureTap, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, D) float64 penultimate features of uint8 images, through the run's own eval preprocessing."""
    out = []
    for chunk in images.split(batch_size):
        x = predictor.inputs(chunk)
        with torch.no_grad(), tap.capture() as got:
            predictor.model(x)
        out.append(got[0])
    return torch.cat(out)


def _sample(split: Split, n: int, seed: int) -> Split:
    if n >= len(split):
        return split
    return split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n])


def fit_for_run(predictor: Predictor, tap: FeatureTap, run_dir: Path) -> Reference:
    """Bank from the run's own training data (loaded the way training loaded it), calibrated on its test split."""
    config = runs.read_config(run_dir)
    data = str(config.get("data", ""))
    ds = load_dataset(
        data, image_size=predictor.image_size, seed=int(config.get("seed", 0)), data_dir=config.get("data_dir"), download=False
    )
    if list(ds.classes) != list(predictor.classes):
        raise PlaygroundError(f"the data {data} no longer has the run's classes")
    if len(ds.train) < 20 or len(ds.test) < 20:
        raise PlaygroundError(f"the data {data} has too few images to learn what they look like")
    started = time.perf_counter()
    probe = _sample(ds.test, 64, seed=1)
    features(predictor, tap, probe.images)
    affordable = int(BUDGET_S * len(probe) / max(time.perf_counter() - started, 1e-6))
    n_held = min(len(ds.test), CALIBRATION_IMAGES, max(MIN_CALIBRATION, affordable // 3))
    n_bank = min(len(ds.train), BANK_IMAGES, max(MIN_BANK, affordable - n_held))
    bank, held = _sample(ds.train, n_bank, seed=0), _sample(ds.test, n_held, seed=1)
    ref = Reference.fit(features(predictor, tap, bank.images), bank.images, features(predictor, tap, held.images), held.images)
    ref.info["data"] = data
    return ref


def load_or_fit(predictor: Predictor, tap: FeatureTap, run_dir: Path) -> Reference:
    """The run's cached reference when it belongs to the current checkpoint, else a new fit (cached when possible)."""
    try:
        mtime = str((run_dir / runs.CHECKPOINT_FILE).stat().st_mtime_ns)
    except OSError:
        raise PlaygroundError(f"run {run_dir.name} has no checkpoint") from None
    path = run_dir / OOD_FILE
    if path.exists():
        try:
            ref = Reference.load(path)
            if ref.info.get("checkpoint_mtime_ns") == mtime and ref.info.get("torch") == torch.__version__:
                return ref
        except Exception:  # noqa: BLE001 - a damaged or old cache is refitted, never trusted
            pass
    ref = fit_for_run(predictor, tap, run_dir)
    try:
        ref.save(path, checkpoint_mtime_ns=mtime, torch=torch.__version__)
    except OSError:
        pass  # a read-only run folder: fit again next time
    return ref


@dataclass
class OODCheck:
    """What a Predictor needs to flag unusual images: the feature tap and the fitted reference (or why not)."""

    tap: FeatureTap | None = None
    reference: Reference | None = None
    unavailable: str = ""  # why there is no check (uploaded weights, the data is no longer there, ...)

    @classmethod
    def for_predictor(cls, predictor: Predictor) -> OODCheck:
        run_dir = getattr(predictor, "run_dir", None)
        if run_dir is None:
            return cls(unavailable="there are no training images to compare with (uploaded weights)")
        try:
            tap = FeatureTap(predictor.model, predictor.input_size, predictor.device)
            return cls(tap, load_or_fit(predictor, tap, Path(run_dir)))
        except PlaygroundError as exc:
            return cls(unavailable=str(exc))

    def capture(self) -> contextlib.AbstractContextManager:
        return self.tap.capture() if self.tap is not None and self.reference is not None else contextlib.nullcontext([])

    def scores(self, captured: list[torch.Tensor], images: torch.Tensor) -> list[float | None]:
        """Per image of the uint8 batch just classified inside capture(): its score, or None without a check."""
        if self.reference is None or not captured:
            return [None] * len(images)
        return self.reference.score(self.reference.distances(captured[0], images.cpu())).tolist()

    def assess(self, probs: torch.Tensor, classes: list[str], score: float | None) -> dict[str, Any]:
        """The `ood` and `warning` fields of a prediction, in plain words."""
        p, index = (float(v) for v in probs.max(dim=0))
        label = classes[int(index)]
        ood = None
        if score is not None and self.reference is not None:
            ood = {
                "score": round(score, 4),
                "threshold": round(self.reference.threshold, 4),
                "unusual": bool(score > self.reference.threshold),
            }
        warning = None
        if ood and ood["unusual"]:
            data = self.reference.info.get("data", "")
            seen = f" ({DataSpec.parse(data).name()})" if data else ""
            warning = (
                f"This picture is unlike the images the model was trained on{seen}, so “{label}” ({p:.0%}) "
                "is only the closest of the classes it knows, not a recognition."
            )
        elif p < LOW_CONFIDENCE:
            warning = f"The model is unsure: its best guess, “{label}”, gets only {p:.0%}."
        return {"ood": ood, "warning": warning}
