import pandas as pd
import streamlit as st

from core.data.spec import DataSpec
from core.lessons import LESSONS
from core.serving.runs import distinct_names
from studio.lessons import OVERVIEW
from studio.state import all_runs, through_navigation
from studio.widgets import accuracy_text, device_line, duration

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

st.title(":material/local_fire_department: Torch Playground")
st.markdown(
    "Learn PyTorch by doing it: **fit a line**, **build a network** layer by layer and watch the tensor shapes, "
    "**train it** with live curves, then **show it your own pictures**. Everything here is also plain Python "
    "(`python -m core.train --model cifar10_quick --data shapes`), so what you click you can script."
)

# One first step: a newcomer should not have to choose between two "start here"s.
with st.container(border=True):
    left, right = st.columns([3, 2], vertical_alignment="center")
    left.markdown("#### :material/flag: Start here: First steps")
    left.markdown(
        "Fit y = 2x + 3 with two parameters, a loss and an optimizer: the whole training loop in a "
        "minute, before any images. Then follow the path below, left to right."
    )
    if right.button("Open First steps", type="primary", icon=":material/school:", width="stretch"):
        st.switch_page("pages/first_steps.py")

st.subheader("The path")
steps = [
    ("pages/first_steps.py", "1 · First steps", "Fit y = 2x + 3 with two parameters, MSE and SGD."),
    ("pages/architecture.py", "2 · Architecture", "Stack layers in a table and see shapes, parameters and the PyTorch code."),
    ("pages/train.py", "3 · Train", "Pick data and a model, press Start, watch the curves and the time left."),
    ("pages/predict.py", "4 · Predict", "Upload images and see the top guesses of a trained model."),
    ("pages/runs.py", "5 · Runs", "Name, compare, download and clean up your runs."),
]
for column, (page, label, blurb) in zip(st.columns(len(steps)), steps):
    with column.container(border=True, height="stretch"):
        st.page_link(page, label=f"**{label}**")  # no icons: "2 · Architecture" must fit a fifth of the page
        st.caption(blurb)
with st.container(border=True):
    st.page_link(
        OVERVIEW, label=f"**Lessons**: the tutorial's {len(LESSONS)} chapters, each a short task the page checks", icon=":material/school:"
    )
    st.caption("After First steps: " + " · ".join(item.title for item in LESSONS[1:]))

headline, detail = device_line()
st.caption(f"Running on {headline.split(' ', 1)[1]} · {detail}")

st.subheader("Recent runs")
recent = all_runs()[:5]
names = distinct_names(all_runs())  # numbered as on the Runs page where names repeat
if not recent:
    st.info("No runs yet. Open **Train** and press *Start training*: the defaults need no download, and the page shows the time left.")
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "name": names[r.run_id],
                    "test accuracy": accuracy_text(r.best_acc, r),
                    "status": r.status,
                    "model": r.config.get("model"),
                    "data": DataSpec.parse(str(r.config.get("data", ""))).name(),
                    "epochs": f"{r.epochs_done}/{r.config.get('epochs', '?')}",
                    "time": duration(r.seconds),
                }
                for r in recent
            ]
        ),
        hide_index=True,
    )
    st.page_link("pages/runs.py", label="All runs →")
