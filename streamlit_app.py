"""Torch Playground: `streamlit run streamlit_app.py`.

Only navigation and the device badge live here; each page is a thin file in
pages/ and everything else is in core/ (the engine) and studio/ (UI helpers).
"""

import streamlit as st

from studio import lessons, state, workspace
from studio.widgets import device_badge, training_note

st.set_page_config(page_title="Torch Playground", page_icon=":material/local_fire_department:", layout="wide")

pages = {
    "Studio": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
        st.Page("pages/inside.py", title="Inside the model", icon=":material/layers:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/table_chart:"),
    ],
    "Lessons": lessons.navigation(),  # a tick on each lesson whose tasks this browser has passed
}
page = st.navigation(pages, expanded=True)  # every lesson's tick in sight, none behind "View more"
device_badge(st.sidebar)
training_note(st.sidebar)
workspace.sidebar(state.all_runs())  # shared mode: this browser's workspace code (nothing otherwise)
lessons.remember_learner(st.sidebar)  # outside shared mode: the cookie that keeps this browser's lesson progress
page.run()
