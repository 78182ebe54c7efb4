"""The Predict page: the model (a trained run or uploaded weights), the pictures, and what it answers.

Each upload is decoded once and run through the model once (`look_at`), whatever the page then shows of it: the
thumbnail, the answer, what the model sees and the "where does it look?" overlay all reuse that one decoded picture
and its probabilities, and a rerun (a toggle, another top-k, a class picked for the overlay) neither decodes nor
classifies it again.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch
from PIL import Image

from core.data.datasets import SHAPES_CLASSES, shapes_dataset
from core.data.images import open_image, prepare_image
from core.errors import PlaygroundError
from core.insight.predict import Predictor
from core.models.presets import PRESETS
from core.serving import runs
from studio import arch, workspace
from studio import explain_view as ev
from studio.charts import topk_figure
from studio.state import all_runs
from studio.widgets import choice, guard, run_labels

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
WEIGHT_TYPES = ["pt", "pth", "safetensors"]
GALLERY = 12  # images shown in full; the table below has all of them
THUMBNAIL_SIDE = 320  # the picture kept of an upload: the page shows it at 200 px or less, the overlay is drawn on it
KEPT = 64  # uploads remembered per browser session
BATCH = 64  # uploads classified per forward pass


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


@dataclass
class Seen:
    """One upload as the page knows it: decoded once, classified once by one model."""

    name: str
    key: str  # the upload's bytes (hashed) and name: what the session remembers it by
    image: Image.Image | None = None  # the picture, at most THUMBNAIL_SIDE on its longer side
    prepared: torch.Tensor | None = None  # uint8 (3, S, S), what `Predictor.prepare` makes of it
    probs: torch.Tensor | None = None
    note: dict[str, Any] = field(default_factory=dict)  # "ood" and "warning" (core.insight.ood)
    error: str | None = None  # why it could not be read

    def result(self, predictor: Predictor, k: int) -> dict[str, Any]:
        """As `Predictor.predict` gives it: {"file", "top", "ood", "warning"} or {"file", "error"}."""
        if self.error is not None:
            return {"file": self.name, "error": self.error}
        return {"file": self.name, "top": predictor.topk(self.probs, k), **self.note}


def look_at(predictor: Predictor, files: list[tuple[str, bytes]]) -> list[Seen]:
    """Every upload decoded and classified once for this predictor, and remembered in the session by its bytes."""
    memory = st.session_state.setdefault("_predict_seen", {"model": None, "seen": OrderedDict()})
    if memory["model"] is None or memory["model"]() is not predictor:  # another model: nothing seen yet
        memory["model"], memory["seen"] = weakref.ref(predictor), OrderedDict()
    seen: OrderedDict[str, Seen] = memory["seen"]
    keys = [f"{hashlib.sha1(payload).hexdigest()}-{name}" for name, payload in files]
    fresh: dict[str, Seen] = {}
    for key, (name, payload) in zip(keys, files):
        if key in seen or key in fresh:
            continue
        fresh[key] = item = Seen(name, key)
        try:
            image = open_image(payload, name=Path(name).name)
            item.prepared = prepare_image(image, predictor.image_size)
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            item.image = image
        except PlaygroundError as exc:
            item.error = str(exc)
    readable = [item for item in fresh.values() if item.error is None]
    for start in range(0, len(readable), BATCH):
        chunk = readable[start : start + BATCH]
        probs, notes = predictor.classify(torch.stack([item.prepared for item in chunk]))
        for item, p, note in zip(chunk, probs, notes):
            item.probs, item.note = p, note
    seen.update(fresh)  # only once classified: a failure here leaves nothing half-seen for the next rerun
    for key in keys:
        seen.move_to_end(key)
    while len(seen) > max(KEPT, len(keys)):
        seen.popitem(last=False)
    return [seen[key] for key in keys]


def model_view(predictor: Predictor, prepared: torch.Tensor, side: int = 160) -> np.ndarray:
    """The model's input at its own resolution, enlarged with square pixels so a 32x32 input looks like what it is."""
    image = predictor.model_view(prepared).permute(1, 2, 0).numpy()
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


# --------------------------------------------------------------------------- the page


def choose_model() -> Predictor | None:
    """A trained run, or uploaded weights with the architecture they belong to; None until one is ready."""
    source = choice("Model", {"run": "A trained run", "upload": "Upload weights"}, key="predict_source")
    with guard():
        return _run_model() if source == "run" else _uploaded_model()
    return None


def _run_model() -> Predictor | None:
    ready = [r for r in all_runs() if r.has_checkpoint]
    if not ready:
        st.info("No trained runs yet: train one on the Train page, or upload weights.")
        st.page_link("pages/train.py", label="Open Train →")
        return None
    ids = [r.run_id for r in ready]
    wanted = st.session_state.pop("predict_run", None)  # "Predict with it" on another page
    if wanted in ids:
        st.session_state["predict_pick"] = wanted
    default = next((r.run_id for r in ready if r.status == "finished"), ids[0])
    titles = run_labels(all_runs())  # numbered as on the Runs page where names repeat
    picked = st.session_state.get("predict_pick")
    pick = st.selectbox("Run", ids, index=ids.index(picked if picked in ids else default), format_func=titles.get)
    st.session_state["predict_pick"] = pick
    return predictor_for_run(runs.MODELS_DIR / pick)


def _uploaded_model() -> Predictor | None:
    c = st.columns([2, 2, 1])
    weights = c[0].file_uploader(
        "Weights (.pt state_dict or .safetensors)",
        type=WEIGHT_TYPES,
        key="weights_upload",
        max_upload_size=workspace.upload_cap_mb(),
        help="Whole pickled models are refused on purpose: loading a pickle can run any code.",
    )
    info_file = c[0].file_uploader(
        "The .json downloaded with them (optional)",
        type=["json"],
        key="weights_info_upload",
        max_upload_size=workspace.upload_cap_mb(),
        help="Classes, normalization, input size and architecture of exported weights.",
    )
    info = None
    with guard():
        info = weights_info_upload(info_file)
    named = architecture_of(info)
    saved = {f"saved: {a['name']}": a for a in arch.saved_architectures()}
    if named is None:
        chosen = c[1].selectbox(
            "Architecture the weights belong to",
            list(PRESETS) + list(saved),
            format_func=lambda n: f"{PRESETS[n].title} ({n})" if n in PRESETS else n,
        )
    else:
        c[1].text_input(
            "Architecture the weights belong to",
            "custom layers" if isinstance(named, list) else named,
            disabled=True,
            help=f"From {info_file.name}.",
        )
    size = c[2].number_input("Input size", 0, 512, 0, help="0: the size saved with the weights, else the preset's.")
    names = st.text_input(
        "Class names, comma-separated (optional)",
        placeholder=", ".join(SHAPES_CLASSES),
        help="Exports from this studio carry their class names in the .json; other files need them here.",
    )
    if weights is None:
        return None
    model = named if named is not None else saved[chosen]["layers"] if chosen in saved else chosen
    classes = [n.strip() for n in names.split(",") if n.strip()]
    return predictor_for_upload(weights, model, classes, int(size) or None, info)


def choose_images(predictor: Predictor) -> tuple[list[tuple[str, bytes]], int]:
    """(name, bytes) of every picture to classify (the camera's first), and how many answers to show for each."""
    st.caption(
        f"{len(predictor.classes)} classes ({', '.join(predictor.classes[:10])}"
        f"{', …' if len(predictor.classes) > 10 else ''}) · the model sees {predictor.input_size} x "
        f"{predictor.input_size} pixels"
    )
    c = st.columns([4, 1])
    uploads = c[0].file_uploader(
        "Images",
        type=IMAGE_TYPES,
        accept_multiple_files=True,
        key="images",
        max_upload_size=workspace.upload_cap_mb(),
        help="JPEG, PNG, WEBP, BMP, GIF or TIFF; one or many.",
    )
    k = c[1].number_input("Top-k", 1, min(10, len(predictor.classes)), min(5, len(predictor.classes)))
    files = [(u.name, u.getvalue()) for u in uploads or []]
    if st.toggle(
        "Camera",
        key="predict_camera",
        help="Point this computer's camera at an object and take a picture: the answer appears below, first. Take another to try again.",
    ):
        shot = st.camera_input("Take a picture", key="predict_shot")
        if shot is not None:
            files.insert(0, ("camera.jpg", shot.getvalue()))
    if list(predictor.classes) == list(SHAPES_CLASSES) and st.toggle("Add sample shapes (no picture at hand?)", key="samples"):
        files += sample_shapes()
    return files, int(k)


def show_predictions(predictor: Predictor, files: list[tuple[str, bytes]], k: int) -> None:
    """Each picture's answer with what the model sees (and, asked for, where it looks); then all of them in a table."""
    if not files:
        st.info("Upload one or more images to see what the model thinks they are.")
        return
    with guard():
        ev.ensure_ood(predictor)
        seen = look_at(predictor, files)
        results = [item.result(predictor, k) for item in seen]
        ev.softmax_note(results)
        for i, (item, result) in enumerate(list(zip(seen, results))[:GALLERY]):
            with st.container(border=True):
                _one_answer(predictor, item, result, key=f"{i}-{item.name}", chart_key=f"topk-{i}")
        if len(files) > GALLERY:
            st.caption(f"Showing the first {GALLERY} of {len(files)} images; the table has them all.")
        if len(files) > 1:
            results_section(results, k)


def _one_answer(predictor: Predictor, item: Seen, result: dict[str, Any], key: str, chart_key: str) -> None:
    if item.error is not None:
        st.error(item.error if item.name in item.error else f"**{item.name}**: {item.error}", icon=":material/block:")
        return
    st.markdown(ev.headline(item.name, result))
    ev.warning(result)
    look = ev.controls(predictor, result, key=key)
    # The pictures side by side with their tops in line (captions differ in length), the chart centred.
    pictures, chart = st.columns([6, 3] if look else [4, 5], vertical_alignment="center")
    cols = pictures.columns(3 if look else 2, vertical_alignment="top")
    side = ev.IMAGE_SIDE if look else 200
    cols[0].image(item.image, caption="your image", width=side)
    cols[1].image(
        model_view(predictor, item.prepared),
        caption=f"what the model sees ({predictor.input_size} x {predictor.input_size})",
        width=side,
    )
    explanation = ev.show_overlay(cols[2], predictor, item.key, item.image, item.prepared, item.probs, *look) if look else None
    chart.plotly_chart(topk_figure(result["top"]), key=chart_key)
    if explanation is not None:
        ev.legend(explanation)
