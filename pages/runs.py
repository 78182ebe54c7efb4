import json
from datetime import datetime

import pandas as pd
import streamlit as st

from core.data.spec import DataSpec
from core.serving import runs
from core.training.config import TrainConfig
from core.training.curves import curves_of
from core.training.sweep import Sweep
from studio import export_view, insight, state, sweep_view, workspace
from studio.charts import compare_figure
from studio.state import through_navigation
from studio.widgets import THROUGHPUT_HELP, THROUGHPUT_LABEL, duration, guard, run_label, test_images_text

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

SETTINGS = [f for f in TrainConfig().to_dict() if f not in ("data_dir", "log_every")]


st.title("Runs")
every = state.all_runs()
if not every:
    st.info("No runs yet: start one on the Train page.")
    st.page_link("pages/train.py", label="Open Train →")
    st.stop()

by_id = {r.run_id: r for r in every}
rows = sweep_view.collapse(every)  # a sweep's runs are one row, opened below
# Name and accuracy first: a run id (often with an upload's hash in it) would push the figures off-screen.
st.dataframe(
    pd.DataFrame(
        [
            sweep_view.row(r, by_id)
            if isinstance(r, Sweep)
            else {
                "name": r.name,
                "best accuracy": r.best_acc,
                "test images": test_images_text(r),
                "status": r.status,
                "epochs": f"{r.epochs_done}/{r.config.get('epochs', '?')}",
                "model": r.config.get("model"),
                "data": DataSpec.parse(str(r.config.get("data", ""))).name(),
                "duration": duration(r.seconds),
                THROUGHPUT_LABEL: r.img_per_s,
                "started": datetime.fromtimestamp(r.started).strftime("%Y-%m-%d %H:%M") if r.started else "",
                "note": r.note,
                "run id": r.run_id,
            }
            for r in rows
        ]
    ),
    hide_index=True,
    column_config={
        "name": st.column_config.TextColumn(width="medium", pinned=True),
        "best accuracy": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1),
        "test images": st.column_config.TextColumn(
            help="How many images the accuracy was measured on. ⚠: too few for it to mean much (each one is 100 / n points)."
        ),
        THROUGHPUT_LABEL: st.column_config.NumberColumn(format="localized", help=THROUGHPUT_HELP),
        "note": st.column_config.TextColumn(width="medium"),
    },
)

sweep_view.section(rows)

st.subheader("Compare")
with_curves = [r.run_id for r in every if r.records]
chosen = st.multiselect(
    "Runs to compare", list(by_id), default=with_curves[:3], max_selections=8, format_func=lambda i: run_label(by_id[i])
)
if chosen:
    smoothing = st.slider("Smoothing", 0.0, 0.95, 0.6, 0.05, key="compare_smoothing")
    shown = {i: by_id[i].name for i in chosen}  # legend and columns by name; an id's tail only if two names are alike
    if len(set(shown.values())) < len(shown):
        shown = {i: f"{name} …{i[-4:]}" for i, name in shown.items()}
    st.plotly_chart(compare_figure({shown[i]: curves_of(by_id[i].records) for i in chosen}, smoothing), key="compare")
    table = pd.DataFrame(
        {
            shown[i]: {
                k: json.dumps(by_id[i].config.get(k)) if isinstance(by_id[i].config.get(k), (list, dict)) else by_id[i].config.get(k)
                for k in SETTINGS
            }
            for i in chosen
        }
    )
    differ = table[table.astype(str).nunique(axis=1) > 1] if len(chosen) > 1 else table
    st.markdown("##### Settings that differ" if len(chosen) > 1 else "##### Settings")
    if differ.empty:
        st.caption("The selected runs have the same settings (only the seed of chance differs, if that).")
    else:
        st.dataframe(differ.astype(str), column_config={"_index": st.column_config.TextColumn("setting")})

st.subheader("Manage")
# The id, last, keeps two runs of the same set-up apart here, where a click can delete one.
pick = st.selectbox("Run", list(by_id), format_func=lambda i: f"{run_label(by_id[i])} · {by_id[i].status} · {i}", key="manage_pick")
info = by_id[pick]
with st.form(f"meta-{pick}", border=False):
    name_col, note_col = st.columns([1, 2])
    new_name = name_col.text_input(
        "Name",
        value=info.meta.get("name", ""),
        placeholder=info.name,
        max_chars=runs.NAME_MAX,
        help="A short name of your own; empty = model on data.",
    )
    new_note = note_col.text_area(
        "Note", value=info.note, height=68, max_chars=runs.NOTE_MAX, placeholder="What did you try, and what did you learn?"
    )
    if st.form_submit_button("Save name and note", icon=":material/edit:"):
        with guard():
            runs.write_meta(info.path, name=new_name, note=new_note)
            state.runs_changed()
            st.toast(f"Saved: {new_name.strip() or 'default name'}.")
            st.rerun()
with st.container(horizontal=True, vertical_alignment="center"):
    if st.button("Open on the Train page"):
        state.watch(info.path)
        st.switch_page("pages/train.py")
    if info.has_checkpoint:
        st.download_button(
            "metrics.jsonl",
            lambda: (info.path / runs.METRICS_FILE).read_bytes(),
            f"{pick}-metrics.jsonl",
            "application/json",
            on_click="ignore",
            icon=":material/download:",
        )
    with st.popover("Delete…", icon=":material/delete:"):
        st.write(f"Delete **{pick}** and its checkpoint? This cannot be undone.")
        if st.button("Yes, delete it", type="primary"):
            with guard():
                state.registry().delete(info.path)
                state.runs_changed()
                state.forget_tail(info.path)
                st.toast(f"Deleted {pick}.")
                st.rerun()

if info.has_checkpoint or info.records:
    st.subheader("Results and mistakes")
    insight.results(info, key="runs")
if info.has_checkpoint:
    export_view.downloads(info, key="runs")

workspace.operator_panel(state.all_runs(), state.queue_spots())  # shared mode, operator only
