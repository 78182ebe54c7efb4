"""`python -m core.evaluate RUN_DIR --data SPEC`: score a trained run on a dataset."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch

from core import runs
from core.data import load_eval_split
from core.errors import PlaygroundError
from core.predict import Predictor
from core.train import Normalization, evaluate


def evaluate_run(run_dir: str | os.PathLike, data: str, device: str = "cpu", data_dir: str | None = None) -> dict[str, Any]:
    """Accuracy on the data's test/val split (or every image when it has none), per class by name."""
    predictor = Predictor.from_run(run_dir, device=device)
    config = runs.read_config(run_dir)
    split, classes = load_eval_split(data, image_size=predictor.image_size, seed=int(config.get("seed", 0)), data_dir=data_dir)
    if list(classes) != list(predictor.classes):
        raise PlaygroundError(f"The data's classes ({', '.join(classes[:6])}...) differ from the run's "
                              f"({', '.join(predictor.classes[:6])}...); evaluate on data with the same class folders.")
    result = evaluate(predictor.model, split, Normalization(predictor.mean, predictor.std), predictor.input_size,
                      predictor.device, torch.float32, tta=predictor.tta, num_classes=len(classes),
                      channels_last=False)
    return {"accuracy": result["test_acc"], "n": result["n"],
            "per_class": {name: acc for name, acc in zip(classes, result["per_class"])},
            "confusion": result["confusion"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.evaluate", description="Score a trained run on a dataset.")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="cifar10 | shapes | imagefolder:PATH")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    try:
        result = evaluate_run(args.run_dir, args.data, args.device, args.data_dir)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
