"""Helpers for the Predict page: cached predictors, sample images, result tables."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core.data.datasets import SHAPES_CLASSES, shapes_dataset
from core.data.images import open_image
from core.errors import PlaygroundError
from core.insight.predict import Predictor
from core.serving import runs

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
WEIGHT_TYPES = ["pt", "pth", "safetensors"]


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def run_predictor(run_dir: str, checkpoint_mtime: float) -> Predictor:
    # The checkpoint's mtime is part of the key: a resumed run's new weights are picked up.
    return Predictor.from_run(run_dir)


def predictor_for_run(run_dir: Path) -> Predictor:
    checkpoint = run_dir / runs.CHECKPOINT_FILE
    if not checkpoint.exists():
        raise PlaygroundError(f"Run {run_dir.name} has no checkpoint yet (it saves one after each epoch).")
    return run_predictor(str(run_dir), checkpoint.stat().st_mtime)


@st.cache_resource(max_entries=3, show_spinner="Loading the weights…")
def _uploaded_predictor(
    digest: str,
    _payload: bytes,
    name: str,
    model: str | list[dict],
    classes: tuple[str, ...],
    input_size: int | None,
    info_json: str | None,
) -> Predictor:
    # from_weights reads a path (the suffix picks safetensors or torch). The file keeps the name the user
    # uploaded, inside a private temporary folder, so every message names their file.
    info = json.loads(info_json) if info_json else None
    with tempfile.TemporaryDirectory(prefix="upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(_payload)
        return Predictor.from_weights(path, model, classes=list(classes) or None, input_size=input_size, info=info)


def _safe_name(name: str, suffix: str) -> str:
    """The uploaded file's own name, usable as a file name (no folders, not too long)."""
    stem = Path(name).stem.replace("\x00", "")[:120].strip() or "weights"
    return stem + suffix


def weights_info_upload(upload) -> dict | None:
    """The JSON that came with exported weights (classes, normalization, sizes, architecture), checked."""
    if upload is None:
        return None
    return runs.read_weights_info(upload.getvalue(), upload.name)


def predictor_for_upload(
    upload, model: str | list[dict], classes: Sequence[str], input_size: int | None, info: dict | None = None
) -> Predictor:
    payload = upload.getvalue()
    suffix = Path(upload.name).suffix.lower()
    if suffix not in (".pt", ".pth", ".safetensors"):
        raise PlaygroundError(f"{upload.name}: weights must be a .pt / .pth state_dict or a .safetensors file.")
    # The digest stands for the bytes in the cache key (the leading underscore keeps them out of hashing).
    return _uploaded_predictor(
        hashlib.sha1(payload).hexdigest(),
        payload,
        _safe_name(upload.name, suffix),
        model,
        tuple(classes),
        input_size,
        json.dumps(info, sort_keys=True) if info else None,
    )


def architecture_of(info: dict | None) -> str | list[dict] | None:
    """The model a weights JSON names: a preset name or a custom layer spec."""
    if not info or not info.get("model"):
        return None
    return info.get("layers") if info["model"] == "custom" else info["model"]


@st.cache_data(show_spinner=False)
def sample_shapes(n: int = 4, seed: int = 7) -> list[tuple[str, bytes]]:
    """A few PNG shapes from outside the training stream, so a learner needs no photo at hand."""
    ds = shapes_dataset(n_train=10, n_test=max(n, 10), seed=seed)
    out = []
    for image, label in list(zip(ds.test.images, ds.test.labels.tolist()))[:n]:
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).resize((128, 128), Image.Resampling.NEAREST).save(buffer, "PNG")
        out.append((f"sample-{SHAPES_CLASSES[label]}.png", buffer.getvalue()))
    return out


def thumbnail(payload: bytes, name: str, side: int = 320) -> Image.Image:
    img = open_image(payload, name=name)
    img.thumbnail((side, side))
    return img


def model_view(predictor: Predictor, payload: bytes, name: str, side: int = 160) -> np.ndarray:
    """The model's input at its own resolution, enlarged with square pixels so a 32x32 input looks like what it is."""
    image = predictor.model_view(predictor.prepare(payload, name)).permute(1, 2, 0).numpy()
    factor = max(1, side // image.shape[0])
    return image.repeat(factor, 0).repeat(factor, 1)


def results_table(results: list[dict[str, Any]], k: int) -> pd.DataFrame:
    """Every file's top-k answers (and, for a file that could not be read, why): the CSV download."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"file": r["file"]}
        for i, t in enumerate(r.get("top", [])[:k], start=1):
            row[f"top{i}"] = t["label"]
            row[f"p{i}"] = round(t["prob"], 4)
        row["error"] = r.get("error", "")
        rows.append(row)
    return pd.DataFrame(rows)


def results_section(results: list[dict[str, Any]], k: int) -> None:
    """The answers of every file in one table, and the files that could not be read under it, each with the
    whole reason: a table cell would show a failed file's answers as "None" and cut its message short."""
    answered = [r for r in results if "error" not in r]
    if answered:
        table = results_table(answered, k).drop(columns="error")
        table[[c for c in table if c.startswith("p")]] = table[[c for c in table if c.startswith("p")]].round(3)  # 13.1%, not 13.08%
        st.dataframe(
            table,
            hide_index=True,
            column_config={c: st.column_config.NumberColumn(c, format="percent") for c in table if c.startswith("p")},
        )
    failed = [r for r in results if "error" in r]
    if failed:
        st.warning(
            f"Not classified ({len(failed)} of {len(results)} files):\n"
            + "\n".join(f"- {r['error']}" if r["file"] in r["error"] else f"- **{r['file']}**: {r['error']}" for r in failed),
            icon=":material/block:",
        )
    table = results_table(results, k)
    st.download_button(
        "Results as CSV",
        table.to_csv(index=False).encode(),
        "predictions.csv",
        "text/csv",
        icon=":material/download:",
        on_click="ignore",
    )
