import streamlit as st

from core.data.datasets import SHAPES_CLASSES
from core.models.presets import PRESETS
from core.serving import runs
from studio import arch, workspace
from studio import explain_view as ev
from studio import predict_view as pv
from studio.charts import topk_figure
from studio.state import all_runs, through_navigation
from studio.widgets import guard, run_labels

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

GALLERY = 12  # images shown in full; the table below has all of them

st.title("Predict")
st.caption(
    "Show a trained model your own pictures. It sees them exactly as it saw its training images: "
    "resized, centre-cropped and normalized the same way, with no randomness."
)

predictor = None
source = st.segmented_control(
    "Model",
    ["run", "upload"],
    default="run",
    required=True,
    key="predict_source",
    format_func={"run": "A trained run", "upload": "Upload weights"}.get,
)
with guard():
    if source == "run":
        ready = [r for r in all_runs() if r.has_checkpoint]
        if not ready:
            st.info("No trained runs yet: train one on the Train page, or upload weights.")
            st.page_link("pages/train.py", label="Open Train →")
        else:
            ids = [r.run_id for r in ready]
            wanted = st.session_state.pop("predict_run", None)
            if wanted in ids:
                st.session_state["predict_pick"] = wanted
            default = next((r.run_id for r in ready if r.status == "finished"), ids[0])
            titles = run_labels(all_runs())  # numbered as on the Runs page where names repeat
            pick = st.selectbox(
                "Run",
                ids,
                index=ids.index(st.session_state.get("predict_pick", default))
                if st.session_state.get("predict_pick") in ids
                else ids.index(default),
                format_func=titles.get,
            )
            st.session_state["predict_pick"] = pick
            predictor = pv.predictor_for_run(runs.MODELS_DIR / pick)
    else:
        c = st.columns([2, 2, 1])
        weights = c[0].file_uploader(
            "Weights (.pt state_dict or .safetensors)",
            type=pv.WEIGHT_TYPES,
            key="weights_upload",
            max_upload_size=workspace.upload_cap_mb(),
            help="Whole pickled models are refused on purpose: loading a pickle can run any code.",
        )
        info_file = c[0].file_uploader(
            "The .json downloaded with them (optional)",
            type=["json"],
            key="weights_info_upload",
            max_upload_size=workspace.upload_cap_mb(),
            help="Classes, normalization, input size and architecture of exported weights.",
        )
        info = None
        with guard():
            info = pv.weights_info_upload(info_file)
        named = pv.architecture_of(info)
        saved = {f"saved: {a['name']}": a for a in arch.saved_architectures()}
        if named is None:
            choice = c[1].selectbox(
                "Architecture the weights belong to",
                list(PRESETS) + list(saved),
                format_func=lambda n: f"{PRESETS[n].title} ({n})" if n in PRESETS else n,
            )
        else:
            c[1].text_input(
                "Architecture the weights belong to",
                "custom layers" if isinstance(named, list) else named,
                disabled=True,
                help=f"From {info_file.name}.",
            )
        size = c[2].number_input("Input size", 0, 512, 0, help="0: the size saved with the weights, else the preset's.")
        names = st.text_input(
            "Class names, comma-separated (optional)",
            placeholder=", ".join(SHAPES_CLASSES),
            help="Exports from this studio carry their class names in the .json; other files need them here.",
        )
        if weights is not None:
            model = named if named is not None else saved[choice]["layers"] if choice in saved else choice
            classes = [n.strip() for n in names.split(",") if n.strip()]
            predictor = pv.predictor_for_upload(weights, model, classes, int(size) or None, info)

if predictor is not None:
    st.caption(
        f"{len(predictor.classes)} classes ({', '.join(predictor.classes[:10])}"
        f"{', …' if len(predictor.classes) > 10 else ''}) · the model sees {predictor.input_size} x "
        f"{predictor.input_size} pixels"
    )
    c = st.columns([4, 1])
    uploads = c[0].file_uploader(
        "Images",
        type=pv.IMAGE_TYPES,
        accept_multiple_files=True,
        key="images",
        max_upload_size=workspace.upload_cap_mb(),
        help="JPEG, PNG, WEBP, BMP, GIF or TIFF; one or many.",
    )
    k = c[1].number_input("Top-k", 1, min(10, len(predictor.classes)), min(5, len(predictor.classes)))
    files = [(u.name, u.getvalue()) for u in uploads or []]
    if st.toggle(
        "Camera",
        key="predict_camera",
        help="Point this computer's camera at an object and take a picture: the answer appears below, first. Take another to try again.",
    ):
        shot = st.camera_input("Take a picture", key="predict_shot")
        if shot is not None:
            files.insert(0, ("camera.jpg", shot.getvalue()))
    if list(predictor.classes) == list(SHAPES_CLASSES) and st.toggle("Add sample shapes (no picture at hand?)", key="samples"):
        files += pv.sample_shapes()
    if not files:
        st.info("Upload one or more images to see what the model thinks they are.")
    else:
        with guard():
            ev.ensure_ood(predictor)
            results = predictor.predict([b for _, b in files], [n for n, _ in files], k=int(k))
            ev.softmax_note(results)
            for i, ((name, payload), result) in enumerate(list(zip(files, results))[:GALLERY]):
                with st.container(border=True):
                    if "error" in result:
                        message = result["error"]
                        st.error(message if name in message else f"**{name}**: {message}", icon=":material/block:")
                        continue
                    st.markdown(ev.headline(name, result))
                    ev.warning(result)
                    look = ev.controls(predictor, result, key=f"{i}-{name}")
                    # The pictures side by side with their tops in line (captions differ in length), the chart centred.
                    pictures, chart = st.columns([6, 3] if look else [4, 5], vertical_alignment="center")
                    cols = pictures.columns(3 if look else 2, vertical_alignment="top")
                    side = ev.IMAGE_SIDE if look else 200
                    cols[0].image(pv.thumbnail(payload, name), caption="your image", width=side)
                    cols[1].image(
                        pv.model_view(predictor, payload, name),
                        caption=f"what the model sees ({predictor.input_size} x {predictor.input_size})",
                        width=side,
                    )
                    explanation = ev.show_overlay(cols[2], predictor, payload, name, *look) if look else None
                    chart.plotly_chart(topk_figure(result["top"]), key=f"topk-{i}")
                    if explanation is not None:
                        ev.legend(explanation)
            if len(files) > GALLERY:
                st.caption(f"Showing the first {GALLERY} of {len(files)} images; the table has them all.")
            if len(files) > 1:
                pv.results_section(results, int(k))
