"""The Predict page's insight: "Where does it look?" overlays (core.insight.explain) and the unusual-image warning (core.insight.ood)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import streamlit as st
import torch
from PIL import Image

from core.insight.explain import METHODS, Explainer, Explanation, overlay
from core.insight.ood import SOFTMAX_NOTE
from core.insight.predict import Predictor

_KEPT = 24  # overlays remembered per browser session: toggling back and forth costs nothing
IMAGE_SIDE = 170  # three pictures and the chart side by side on a laptop screen

LEGENDS = {
    "gradcam": "Grad-CAM weighs the last conv layer's feature maps by how much each one raises the score for "
    "**{label}**; that layer sees the picture as a {grid} grid, so the map is coarse.",
    "saliency": "Saliency: how strongly each pixel would change the score for **{label}** if it changed a little "
    "(the gradient). It shows what the model is sensitive to and changes little from class to class: "
    "to ask *why this class*, use Grad-CAM or integrated gradients.",
    "integrated_gradients": "Integrated gradients: each pixel's share of the score for **{label}**, measured from a "
    "plain image of the training data's average colour up to your picture.",
}


@st.cache_resource(max_entries=3, show_spinner=False)
def _explainer(key: int, _predictor: Predictor) -> Explainer:
    return Explainer(_predictor)


def explainer_for(predictor: Predictor) -> Explainer:
    explainer = _explainer(id(predictor), predictor)
    if explainer.predictor is not predictor:  # a new predictor reusing a freed one's id
        _explainer.clear()
        explainer = _explainer(id(predictor), predictor)
    return explainer


def ensure_ood(predictor: Predictor) -> None:
    """Fit the unusual-image check (once per trained model) behind a spinner that says what is happening,
    and say so when there is none: then only the model's own confidence can warn."""
    if not predictor.ood_ready:
        with st.spinner("Learning what the training images look like (once per trained model)…"):
            predictor.ood_check()
    if predictor.ood_check().unavailable:
        st.caption(
            f"No check for pictures unlike the training images: {predictor.ood_check().unavailable}. Only a low top probability is flagged."
        )


def headline(name: str, result: dict[str, Any]) -> str:
    best = result["top"][0]
    if (result.get("ood") or {}).get("unusual"):
        return f"**{name}** → no real answer (best guess among its classes: {best['label']}, {best['prob']:.0%})"
    return f"**{name}** → **{best['label']}** ({best['prob']:.0%})"


def warning(result: dict[str, Any]) -> None:
    if result.get("warning"):
        st.warning(result["warning"], icon=":material/help:")


def softmax_note(results: list[dict[str, Any]]) -> None:
    """Why a classifier names a class even for a picture of something else: always one click away, and
    flagged when an answer here is a guess."""
    guessed = any(r.get("warning") for r in results)
    title = "Why does the model still name a class?" if guessed else "Why does the model always name a class?"
    with st.expander(title, icon=":material/lightbulb:"):
        st.markdown(SOFTMAX_NOTE)


def controls(predictor: Predictor, result: dict[str, Any], key: str) -> tuple[str, str] | None:
    """The per-image toggle and, when it is on, the class and method pickers: (method, class) or None."""
    if not st.toggle(
        "Where does it look?", key=f"look-{key}", help="Colour the parts of the picture that made the model answer what it did."
    ):
        return None
    probs = {t["label"]: t["prob"] for t in result["top"]}
    options = list(probs) + [c for c in predictor.classes if c not in probs]  # likeliest first
    left, right = st.columns([2, 3])
    target = left.selectbox(
        "Why this class?",
        options,
        key=f"why-{key}",
        format_func=lambda c: f"{c} ({probs[c]:.0%})" if c in probs else c,
        help="Defaults to the model's answer; pick another class to see what speaks for it.",
    )
    method = right.segmented_control(
        "Method", list(METHODS), default="gradcam", required=True, key=f"method-{key}", format_func=METHODS.get
    )
    return method, target


def _remember() -> OrderedDict:
    return st.session_state.setdefault("_overlays", OrderedDict())


def show_overlay(
    where, predictor: Predictor, key: str, image: Image.Image, prepared: torch.Tensor, probs: torch.Tensor, method: str, target: str
) -> Explanation:
    """The map over the user's picture, in the given column; returns the explanation. `key` names the upload, `image`
    is the picture shown and `prepared`/`probs` what the model made of it (studio.predict_view.look_at): the map
    reuses them, so only the attribution itself runs the model."""
    kept = _remember()
    remembered = (id(predictor), key, method, target)
    if remembered not in kept:
        with where, st.spinner("Looking…" if method != "integrated_gradients" else "Integrating gradients…"):
            explanation = explainer_for(predictor).explain_prepared(prepared, method, target, probs=probs)
            kept[remembered] = (explanation, np.asarray(overlay(image, explanation.on_image(*image.size))))
        while len(kept) > _KEPT:
            kept.popitem(last=False)
    kept.move_to_end(remembered)
    explanation, picture = kept[remembered]
    where.image(picture, caption=f"where it looks for “{explanation.label}”", width=IMAGE_SIDE)
    return explanation


def legend(explanation: Explanation) -> None:
    """What the colours mean, in plain words, under the row."""
    label = explanation.label
    if explanation.empty:
        st.info(
            f"Nothing in this picture speaks for “{label}”: the map is empty, the model found no evidence for this class here.",
            icon=":material/visibility_off:",
        )
        return
    grid = " x ".join(str(n) for n in explanation.grid)
    st.caption(
        f"**Red and yellow**: the parts that pushed the model most towards “{label}”; **blue or no colour**: "
        f"little or no effect; **dimmed**: cut off, the model never sees it (it looks at the centre square). "
        + LEGENDS[explanation.method].format(label=label, grid=grid)
    )
