"""Small data gets the right recipe: the Train page's proposal for few pictures, the augmentation preview, and what
the results say about a tiny test split and the checkpoint that is kept.

The proposal pre-selects the Train form's widgets (their session-state keys) before they are drawn, once per
proposal: a user who then changes them keeps their own choice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from core import classes, runs
from core import data as datasets
from core.errors import PlaygroundError
from studio.widgets import guard, percent

PREVIEW_IMAGES = 8
PREVIEW_PX = 88
BEST_HELP = (
    "The highest test accuracy any epoch reached. The run keeps the **last** epoch's weights (its test accuracy "
    "is the one beside this), not the best epoch's: Predict and the downloads use the last."
)


# --------------------------------------------------------------------------- the proposal


def _fingerprint(path: Path) -> tuple:
    """Changes when pictures are added or removed (a class folder's mtime), without listing every file."""
    try:
        if path.is_file():
            stat = path.stat()
            return (stat.st_size, stat.st_mtime_ns)
        folders = [path, *(d for d in path.iterdir() if d.is_dir())]
        folders += [d for f in folders[1:] for d in f.iterdir() if d.is_dir()]  # train/<class>, test/<class>
        return tuple(sorted((str(f), f.stat().st_mtime_ns) for f in folders))
    except OSError:
        return ()


@st.cache_data(max_entries=16, show_spinner="Counting the pictures…")
def _counts(path: str, fingerprint: tuple) -> dict[str, Any]:
    return datasets.imagefolder_counts(path)


def propose(spec: str | None) -> None:
    """For an image folder with few pictures per class: say so, and pre-select the small-data recipe."""
    if not spec or not spec.startswith("imagefolder:"):
        return
    path = Path(spec.removeprefix("imagefolder:"))
    try:
        counts = _counts(str(path), _fingerprint(path))
    except PlaygroundError:
        return  # the run's own start says what is wrong with the folder
    recipe = classes.small_data_recipe(counts["train"])
    warning = classes.test_split_warning(sum(counts["test"]), own_split=counts["has_test_split"])
    if warning and classes.describe(spec) is None:  # a set of your own classes shows its own split
        st.warning(warning, icon=":material/warning:")
    if recipe is None:
        return
    model = recipe["model"]
    with st.container(border=True):
        st.markdown(":material/lightbulb: **Few pictures? Fine-tune a pretrained network**")
        st.caption(recipe["why"])
        use = st.toggle(
            f"Use the recipe for few pictures: **{model}**, ImageNet weights, frozen backbone, batch "
            f"{recipe['batch_size']} ({recipe['steps_per_epoch']} step{'s' * (recipe['steps_per_epoch'] != 1)} per epoch), "
            f"{recipe['epochs']} epochs",
            value=True,
            key="small_recipe",
        )
    applied = (spec, model, recipe["batch_size"], recipe["epochs"])
    if use and st.session_state.get("_small_recipe_applied") != applied:
        st.session_state.update(
            {
                "model_kind": "pretrained",
                "pretrained_name": model,
                "freeze": True,
                f"hp-{model}-batch": recipe["batch_size"],
                f"hp-{model}-epochs": recipe["epochs"],
                "_small_recipe_applied": applied,
            }
        )


# --------------------------------------------------------------------------- augmentation preview


@st.cache_data(max_entries=8, show_spinner="Loading a few training images…")
def _samples(config_json: str, n: int) -> dict[str, Any]:
    from core.preview import augmented_samples
    from core.train import TrainConfig

    return augmented_samples(TrainConfig.from_dict(json.loads(config_json)), n)


def _enlarged(image, side: int = PREVIEW_PX):
    factor = max(1, side // image.shape[0])  # square pixels: a 32x32 image looks like what it is
    return image.repeat(factor, 0).repeat(factor, 1)


def augmentation_preview(config_of) -> None:
    """A few training images as stored and as the model sees them in training. `config_of()` makes the run's
    TrainConfig from the form (called only when the preview is open)."""
    with st.expander("What the model sees in training (augmentation preview)", icon=":material/visibility:"):
        if not st.toggle(
            "Show a few training images",
            key="aug_preview",
            help="The first images of epoch 1, through the run's own data loading and augmentation.",
        ):
            return
        with guard():
            config = config_of()
            if config is None:
                st.caption("Choose the data and the model first.")
                return
            shown = _samples(json.dumps(config.to_dict(), sort_keys=True, default=str), PREVIEW_IMAGES)
            st.caption(f"Stored at {shown['data_size']} x {shown['data_size']} pixels:")
            st.image([_enlarged(x) for x in shown["stored"]], caption=shown["labels"], width=PREVIEW_PX)
            how = (
                f"shifted by up to {shown['crop_padding']} pixels (the gap filled black), mirrored half of the time, "
                if shown["augment"]
                else "no augmentation (it is off), "
            )
            st.caption(
                f"As the model sees them: {how}resized to {shown['input_size']} x {shown['input_size']}. "
                "Every epoch draws new shifts and flips."
            )
            st.image([_enlarged(x) for x in shown["seen"]], caption=shown["labels"], width=PREVIEW_PX)


# --------------------------------------------------------------------------- what the results say


def results_notes(info: runs.RunInfo, epochs: list[dict[str, Any]]) -> None:
    """Under a run's results: a test split too small to mean much, and which weights the run kept."""
    warning = classes.run_test_split_warning(info.config)  # as the run recorded it
    if warning:
        st.warning(warning, icon=":material/warning:")
    best, last = info.best_acc, info.last_acc
    if best is None or last is None or best <= last + 1e-9:
        return
    best_epoch = next((int(r["epoch"]) for r in epochs if r.get("test_acc") == best), None)
    at = f" (epoch {best_epoch})" if best_epoch else ""
    st.caption(
        f":material/info: The run keeps its **last** weights (test accuracy {percent(last)}): Predict and the "
        f"downloads use them. The best epoch{at} reached {percent(best)}, but its weights were not kept."
    )
