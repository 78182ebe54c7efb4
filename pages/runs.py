import pandas as pd
import streamlit as st

from core.data.spec import DataSpec
from core.serving import runs
from core.training.curves import curves_of
from core.training.sweep import Sweep
from studio import export_view, insight, run_compare, state, sweep_view, workspace
from studio.charts import compare_figure
from studio.state import through_navigation
from studio.widgets import THROUGHPUT_HELP, THROUGHPUT_LABEL, duration, guard, run_labels, started_text, test_images_text

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

st.title("Runs")
every = state.all_runs()
if not every:
    st.info("No runs yet: start one on the Train page.")
    st.page_link("pages/train.py", label="Open Train →")
    st.stop()

by_id = {r.run_id: r for r in every}
rows = sweep_view.collapse(every)  # a sweep's runs are one row, opened below
names = runs.distinct_names(every)  # same-named runs get #1, #2 (oldest first): in the table, legend and columns alike
labels = run_labels(every)
renamed = st.session_state.pop("runs_renamed", None)
compared = st.session_state.get("compare_pick", run_compare.default_compared(every))
if renamed is not None or "compare_pick" not in st.session_state or any(i not in by_id for i in compared):
    # Set (again) before the pickers are drawn: after a rename the browser keeps a keyed picker's old text
    # until its value is set again, and a deleted run must leave the comparison.
    st.session_state["compare_pick"] = [i for i in compared if i in by_id]
    if renamed is not None:
        st.session_state["manage_pick"] = renamed["run_id"]
# Name and accuracy first: a run id (often with an upload's hash in it) would push the figures off-screen.
st.dataframe(
    pd.DataFrame(
        [
            sweep_view.row(r, by_id)
            if isinstance(r, Sweep)
            else {
                "name": names[r.run_id],
                "best accuracy": r.best_acc,
                "test images": test_images_text(r),
                "status": r.status,
                "epochs": f"{r.epochs_done}/{r.config.get('epochs', '?')}",
                "model": r.config.get("model"),
                "data": DataSpec.parse(str(r.config.get("data", ""))).name(),
                "duration": duration(r.seconds),
                THROUGHPUT_LABEL: r.img_per_s,
                "started": started_text(r.started),
                "note": r.note,
                "run id": r.run_id,
            }
            for r in rows
        ]
    ),
    hide_index=True,
    placeholder="–",  # a run with no accuracy or speed yet (failed, queued): a dash, not "None"
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
chosen = st.multiselect(
    "Runs to compare",
    list(by_id),
    max_selections=8,
    format_func=labels.get,
    key="compare_pick",
)
if chosen:
    smoothing = st.slider("Smoothing", 0.0, 0.95, 0.6, 0.05, key="compare_smoothing")
    st.plotly_chart(compare_figure({names[i]: curves_of(by_id[i].records) for i in chosen}, smoothing), key="compare")
    table = run_compare.settings_table([by_id[i] for i in chosen], names)
    st.markdown("##### Settings that differ" if len(chosen) > 1 else "##### Settings")
    if table.empty:
        st.caption("The selected runs have the same settings (only the seed of chance differs, if that).")
    else:
        st.table(table)  # wraps long cells: every run's column stays on screen, however many are compared
        if (table == run_compare.NOT_USED).any().any():
            st.caption(f"{run_compare.NOT_USED} : not used in that run.")

st.subheader("Manage")
pick = st.selectbox("Run", list(by_id), format_func=labels.get, key="manage_pick")
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
            meta = runs.write_meta(info.path, name=new_name, note=new_note)
            state.runs_changed()
            # Said after the rerun that shows the new name everywhere (a message before st.rerun would be lost).
            st.session_state["runs_renamed"] = {"run_id": pick, "name": meta.get("name") or "", "note": bool(meta.get("note"))}
            st.rerun()
if renamed is not None and renamed["run_id"] == pick:
    what = f"the name “{renamed['name']}”" if renamed["name"] else f"the default name “{runs.default_name(info.config)}”"
    st.success(f"Saved {what}" + (" and the note." if renamed["note"] else "."), icon=":material/check_circle:")
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
        st.write(f"Delete **{names[pick]}** (run folder `{pick}`) and its checkpoint? This cannot be undone.")
        if st.button("Yes, delete it", type="primary"):
            with guard():
                state.registry().delete(info.path)
                state.runs_changed()
                state.forget_tail(info.path)
                st.toast(f"Deleted {names[pick]}.")
                st.rerun()

if info.has_checkpoint or info.records:
    st.subheader("Results and mistakes")
    insight.results(info, key="runs")
if info.has_checkpoint:
    export_view.downloads(info, key="runs")

workspace.operator_panel(state.all_runs(), state.queue_spots())  # shared mode, operator only
