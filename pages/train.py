import streamlit as st

from core.serving import runs
from core.training import sweep
from studio import backbones, form_memory, live, loop_view, lr_finder, small_data, state, sweep_view, train_form
from studio.state import through_navigation
from studio.widgets import guard

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

st.title("Train")

watched = state.watched_run()
training = bool(state.training_now())
form_memory.restore()  # the choices made before a visit to another page
with st.expander("**Set up a run**: data, model, hyperparameters", expanded=not training):
    data_col, model_col = st.columns(2, gap="large")
    with data_col:
        st.markdown("##### 1 · Data")
        data = train_form.data_picker()
        small_data.propose(data)  # before the model picker: it may pre-select the recipe for few pictures
        preview = st.container()
    with model_col:
        st.markdown("##### 2 · Model")
        model = train_form.model_picker()
    st.markdown("##### 3 · Hyperparameters")
    st.caption("Start with the defaults: they are the recipe tuned for the chosen model.")
    lr_finder.apply_suggestion()  # before the learning-rate field exists in this run
    sweep_view.apply_best()  # likewise: a sweep's best setting, chosen below or on the Runs page
    overrides = train_form.hyperparameters(train_form.fields_model(model))
    lr_finder.section(model, data, overrides)
    grid = sweep_view.setup(train_form.make_config(model, data, overrides) if model and data else None)
    form_memory.remember()
    loop_view.panel(model, data, overrides)
    with preview:
        small_data.augmentation_preview(lambda: train_form.make_config(model, data, overrides) if model and data else None)
    gpus = state.device_info().get("count", 1) if state.device_info()["kind"] == "cuda" else 1
    with st.container(horizontal=True, vertical_alignment="center"):
        label = "Start training" if grid is None else f"Start sweep ({len(sweep.settings_of(grid[0])) * grid[1]} runs)"
        start = st.button(label, icon=":material/rocket_launch:", type="primary", disabled=data is None or model is None)
        nproc = (
            st.number_input("GPUs", 1, gpus, 1, help="More than one: torchrun with DistributedDataParallel, the batch split across GPUs.")
            if gpus > 1
            else 1
        )
    if start:
        with guard():
            if not backbones.fetch_weights(model):
                st.rerun()  # offline: the model picker says so, and what works without a network
            config = train_form.make_config(model, data, overrides)
            if grid is not None:
                sweep_view.start(config, *grid)
            else:
                run_dir = state.registry().start(config, nproc=int(nproc))  # queued if the device is busy
                state.runs_changed()
                state.watch(run_dir)
            st.session_state.pop("_live_fig", None)
            st.rerun()

if watched is None:
    st.info(
        "No runs yet. The defaults (CIFAR-10 quick on Shapes, 8 epochs) need no download: press **Start training**; the progress bar shows the time left."
    )
else:
    st.subheader("Run")
    shown = live.run_picker(watched)
    plan = sweep_view.sweep_of(runs.run_info(shown)) if shown is not None else None
    if plan is not None:
        sweep_view.panel(plan)
        st.markdown("##### This run of the sweep")
    if shown is not None:
        live.run_panel(shown)
