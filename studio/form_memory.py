"""The Train form keeps its choices (data source, model, epochs, ...) across a visit to another page.

Streamlit drops a widget's value from the session once a script run ends without that widget, so
after a visit to Runs the form would be back at its defaults. The page copies the form's values
aside at the end of each of its runs and, before drawing the form, puts back any that were dropped.
"""

from __future__ import annotations

import re
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

# The Train form's widget keys (studio.train_form and the loss picker). Not a file uploader's: its
# value cannot be set, and the uploaded file itself is kept in the data folder anyway.
FORM_KEYS = re.compile(
    r"^(data_kind|shapes_n|data_folder|model_kind|preset_name|saved_name|pretrained_name|freeze|small_recipe|"
    r"weights_path|weights-(?!file-).+|size-.+|hp-.+)$"
)
_KEPT = "_train_form_kept"


def _simple(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_simple(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def restore() -> None:
    """Before the form: put back the values Streamlit dropped while another page was shown."""
    for key, value in st.session_state.get(_KEPT, {}).items():
        if key not in st.session_state:
            try:
                st.session_state[key] = value
            except StreamlitAPIException:  # a widget whose value cannot be set (a button): it starts afresh
                pass


def remember() -> None:
    """After the form: copy its current values aside."""
    st.session_state[_KEPT] = {
        key: value for key, value in st.session_state.items() if isinstance(key, str) and FORM_KEYS.match(key) and _simple(value)
    }
