"""The Train form's loss function: the tutorial's loss lesson as a choice (core.training.losses)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.training.config import TrainConfig
from core.training.losses import LOSSES


def pick(base: TrainConfig, key: str) -> dict[str, Any]:
    """{"loss", "label_smoothing"}: smoothing only goes with cross-entropy (0 for the others)."""
    c = st.columns(4)
    names = list(LOSSES)
    loss = c[0].selectbox(
        "Loss function",
        names,
        index=names.index(base.loss),
        format_func=lambda n: LOSSES[n].title,
        key=key + "loss",
        help=" · ".join(f"**{v.title}**: {v.help}" for v in LOSSES.values()),
    )
    smoothing = c[1].number_input(
        "Label smoothing",
        0.0,
        0.5,
        float(base.label_smoothing),
        0.05,
        key=key + "ls",
        disabled=loss != "cross_entropy",
        help="Cross-entropy only. Targets of 0.9 instead of 1: a less overconfident model.",
    )
    c[2].caption(LOSSES[loss].help + " The test loss is always plain cross-entropy, so runs compare.")
    return {"loss": loss, "label_smoothing": float(smoothing) if loss == "cross_entropy" else 0.0}
