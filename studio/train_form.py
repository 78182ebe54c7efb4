"""The Train page's set-up: dataset, model and hyperparameters -> TrainConfig overrides.

Only settings the user moved away from the model's recipe are passed on, so
`TrainConfig.for_model` keeps each preset's tuned values (e.g. speedrun's)
for everything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from core.data import datasets
from core.data.spec import SHAPES_TEST, SHAPES_TRAIN, DataSpec
from core.device import DEVICE_CHOICES, PRECISION_CHOICES, uses_gpu
from core.models.build import build
from core.models.presets import PRESETS, TORCHVISION_MODELS, recipe_for
from core.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
from studio import arch, backbones, classes_view, loss_picker, workspace
from studio.widgets import guard

SHAPES_SIZES = [600, 2000, 6000, SHAPES_TRAIN]
DEFAULT_EPOCHS = 8  # for recipes that leave epochs open: cifar10_quick on shapes, ~90% in about a minute on a 2-core CPU
# Short labels: all five fit the half-width column without scrolling (the help says the rest).
DATA_KINDS = {"shapes": "Shapes", "classes": "Your classes", "cifar10": "CIFAR-10", "zip": ".zip", "folder": "Folder"}
DATA_HELP = (
    "**Shapes**: ten classes of drawn shapes, offline. **Your classes**: name classes and add your own pictures "
    "(upload or camera). **CIFAR-10**: 60,000 small photos (one download). **.zip**: upload a .zip of class "
    "folders. **Folder**: a folder of class folders on this computer."
)
MODEL_KINDS = {"preset": "Preset", "saved": "Saved architecture", "pretrained": "Pretrained + fine-tune"}


# --------------------------------------------------------------------------- data


@st.cache_data(show_spinner=False)
def _shape_samples() -> list[tuple[np.ndarray, str]]:
    ds = datasets.shapes_dataset(n_train=20, n_test=10, seed=3)
    seen: dict[int, np.ndarray] = {}
    for image, label in zip(ds.train.images, ds.train.labels.tolist()):
        seen.setdefault(label, image.permute(1, 2, 0).numpy().repeat(3, 0).repeat(3, 1))
    return [(seen[i], datasets.SHAPES_CLASSES[i]) for i in sorted(seen)]


def data_picker() -> str | None:
    shared = workspace.settings().shared  # a shared server reads no folder of its own on a user's behalf
    kinds = [k for k in DATA_KINDS if not (shared and k == "folder")]
    kind = st.segmented_control(
        "Dataset", kinds, format_func=DATA_KINDS.get, default="shapes", required=True, key="data_kind", help=DATA_HELP
    )
    if kind == "shapes":
        n = st.select_slider(
            "Training images",
            SHAPES_SIZES,
            value=SHAPES_TRAIN,
            key="shapes_n",
            help=f"Ten classes of coloured shapes drawn on the fly ({SHAPES_TEST:,} test images). Fewer images: faster epochs, lower accuracy.",
        )
        st.image([img for img, _ in _shape_samples()], caption=[c for _, c in _shape_samples()], width=72)
        return str(DataSpec.shapes(n))
    if kind == "classes":
        return classes_view.data_source()
    if kind == "cifar10":
        if datasets.cifar10_available():
            st.success(f"CIFAR-10 is ready (60,000 photos, 10 classes) in `{datasets.DATA_DIR}`.")
            return "cifar10"
        st.info("CIFAR-10 (about 170 MB) is not downloaded yet. It needs an internet connection, once.")
        if st.button("Download CIFAR-10", icon=":material/download:"):
            bar = st.progress(0.0, text="Connecting…")

            def show(done: int, total: int) -> None:
                bar.progress(
                    min(done / total, 1.0) if total else 0.0, text=f"{done / 1e6:.0f} MB" + (f" of {total / 1e6:.0f} MB" if total else "")
                )

            with guard():
                datasets.download_cifar10(progress=show)
                st.rerun()
        return None
    if kind == "zip":
        cap = workspace.upload_cap_mb()
        upload = st.file_uploader(
            "A .zip of class folders",
            type=["zip"],
            key="data_zip",
            max_upload_size=cap,
            help=f"zip of <class>/<image> folders, or of train/ and test/ (or val/) folders of them. Up to {cap or 50} MB.",
        )
        if upload is None:
            st.caption("Example layout: `pets.zip` → `cat/1.jpg, cat/2.jpg, …, dog/1.jpg, …`")
            return None
        return str(DataSpec.folder_of(datasets.save_upload(upload.name, upload.getvalue())))
    path = st.text_input(
        "Folder on this computer",
        key="data_folder",
        placeholder="/home/me/pictures/pets",
        help="A folder of class folders, or with train/ and test/ (or val/) folders inside.",
    )
    if not path.strip():
        return None
    if not Path(path).expanduser().exists():
        st.error(f"{path} does not exist on the machine running the studio.")
        return None
    return str(DataSpec.folder_of(Path(path).expanduser()))


# --------------------------------------------------------------------------- model


@st.cache_data(show_spinner=False)
def _preset_problem(name: str) -> str | None:
    """Why a preset cannot be built here (e.g. its module is still missing), or None."""
    if PRESETS[name].torchvision:
        return None
    try:
        build(name)
    except Exception as exc:  # noqa: BLE001 - any failure means: do not offer to start it blindly
        return f"{type(exc).__name__}: {exc}"
    return None


def _apply_choice() -> None:
    """Preselect what the Architecture page sent over ("Use for training")."""
    choice = st.session_state.pop("train_choice", None)
    if not choice:
        return
    if choice["kind"] == "saved":
        st.session_state.update(model_kind="saved", saved_name=choice["name"])
    elif choice.get("freeze") and choice["name"] in TORCHVISION_MODELS:
        st.session_state.update(model_kind="pretrained", pretrained_name=choice["name"], freeze=True)
    else:
        st.session_state.update(model_kind="preset", preset_name=choice["name"])


def model_picker() -> dict[str, Any] | None:
    """{"model", and maybe "layers", "image_size", "weights", "freeze_backbone"}, or None if not ready."""
    _apply_choice()
    kind = st.segmented_control("Model", list(MODEL_KINDS), format_func=MODEL_KINDS.get, default="preset", required=True, key="model_kind")
    if kind == "preset":
        name = st.selectbox("Preset", list(PRESETS), key="preset_name", format_func=lambda n: f"{PRESETS[n].title} ({n})")
        st.caption(PRESETS[name].description)
        problem = _preset_problem(name)
        if problem:
            st.warning(f"{name} cannot be built on this installation yet ({problem}). Pick another preset.")
            return None
        return {"model": name}
    if kind == "saved":
        saved = {a["name"]: a for a in arch.saved_architectures()}
        if not saved:
            st.info("No saved architectures yet: build one on the Architecture page and press *Use for training*.")
            st.page_link("pages/architecture.py", label="Open Architecture →")
            return None
        name = st.selectbox("Saved architecture", list(saved), key="saved_name")
        chosen = saved[name]
        st.caption(
            f"{len(chosen['layers'])} layers · input {chosen['input_size']} x {chosen['input_size']}: "
            + " → ".join(layer["type"] for layer in chosen["layers"])
        )
        return {"model": "custom", "layers": chosen["layers"], "image_size": int(chosen["input_size"])}
    return backbones.pretrained_picker()


# --------------------------------------------------------------------------- hyperparameters


def base_config(model: str, device: str = "auto") -> TrainConfig:
    return TrainConfig.for_model(model, epochs=None if "epochs" in recipe_for(model) else DEFAULT_EPOCHS, device=device)


def _choice(where, label: str, options, value, key: str, help: str | None = None):
    return where.selectbox(label, options, index=list(options).index(value), key=key, help=help)


def _decimal(where, label: str, lowest: float, highest: float, value: float, key: str, help: str) -> float:
    """A number typed as people write it (0.001, 5e-4), not rounded to a fixed number of decimals."""
    return where.number_input(label, lowest, highest, float(value), format="%g", key=key, help=help)


def per_device_note(model: str) -> str | None:
    """The recipe's batch and lr on each kind of device, where they differ (a GPU takes bigger batches)."""
    cpu, gpu = base_config(model, "cpu"), base_config(model, "cuda")
    if (cpu.batch_size, cpu.lr, cpu.widths) == (gpu.batch_size, gpu.lr, gpu.widths):
        return None
    widths = f", widths {'/'.join(map(str, gpu.widths))}" if gpu.widths else ""
    return (
        f"This preset's recipe on a CUDA GPU: batch {gpu.batch_size}, lr {gpu.lr:g}{widths}; "
        f"on a CPU: batch {cpu.batch_size}, lr {cpu.lr:g}. The fields start at the recipe of the device chosen under More settings."
    )


def _field_prefix(model: str) -> str:
    """Widget keys of the hyperparameter fields: switching the device restarts them at that device's recipe."""
    return f"hp-{model}-gpu-" if uses_gpu(st.session_state.get(f"hp-{model}-dev", "auto")) else f"hp-{model}-"


def field_key(model: str, field: str) -> str:
    """A hyperparameter field's widget key ("batch", "epochs", "lr", ...): the lr finder and the small-data recipe fill them in."""
    return _field_prefix(model) + field


def lr_key(model: str) -> str:
    """The learning-rate field's widget key (the lr finder fills it in)."""
    return field_key(model, "lr")


def fields_model(model: dict[str, Any] | None) -> str:
    """Whose hyperparameter fields the form shows: the chosen model's, also while it is not ready to start (a
    weights file still to give), so switching the weights source keeps the fields and their values."""
    if model:
        return model["model"]
    kind = st.session_state.get("model_kind")
    chosen = st.session_state.get({"pretrained": "pretrained_name", "preset": "preset_name"}.get(kind, ""))
    return chosen if chosen in PRESETS or (kind == "pretrained" and chosen) else "custom"


def hyperparameters(model: str) -> dict[str, Any]:
    """Widgets start at the model's recipe for the chosen device; returns only what differs from it (epochs always)."""
    device_key = f"hp-{model}-dev"
    device = st.session_state.get(device_key, "auto")
    base = base_config(model, device)
    k = _field_prefix(model)
    values: dict[str, Any] = {}
    c = st.columns(4)
    values["epochs"] = c[0].number_input("Epochs", 1, 500, base.epochs, key=k + "epochs", help="Passes over the training images.")
    sizes = sorted({4, 8, 16, 32, 64, 128, 256, 512, 1024, base.batch_size})
    values["batch_size"] = c[1].select_slider(
        "Batch size",
        sizes,
        value=base.batch_size,
        key=k + "batch",
        help="Images per step. Bigger: faster per image, fewer steps per epoch.",
    )
    values["lr"] = _decimal(
        c[2], "Learning rate", 1e-6, 10.0, base.lr, lr_key(model), "Step size. Loss goes NaN: 10x smaller. Curve barely moves: larger."
    )
    values["optimizer"] = _choice(
        c[3], "Optimizer", OPTIMIZERS, base.optimizer, k + "opt", "AdamW adapts the step per parameter; SGD with momentum is the classic."
    )
    note = per_device_note(model)
    if note:
        st.caption(note)
    with st.expander("More settings"):
        c = st.columns(4)
        values["schedule"] = _choice(
            c[0], "LR schedule", SCHEDULES, base.schedule, k + "sched", "onecycle: warm up, then decay linearly to zero."
        )
        values["weight_decay"] = _decimal(
            c[1], "Weight decay", 0.0, 1.0, base.weight_decay, k + "wd", "Pulls weights towards zero; less overfitting."
        )
        values["seed"] = c[2].number_input("Seed", 0, 2**31 - 1, base.seed, key=k + "seed", help="Same seed, same run.")
        values["health"] = c[3].toggle(
            "Training health records",
            value=bool(base.health),
            key=k + "health",
            help="Per-layer update sizes, gradient norms and dead units about 10 times an epoch, for the Training health "
            "panel and its warnings (costs a few % of speed). Off: the warnings judge the loss and accuracy alone.",
        )
        c = st.columns(4)
        values["augment"] = c[0].toggle(
            "Augment (crop + flip)",
            value=bool(base.augment),
            key=k + "aug",
            help="Random shifts and mirror images each batch: more variety, less overfitting.",
        )
        values["device"] = _choice(c[1], "Device", DEVICE_CHOICES, device, device_key)
        values["precision"] = _choice(
            c[2], "Precision", PRECISION_CHOICES, base.precision, k + "prec", "auto: bf16 where the hardware is fast at it, else fp32."
        )
        limit = c[3].number_input(
            "Time limit (s, 0 = none)",
            0,
            24 * 3600,
            int(base.time_limit or 0),
            key=k + "limit",
            help="Stops with a checkpoint after this long; resume later.",
        )
        values["time_limit"] = float(limit) if limit else None
        values.update(loss_picker.pick(base, k))
    changed = {name: value for name, value in values.items() if value != getattr(base, name)}
    if values["augment"] == bool(base.augment):  # the recipe may spell it differently (e.g. "flip+crop")
        changed.pop("augment", None)
    changed["epochs"] = int(values["epochs"])
    if values["device"] != "auto":  # the recipe (batch, lr, widths) depends on it even where the fields match
        changed["device"] = values["device"]
    return changed


def make_config(model: dict[str, Any], data: str, overrides: dict[str, Any]) -> TrainConfig:
    name = model["model"]
    extra = {k: v for k, v in model.items() if k != "model"}
    return TrainConfig.for_model(name, data=data, **extra, **overrides)
