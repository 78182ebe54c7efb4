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

from core.data import classes, datasets
from core.data.spec import DataSpec
from core.errors import PlaygroundError
from core.models.backbones import weight_choices
from core.models.presets import OFFLINE_PRESET
from core.serving import runs
from studio import backbones, train_form
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


RECIPE_TOGGLE = "small_recipe"
_APPLIED = "_small_recipe_applied"  # the recipe the form was last set to while the toggle is on
_CHANGED = "_small_recipe_changed"  # what the user changed, which turned the toggle off
WHAT = {
    "model_kind": "the model",
    "pretrained_name": "the network",
    "freeze": "the frozen backbone",
    "batch": "the batch size",
    "epochs": "the epochs",
}


def _fields(recipe: dict[str, Any]) -> dict[str, Any]:
    """The Train form's widgets the recipe sets (their session-state keys), and its values for them."""
    model = recipe["model"]
    return {
        "model_kind": "pretrained",
        "pretrained_name": model,
        "freeze": True,
        train_form.field_key(model, "batch"): recipe["batch_size"],
        train_form.field_key(model, "epochs"): recipe["epochs"],
    }


def _changed(recipe: dict[str, Any], fields: dict[str, Any]) -> list[str]:
    """The recipe's settings the user has moved away from, in words."""
    state = st.session_state
    moved = [WHAT[key.rsplit("-", 1)[-1]] for key, value in fields.items() if key in state and state[key] != value]
    if state.get(backbones.weights_key(recipe["model"])) == backbones.NONE:
        moved.append("the weights (to none)")
    return moved


def propose(spec: str | None) -> None:
    """For an image folder with few pictures per class: say so, and pre-select the small-data recipe.

    While the toggle is on, the form holds the recipe's settings, whichever source the weights come from (ImageNet,
    a file); a change to one of them turns the toggle off, so it never claims settings that will not be used."""
    state = st.session_state
    state.pop(backbones.SCRATCH_FIELDS, None)  # set again below while there is a recipe for this data
    data = DataSpec.parse(spec or "")
    if not data.is_folder:
        return
    path = Path(data.path)
    try:
        counts = _counts(str(path), _fingerprint(path))
    except PlaygroundError:
        return  # the run's own start says what is wrong with the folder
    recipe = classes.small_data_recipe(counts["train"])
    warning = classes.test_split_warning(sum(counts["test"]), own_split=counts["has_test_split"])
    if warning and not data.is_set:  # a set of your own classes shows its own split
        st.warning(warning, icon=":material/warning:")
    if recipe is None:
        return
    model = recipe["model"]
    fields = _fields(recipe)
    applied = (spec, model, recipe["batch_size"], recipe["epochs"])
    # Offline, the from-scratch way on trains with the recipe's batch and epochs too: few pictures need both.
    state[backbones.SCRATCH_FIELDS] = {
        train_form.field_key(OFFLINE_PRESET, "batch"): recipe["batch_size"],
        train_form.field_key(OFFLINE_PRESET, "epochs"): recipe["epochs"],
    }
    if state.get(RECIPE_TOGGLE, True) and state.get(_APPLIED) == applied:
        moved = _changed(recipe, fields)
        if moved:
            state[RECIPE_TOGGLE] = False  # before the toggle is drawn in this run
            state[_CHANGED] = " and ".join(dict.fromkeys(moved))
    weights = "your weights file" if state.get(backbones.weights_key(model)) in (backbones.UPLOAD, backbones.PATH) else "ImageNet weights"
    steps = recipe["steps_per_epoch"]
    with st.container(border=True):
        st.markdown(":material/lightbulb: **Few pictures? Fine-tune a pretrained network**")
        st.caption(recipe["why"])
        use = st.toggle(
            f"Use the recipe for few pictures: **{model}**, {weights}, frozen backbone, batch "
            f"{recipe['batch_size']} ({steps} step{'s' * (steps != 1)} per epoch), {recipe['epochs']} epochs",
            value=True,
            key=RECIPE_TOGGLE,
        )
        if not use:
            state.pop(_APPLIED, None)  # on again: the recipe's settings come back
            if state.get(_CHANGED):
                st.caption(f"Off because you changed {state[_CHANGED]}: your settings stay. Turn it on to go back to the recipe.")
            return
    state.pop(_CHANGED, None)
    fresh = state.get(_APPLIED) != applied
    state.update({key: value for key, value in fields.items() if fresh or key not in state})
    if state.get(backbones.weights_key(model)) == backbones.NONE:
        state[backbones.weights_key(model)] = weight_choices(model)[0]
    state[_APPLIED] = applied


# --------------------------------------------------------------------------- augmentation preview


@st.cache_data(max_entries=8, show_spinner="Loading a few training images…")
def _samples(config_json: str, n: int) -> dict[str, Any]:
    from core.training.config import TrainConfig
    from core.training.preview import augmented_samples

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
