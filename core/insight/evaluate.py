"""`python -m core.evaluate RUN_DIR --data SPEC [--mistakes N]`: score a trained run on a dataset.

One pass keeps every test image's prediction, probabilities and loss (`Predictions`), so the
same numbers give the accuracy, the confusion matrix, the images in any of its cells, the
mistakes the model is most sure of, and the pairs of classes it mixes up most. The pass uses
the run's own eval preprocessing (core.insight.predict.Predictor), exactly as a photo on the Predict page.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.data.datasets import Split, load_dataset, load_eval_split
from core.errors import PlaygroundError, command
from core.insight.predict import Predictor
from core.serving import runs


@dataclass
class Predictions:
    """Per test image: its label, the model's probabilities and loss; index i is image i of the split."""

    classes: list[str]
    labels: np.ndarray  # int64 (N,)
    probs: np.ndarray  # float32 (N, C), softmax of the logits (averaged over flips when the run uses TTA)
    losses: np.ndarray  # float32 (N,), cross-entropy of each image
    files: list[str] | None = None  # the image files, for data read from files

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def wrong(self) -> np.ndarray:
        return self.preds != self.labels

    def confusion(self) -> np.ndarray:
        """(C, C) counts; row = true class, column = prediction."""
        c = len(self.classes)
        return np.bincount(self.labels * c + self.preds, minlength=c * c).reshape(c, c)

    def summary(self) -> dict[str, Any]:
        cm = self.confusion()
        n = int(cm.sum())
        per_class = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
        return {
            "accuracy": float(cm.diagonal().sum()) / max(1, n),
            "n": n,
            "per_class": {name: float(acc) for name, acc in zip(self.classes, per_class)},
            "confusion": cm.tolist(),
        }

    def by_loss(self, index: np.ndarray) -> np.ndarray:
        """`index` reordered by loss, largest first (ties: lower index first, so the order is stable)."""
        return index[np.lexsort((index, -self.losses[index]))]

    def cell(self, true: int, pred: int) -> np.ndarray:
        """The images of one confusion-matrix cell, the ones the model got most wrong first."""
        return self.by_loss(np.flatnonzero((self.labels == true) & (self.preds == pred)))

    def image(self, i: int) -> dict[str, Any]:
        """One image's record: `index`, `file` (when known), `true`, `pred`, `prob` (of `pred`), `loss`."""
        pred = int(self.probs[i].argmax())
        row: dict[str, Any] = {"index": int(i)}
        if self.files is not None:
            row["file"] = self.files[i]
        return row | {
            "true": self.classes[int(self.labels[i])],
            "pred": self.classes[pred],
            "prob": round(float(self.probs[i, pred]), 6),
            "loss": round(float(self.losses[i]), 6),
        }

    def mistakes(self, n: int | None = None) -> list[dict[str, Any]]:
        """The misclassified images with the highest loss, largest first."""
        order = self.by_loss(np.flatnonzero(self.wrong))
        return [self.image(i) for i in order[: n if n is not None else len(order)]]

    def most_confused(self, n: int | None = None) -> list[dict[str, Any]]:
        """Off-diagonal cells of the confusion matrix with a count, largest first."""
        cm = self.confusion()
        pairs = [(int(cm[t, p]), t, p) for t in range(len(self.classes)) for p in range(len(self.classes)) if t != p and cm[t, p]]
        pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
        return [{"true": self.classes[t], "pred": self.classes[p], "count": count} for count, t, p in pairs[:n]]


@torch.no_grad()
def predict_split(predictor: Predictor, split: Split, classes: list[str], batch_size: int | None = None) -> Predictions:
    """Every image of `split` through the model, keeping each one's probabilities and loss (in batches of the
    predictor's `eval_batch`, as the run's own test pass, unless `batch_size` says otherwise)."""
    batch_size = batch_size or predictor.eval_batch
    if list(classes) != list(predictor.classes):
        raise PlaygroundError(
            f"The data's classes ({', '.join(classes[:6])}...) differ from the run's "
            f"({', '.join(predictor.classes[:6])}...); evaluate on data with the same class folders."
        )
    probs, losses = [], []
    for start in range(0, len(split), batch_size):
        logits = predictor.logits(split.images[start : start + batch_size])
        labels = split.labels[start : start + batch_size]
        probs.append(logits.softmax(dim=1))
        losses.append(F.cross_entropy(logits, labels, reduction="none"))
    c = len(classes)
    return Predictions(
        list(classes),
        split.labels.numpy().astype(np.int64),
        torch.cat(probs).numpy() if probs else np.zeros((0, c), np.float32),
        torch.cat(losses).numpy() if losses else np.zeros(0, np.float32),
        split.files,
    )


def run_test_split(run_dir: str | os.PathLike, predictor: Predictor | None = None) -> tuple[Split, list[str]]:
    """The test images the run itself was scored on while training (its held-out split, same seed)."""
    config = runs.read_config(run_dir)
    predictor = predictor or Predictor.from_run(run_dir)
    ds = load_dataset(
        str(config["data"]), image_size=predictor.image_size, seed=int(config.get("seed", 0)), data_dir=config.get("data_dir")
    )
    return ds.test, ds.classes


def evaluate_run(
    run_dir: str | os.PathLike, data: str, device: str = "cpu", data_dir: str | None = None, mistakes: int | None = None
) -> dict[str, Any]:
    """Accuracy on the data's test/val split (or every image when it has none), per class by name;
    with `mistakes`, also the N worst mistakes and the most confused pairs."""
    predictor = Predictor.from_run(run_dir, device=device)
    config = runs.read_config(run_dir)
    split, classes = load_eval_split(data, image_size=predictor.image_size, seed=int(config.get("seed", 0)), data_dir=data_dir)
    result = predict_split(predictor, split, list(classes))
    out = result.summary()
    if mistakes is not None:
        out |= {"mistakes": result.mistakes(mistakes), "most_confused": result.most_confused()}
    return out


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.evaluate", description="Score a trained run on a dataset.")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="cifar10 | shapes | imagefolder:PATH")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir")
    p.add_argument(
        "--mistakes",
        type=int,
        metavar="N",
        help="also list the N misclassified images with the highest loss, and the most confused class pairs",
    )
    args = p.parse_args(argv)
    if args.mistakes is not None and args.mistakes < 0:
        p.error("--mistakes must be 0 or more")
    result = evaluate_run(args.run_dir, args.data, args.device, args.data_dir, mistakes=args.mistakes)
    print(json.dumps(result))
    return 0
