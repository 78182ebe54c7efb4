"""The Train form's "Pretrained + fine-tune" model picker: any torchvision classification network and its weights.

torchvision's own list (`torchvision.models.list_models`), each with its weights enums; the numbers a learner
compares networks by come from the weights' metadata, and the image size and normalization from the weights'
transforms. Weights that are not on this computer yet are downloaded when Start is pressed, before the run is made:
offline, the picker then says so (the file, where to get it) and offers the ways on that need no network.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.data import datasets
from core.errors import PlaygroundError
from core.models import backbones, presets
from studio import workspace
from studio.widgets import guard

WEIGHT_FILE_TYPES = ["pth", "pt", "safetensors"]
SIZES = [32, 64, 96, 128, 160, 224]
UPLOAD, PATH, NONE = "\0upload", "\0path", "\0none"
SCRATCH_FIELDS = "_offline_scratch_fields"  # {field key: value} the from-scratch way on starts at (set for few pictures)
UNREACHABLE = "_weights_unreachable"  # {"<network>/<weights>": why}: downloads that failed at Start in this session
SCRATCH_COST = (
    "{preset} needs no download, but it starts from random weights: it knows nothing about images yet and learns "
    "only from your own pictures, so with few of them it usually reaches a lower test accuracy than a pretrained "
    "network would."
)
WEIGHT_LABELS = {
    UPLOAD: "Upload a weights file (.pth / .safetensors)…",
    PATH: "A weights file on this computer…",
    NONE: "None: train from scratch",
}


def networks() -> list[str]:
    """The presets built by torchvision first (with their CIFAR-friendly set-ups), then every other torchvision network."""
    return list(presets.TORCHVISION_MODELS) + [n for n in presets.torchvision_classifiers() if n not in presets.PRESETS]


def label(name: str) -> str:
    if name in presets.PRESETS:
        return f"{presets.PRESETS[name].title} ({name})"
    return name + (" · recommended for few pictures" if name == presets.SMALL_DATA_BACKBONE else "")


def _count(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} K"


def describe(name: str, choice: str = "DEFAULT") -> str:
    """'2.5 M parameters · ImageNet top-1 67.7% · 0.06 GFLOPs · 9.8 MB · sees 224 x 224'."""
    info = backbones.weights_summary(name, choice)
    parts = [f"{_count(info['params'])} parameters"]
    if info["top1"] is not None:
        parts.append(f"ImageNet top-1 {info['top1']:.1f}%")
    if info["gflops"] is not None:
        parts.append(f"{info['gflops']:.2f} GFLOPs / image")
    if info["file_mb"] is not None:
        parts.append(f"{info['file_mb']:.0f} MB of weights")
    parts.append(f"made for {info['crop_size']} x {info['crop_size']}")
    return " · ".join(parts)


def _weights_file(name: str) -> str | None:
    """An uploaded weights file, saved in the data folder (so the training process can read it), as a path."""
    info = backbones.weights_summary(name)
    upload = st.file_uploader(
        "Weights file",
        type=WEIGHT_FILE_TYPES,
        key=f"weights-file-{name}",
        max_upload_size=workspace.upload_cap_mb(),
        help=f"torchvision's file for {name} is {info['file_name']} ({info['url']}); a state_dict "
        "saved with torch.save(model.state_dict(), path) or a .safetensors file also works.",
    )
    return str(datasets.save_upload(upload.name, upload.getvalue())) if upload is not None else None


def pretrained_picker() -> dict[str, Any] | None:
    """{"model", "weights", "freeze_backbone", "image_size"} for a torchvision network, or None until it is ready."""
    every = networks()
    name = st.selectbox(
        "Network",
        every,
        key="pretrained_name",
        format_func=label,
        help=f"All {len(every)} classification networks in torchvision; type to search (e.g. efficientnet, convnext, vit).",
    )
    shared = workspace.settings().shared  # no server paths when shared
    options = backbones.weight_choices(name) + [UPLOAD] + ([] if shared else [PATH]) + [NONE]
    choice = st.selectbox("Start from weights", options, key=weights_key(name), format_func=lambda w: WEIGHT_LABELS.get(w, f"ImageNet {w}"))
    named = choice if choice in backbones.weight_choices(name) else "DEFAULT"
    with guard():
        st.caption(describe(name, named))
    weights: str | None = choice
    if choice == UPLOAD:
        weights = _weights_file(name)
    elif choice == PATH:
        weights = st.text_input("Weights file", key="weights_path", placeholder="/path/to/weights.pth").strip() or None
    elif choice == NONE:
        weights = None
    elif not backbones.weights_cached(name, choice):
        why = st.session_state.get(UNREACHABLE, {}).get(f"{name}/{choice}")
        if why:
            _offline_ways_on(name, choice, why)
            return None  # Start stays off: the run would fail the same way
        info = backbones.weights_summary(name, choice)
        size_mb = f" ({info['file_mb']:.0f} MB)" if info["file_mb"] else ""
        st.warning(
            f"The {name} {choice} weights{size_mb} are not on this computer yet: **Start** downloads them "
            f"first, which needs internet. **Offline?** Download [{info['file_name']}]({info['url']}) on another "
            f"computer and choose *Upload a weights file*, or train {presets.OFFLINE_PRESET} from scratch.",
            icon=":material/cloud_off:",
        )
    if choice in (UPLOAD, PATH) and weights is None:
        return None
    freeze = st.toggle(
        "Freeze the backbone: train only the new head",
        value=True,
        key="freeze",
        disabled=choice == NONE,
        help="The ImageNet classifier is replaced by a new one with your classes. Frozen: only it trains "
        "(fast, good with little data). Unfrozen: everything is fine-tuned.",
    )
    size = _image_size(name, named)
    return {"model": name, "weights": weights, "freeze_backbone": bool(freeze and choice != NONE), "image_size": size}


def weights_key(name: str) -> str:
    """The session-state key of a network's *Start from weights* choice."""
    return f"weights-{name}"


def _offline_ways_on(name: str, choice: str, why: str) -> None:
    """The download failed at Start: why, and what works without a network (the buttons change the form)."""
    st.error(why, icon=":material/cloud_off:")
    with st.container(horizontal=True):
        st.button("Upload the weights file", icon=":material/upload_file:", on_click=_set, kwargs={weights_key(name): UPLOAD})
        st.button(
            f"Train {presets.OFFLINE_PRESET} from scratch",
            icon=":material/wifi_off:",
            on_click=_set,
            kwargs={"model_kind": "preset", "preset_name": presets.OFFLINE_PRESET, **st.session_state.get(SCRATCH_FIELDS, {})},
        )
        st.button("Try the download again", icon=":material/refresh:", on_click=_forget, args=(name, choice), type="tertiary")
    st.caption(SCRATCH_COST.format(preset=presets.OFFLINE_PRESET))


def _set(**values: Any) -> None:
    st.session_state.update(values)


def _forget(name: str, choice: str) -> None:
    st.session_state.get(UNREACHABLE, {}).pop(f"{name}/{choice}", None)


def fetch_weights(model: dict[str, Any] | None) -> bool:
    """At Start: torchvision weights the run needs are downloaded here first, with a progress bar, so that offline
    the form says so instead of starting a run that fails. False when they cannot be (the picker then shows why)."""
    if not model or not backbones.is_weights_name(model["model"], model.get("weights")):
        return True
    name, choice = model["model"], str(model["weights"])
    if backbones.weights_cached(name, choice):
        return True
    file_name = backbones.weights_summary(name, choice)["file_name"]
    bar = st.progress(0.0, text=f"Downloading {file_name}…")

    def show(done: int, total: int) -> None:
        bar.progress(min(done / total, 1.0) if total else 0.0, text=f"Downloading {file_name}: {done / 1e6:.0f} MB")

    try:
        backbones.download_weights(name, choice, progress=show)
    except PlaygroundError as exc:
        st.session_state.setdefault(UNREACHABLE, {})[f"{name}/{choice}"] = str(exc)
        return False
    finally:
        bar.empty()
    return True


def _image_size(name: str, choice: str) -> int:
    try:
        info = backbones.weights_summary(name, choice)
    except PlaygroundError:
        info = {"crop_size": backbones.preset_input_size(name), "min_size": 1}
    own = backbones.preset_input_size(name) if name in presets.PRESETS else info["crop_size"]
    if backbones.fixed_input_size(name):
        st.caption(f"{name} works only at the size it was made for: {own} x {own} pixels.")
        return own
    sizes = sorted({s for s in SIZES if s >= info["min_size"]} | {own})
    return int(
        st.select_slider(
            "Image size the network sees",
            sizes,
            value=own,
            key=f"size-{name}",
            help=f"Images are resized to this. {name}'s weights were made for {info['crop_size']} "
            "pixels; smaller is faster but sees less detail.",
        )
    )
