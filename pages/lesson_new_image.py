import pandas as pd
import streamlit as st

from core.data.batches import IMAGENET_MEAN, IMAGENET_STD
from core.data.images import open_image
from core.lessons import new_image
from studio import lessons, workspace
from studio.predict_view import IMAGE_TYPES
from studio.widgets import guard

model_run = st.cache_resource(show_spinner="Training the tiny net (a few seconds, once)…")(new_image.model_run)
sample_picture = st.cache_resource(show_spinner=False)(new_image.sample_picture)


def show(guesses: list[new_image.Guess]) -> None:
    for column, guess in zip(st.columns(len(guesses)), guesses):
        column.image(guess.seen, width=96)
        column.markdown(f"**{guess.index}** · {guess.label}  \n{guess.prob:.0%}")


lessons.header("new_image")
st.markdown(
    "A learner fine-tuned AlexNet, then showed it the same photo three times and got three answers: class **263**, "
    "then **151**, then **264** (Pembroke corgi, Chihuahua, Cardigan corgi). His validation code reused the training "
    "transform, with `RandomResizedCrop`: every call cuts a different random piece of the photo and stretches it to "
    "the network's size. Here the same happens to a tiny network that knows three shapes (circle, cross, stripes)."
)
run = model_run()
upload = st.file_uploader(
    "Your picture (or keep the sample)", type=IMAGE_TYPES, key="new_image_upload", max_upload_size=workspace.upload_cap_mb()
)
picture = None
with guard():
    picture = open_image(upload.getvalue(), name=upload.name) if upload else sample_picture()
if picture is None:
    st.stop()
mean, std = new_image.training_stats(run)

st.markdown(f"**With the training transform**, five times: `{new_image.TRANSFORM_CODE['training']}`")
left, right = st.columns([1, 4], vertical_alignment="center")
left.image(picture, caption="the picture", width=140)
with right:
    show(new_image.guesses(picture, "training"))
st.markdown(f"**With the eval transform**, five times: `{new_image.TRANSFORM_CODE['eval']}`")
left, right = st.columns([1, 4], vertical_alignment="center")
left.image(picture, caption="the picture", width=140)
with right:
    show(new_image.guesses(picture, "eval"))
st.caption("Under each: what the network was given (the transform's output, its normalization undone), its answer and how sure it was.")

st.subheader("Where Normalize's numbers come from")
st.markdown(
    "`Normalize(mean, std)` makes each colour channel average 0 and spread 1, **as measured on the training "
    "pictures**, and every picture the network ever sees must get the same. They are computed once, over the training "
    "set: `images.float().div(255).mean(dim=(0, 2, 3))` and `.std(...)`. A network trained from scratch uses its own "
    "data's numbers; one with **pretrained weights** uses the numbers of the data those weights learned from, "
    "ImageNet's for torchvision's."
)
st.dataframe(
    pd.DataFrame(
        {
            "channel": ["red", "green", "blue"],
            "mean (shapes)": mean,
            "std (shapes)": std,
            "mean (ImageNet)": IMAGENET_MEAN,
            "std (ImageNet)": IMAGENET_STD,
        }
    ).style.format(precision=3),
    hide_index=True,
)
with lessons.task_box(
    "new_image.eval_transform",
    "Which transform belongs in this network's prediction code? It was trained from scratch on the shapes; `mean` and "
    "`std` are their statistics above. The page runs your choice on your picture.",
):
    choice = st.radio(
        "The transform for predictions",
        list(new_image.TRANSFORM_CODE),
        format_func=lambda name: f"`{new_image.TRANSFORM_CODE[name]}`",
        index=None,
        key="new_image_choice",
    )
    lessons.check(
        "new_image.eval_transform",
        lambda: new_image.check_eval_transform(choice, picture),
        (choice, upload.file_id if upload else "sample"),
    )
lessons.next_lesson("new_image")
