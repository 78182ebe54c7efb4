"""The Train page's code panel: the training loop for the form's current settings (core.export.loop_code)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.errors import PlaygroundError
from core.export.loop_code import loop_code
from studio import train_form


def panel(model: dict[str, Any] | None, data: str | None, overrides: dict[str, Any]) -> None:
    with st.expander("**The PyTorch training loop** for these settings", icon=":material/code:"):
        if model is None or data is None:
            st.caption("Choose the data and the model above and the code appears here.")
            return
        try:
            config = train_form.make_config(model, data, overrides)
            config.validate()
        except (PlaygroundError, TypeError, ValueError) as exc:
            st.caption(f"No code for these settings: {exc}")
            return
        st.caption(
            "What **Start training** runs, as a plain loop you can copy: the same data, model, loss, optimizer, "
            "learning-rate schedule, seed and epochs. The studio's trainer adds checkpoints, the live charts, "
            "Stop and the GPU; run this from the project folder."
        )
        st.code(loop_code(config), language="python", line_numbers=True, wrap_lines=True)
