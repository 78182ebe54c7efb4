import numpy as np
import streamlit as st

from core.serving import runs
from studio import inside_view as iv
from studio import insight
from studio import predict_view as pv
from studio.state import all_runs, through_navigation, watched_run
from studio.widgets import choice, guard, run_labels

through_navigation()  # a direct first visit to /<page> must still get the app's navigation

st.title("Inside the model")
st.caption(
    "Pick a trained run and one image, and see what each layer computes: the feature maps of every "
    "convolution, the first layer's filters and one of its numbers worked out by hand, and where the whole "
    "test set lands in the model's last hidden layer."
)

ready = [r for r in all_runs() if r.has_checkpoint]
if not ready:
    st.info("No trained runs yet: train one on the Train page, then come back.")
    st.page_link("pages/train.py", label="Open Train →")
    st.stop()

ids = [r.run_id for r in ready]
watched = watched_run()
default = watched.name if watched is not None and watched.name in ids else next((r.run_id for r in ready if r.status == "finished"), ids[0])
titles = run_labels(all_runs())  # numbered as on the Runs page where names repeat
pick = st.selectbox("Run", ids, index=ids.index(default), format_func=titles.get, key="inside_run")
run_dir = runs.MODELS_DIR / pick


def look_at(index: int, classes: list[str], labels: np.ndarray) -> None:
    """Point the test-image picker at one image (a callback: it runs before the picker is drawn)."""
    label = classes[int(labels[index])]
    st.session_state["inside_source"] = "test"
    st.session_state["inside_class"] = label
    st.session_state[f"inside_pos-{label}"] = int(np.flatnonzero(labels == labels[index]).tolist().index(index)) + 1


with guard():
    mtime = insight.checkpoint_mtime(run_dir)
    predictor = pv.run_predictor(str(run_dir), mtime)
    acts = iv.activations(str(run_dir), mtime)
    split, classes, images = insight.test_split(run_dir)
    labels = split.labels.numpy()

    st.markdown("##### The image")
    left, right = st.columns([3, 2], vertical_alignment="center")
    with left:
        source = choice("Image", {"test": "A test image of the run", "upload": "Upload"}, key="inside_source")
        image = None
        if source == "test":
            c = st.columns(2)
            name = c[0].selectbox("Class", classes, key="inside_class")
            mine = np.flatnonzero(labels == classes.index(name))
            position = c[1].number_input(f"Image (1 to {len(mine)})", 1, max(1, len(mine)), 1, key=f"inside_pos-{name}")
            if len(mine):
                image = iv.to_tensor(images[mine[int(position) - 1]])
        else:
            upload = st.file_uploader("Your image", type=pv.IMAGE_TYPES, key="inside_upload")
            if upload is not None:
                image = predictor.prepare(upload.getvalue(), upload.name)
    if image is None:
        st.info("Upload an image to look inside the model with it.")
        st.stop()
    probs = predictor.probabilities(image[None])[0]
    with right:
        a, b = st.columns([1, 2], vertical_alignment="center")
        a.image(
            insight.enlarge(predictor.model_view(image).permute(1, 2, 0).numpy(), 128),
            width=128,
            caption=f"what the model sees ({predictor.input_size} px)",
        )
        b.markdown("**The model says**  \n" + "  \n".join(f"{t['label']}: {t['prob']:.1%}" for t in predictor.topk(probs, 3)))

    view = st.segmented_control(
        "Show",
        ["maps", "first", "embedding"],
        default="maps",
        required=True,
        key="inside_view",
        format_func={
            "maps": "Feature maps",
            "first": "First layer: filters and arithmetic",
            "embedding": "The test set in the last hidden layer",
        }.get,
    )
    if view == "maps":
        iv.feature_maps_section(acts, image)
    elif view == "first":
        st.markdown("##### The first layer's filters")
        iv.filters_section(acts)
        st.markdown("##### One output value, worked out")
        iv.arithmetic_section(acts, image)
    else:
        result, _ = insight.evaluated_run(run_dir)
        iv.embedding_section(run_dir, result, images, look_inside=lambda i: look_at(i, classes, labels))
