import pandas as pd
import streamlit as st

from studio.state import all_runs, through_navigation
from studio.widgets import data_name, device_line, duration, percent

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

st.title(":material/local_fire_department: Torch Playground")
st.markdown(
    "Learn PyTorch by doing it: **fit a line**, **build a network** layer by layer and watch the tensor shapes, "
    "**train it** with live curves, then **show it your own pictures**. Everything here is also plain Python "
    "(`python -m core.train --model cifar10_quick --data shapes`), so what you click you can script."
)

headline, detail = device_line()
with st.container(border=True):
    left, right = st.columns([3, 2], vertical_alignment="center")
    left.markdown(f"#### {headline}")
    left.caption(detail)
    right.markdown("**Quick start (about 2 minutes):** Train → *Start training* with the defaults "
                   "(CIFAR-10 quick on Shapes), then Predict → upload a picture of a shape.")

st.subheader("Where to go")
steps = [
    ("pages/first_steps.py", "1 · First steps", ":material/school:", "Fit y = 2x + 3 with two parameters, MSE and SGD."),
    ("pages/architecture.py", "2 · Architecture", ":material/account_tree:",
     "Stack layers in a table and see shapes, parameters and the PyTorch code."),
    ("pages/train.py", "3 · Train", ":material/model_training:", "Pick data and a model, press Start, watch the curves."),
    ("pages/predict.py", "4 · Predict", ":material/image_search:", "Upload images and see the top guesses of a trained model."),
    ("pages/runs.py", "5 · Runs", ":material/table_chart:", "Compare, download and clean up your runs."),
]
for column, (page, label, icon, blurb) in zip(st.columns(len(steps)), steps):
    with column.container(border=True, height="stretch"):
        st.page_link(page, label=f"**{label}**", icon=icon)
        st.caption(blurb)

st.subheader("Recent runs")
recent = all_runs()[:5]
if not recent:
    st.info("No runs yet. Open **Train** and press *Start training*: the defaults finish in a minute or two on a laptop CPU.")
else:
    st.dataframe(
        pd.DataFrame([{
            "status": r.status, "run": r.run_id, "model": r.config.get("model"), "data": data_name(str(r.config.get("data", ""))),
            "test accuracy": percent(r.best_acc), "epochs": f"{r.epochs_done}/{r.config.get('epochs', '?')}",
            "time": duration(r.seconds),
        } for r in recent]),
        hide_index=True,
    )
    st.page_link("pages/runs.py", label="All runs →")
