"""Your own classes on the pages, under Streamlit's AppTest: a set made on the Train page, pictures added per class by
upload and by camera, one removed with a click, the split and the small-data recipe; then the camera on Predict."""

from __future__ import annotations

import io
import socket
import urllib.error
import urllib.request

import pytest
import torch
import torchvision
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import APP, no_exception, open_page

from core.data import classes
from core.data import datasets as data
from core.device import uses_gpu
from core.models.backbones import weights_summary
from core.models.presets import OFFLINE_PRESET
from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import train
from studio import backbones

pytestmark = pytest.mark.timeout(300)


def photo(colour: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    img = Image.new("RGB", (96, 72), colour)
    img.paste((255 - colour[0], 255 - colour[1], 255 - colour[2]), (20, 20, 50, 50))  # not a flat picture
    img.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def data_dir(tmp_path, models_root, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setattr(data, "DATA_DIR", folder)  # read at import: the pages' sets_root() follows this
    return folder


def _hp(model: str, field: str) -> str:
    """A hyperparameter field's widget key as the Train form names it on this machine (a GPU's recipe has its own)."""
    return f"hp-{model}-{'gpu-' * uses_gpu('auto')}{field}"


def _widget(elements, key: str):
    return next(e for e in elements if e.key == key)


def test_a_set_is_made_on_the_train_page_by_upload_camera_and_a_click(data_dir):
    at = open_page("pages/train.py")
    at.segmented_control(key="data_kind").set_value("classes").run()
    no_exception(at)
    at.text_input(key="classes_new_name").set_value("desk")
    next(b for b in at.button if b.label == "Create set").click().run()
    no_exception(at)
    desk = classes.sets_root(None, data_dir) / "desk"
    assert classes.counts(desk) == {"Class 1": 0, "Class 2": 0}
    assert any("Add at least 2 pictures to every class" in i.value for i in at.info)
    assert not any(b.label == "Start training" and not b.disabled for b in at.button)  # nothing to train on yet

    # Uploads: many files at once, one of them not a picture; the uploader comes back empty for the next ones.
    at.file_uploader(key="up-desk/Class 1-0").set_value(
        [(f"red{i}.png", photo((200 + 10 * i, 30, 30), "PNG"), "image/png") for i in range(4)]
        + [("notes.jpg", b"my notes, not a picture", "image/jpeg")]
    ).run()
    no_exception(at)
    assert classes.counts(desk)["Class 1"] == 4
    assert any("notes.jpg" in w.value for w in at.warning)  # refused, with its name
    assert at.file_uploader(key="up-desk/Class 1-1").value in (None, [])

    # The camera: each picture taken goes into the class at once.
    at.toggle(key="cam-on-desk/Class 2").set_value(True).run()
    for shot, colour in enumerate([(30, 30, 200), (40, 60, 220), (20, 90, 180)]):
        _widget(at.get("camera_input"), f"cam-desk/Class 2-{shot}").set_value(("shot.jpg", photo(colour), "image/jpeg"))
        at.run()
        no_exception(at)
    assert classes.counts(desk) == {"Class 1": 4, "Class 2": 3}

    # Remove a picture with a click on its x.
    first = classes.images(desk, "Class 1")[0].name
    at.button(key=f"rm-desk/Class 1/{first}").click().run()
    no_exception(at)
    assert classes.counts(desk) == {"Class 1": 3, "Class 2": 3}
    assert first not in [p.name for p in classes.images(desk, "Class 1")]

    # The split before training, its warning, and the recipe for few pictures pre-selected in the model picker.
    split = at.dataframe[0].value
    assert split.to_dict("records") == [
        {"class": "Class 1", "images": 3, "train": 2, "test": 1},
        {"class": "Class 2", "images": 3, "train": 2, "test": 1},
    ]
    assert any(w.value.startswith("2 test images: each one is 50 points") for w in at.warning)
    assert at.segmented_control(key="model_kind").value == "pretrained"
    assert at.selectbox(key="pretrained_name").value == "mobilenet_v3_small" and at.toggle(key="freeze").value
    assert at.toggle(key="small_recipe").value
    assert at.select_slider(key=_hp("mobilenet_v3_small", "batch")).value == classes.MIN_BATCH  # 4 pictures, batch 4
    assert at.get("number_input") and any(e.key == _hp("mobilenet_v3_small", "epochs") for e in at.number_input)


def test_predict_from_the_camera(data_dir, models_root):
    desk = classes.create_set(classes.sets_root(None, data_dir), "desk")
    for name, colour in [("mug", (200, 40, 40)), ("keys", (40, 40, 200))]:
        classes.add_class(desk, name)
        classes.add_images(desk, name, [(f"{name}{i}.jpg", photo((colour[0] - 9 * i, colour[1] + 7 * i, colour[2]))) for i in range(6)])
    run_dir = models_root / runs.new_run_id("cifar10_quick", "desk")
    train(TrainConfig.for_model("cifar10_quick", data=classes.spec(desk), epochs=1, batch_size=4, precision="fp32"), run_dir)

    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/predict.py").run()
    no_exception(at)
    assert not at.get("camera_input")  # off until asked for: a browser asks for the camera permission
    at.toggle(key="predict_camera").set_value(True).run()
    at.camera_input(key="predict_shot").set_value(("snap.jpg", photo((190, 50, 40)), "image/jpeg")).run()
    no_exception(at)
    answer = [m.value for m in at.markdown if "camera.jpg" in m.value and "→" in m.value]
    assert answer and ("mug" in answer[0] or "keys" in answer[0]), [m.value for m in at.markdown]


def _few_pictures(data_dir) -> str:
    """A set of two classes with six pictures each: the page proposes the recipe for few pictures."""
    desk = classes.create_set(classes.sets_root(None, data_dir), "desk")
    for name, colour in [("mug", (200, 40, 40)), ("keys", (40, 40, 200))]:
        classes.add_class(desk, name)
        classes.add_images(desk, name, [(f"{name}{i}.jpg", photo((colour[0] - 9 * i, colour[1] + 7 * i, colour[2]))) for i in range(6)])
    return classes.spec(desk)


def _recipe_page(data_dir) -> tuple[AppTest, dict]:
    counts = data.imagefolder_counts(_few_pictures(data_dir).removeprefix("imagefolder:"))
    recipe = classes.small_data_recipe(counts["train"])
    at = open_page("pages/train.py")
    at.segmented_control(key="data_kind").set_value("classes").run()
    no_exception(at)
    return at, recipe


def _fields(at: AppTest, model: str = "mobilenet_v3_small") -> tuple:
    """(batch, epochs, optimizer) as the form shows them for `model`."""
    return (
        at.select_slider(key=_hp(model, "batch")).value,
        at.number_input(key=_hp(model, "epochs")).value,
        at.selectbox(key=_hp(model, "opt")).value,
    )


def _start_enabled(at: AppTest) -> bool:
    return any(b.label == "Start training" and not b.disabled for b in at.button)


def test_the_recipe_for_few_pictures_survives_a_change_of_weights_source(data_dir):
    """The fields keep the recipe whether the weights come from ImageNet, a file here or an upload, and the toggle says
    which; changing a setting the recipe set turns it off (it never claims settings that are not used), on restores it."""
    at, recipe = _recipe_page(data_dir)
    recipe_fields = (recipe["batch_size"], recipe["epochs"], "sgd")
    assert _fields(at) == recipe_fields and at.toggle(key="small_recipe").value
    assert "ImageNet weights" in at.toggle(key="small_recipe").label

    weights = at.selectbox(key="weights-mobilenet_v3_small")
    for source, words in [
        (backbones.PATH, "your weights file"),
        (backbones.UPLOAD, "your weights file"),
        ("IMAGENET1K_V1", "ImageNet weights"),
    ]:
        weights.set_value(source).run()
        no_exception(at)
        assert _fields(at) == recipe_fields, source  # not another model's defaults while the file is still to come
        assert (
            at.toggle(key="small_recipe").value
            and words in at.toggle(key="small_recipe").label
            and f"batch {recipe['batch_size']}" in at.toggle(key="small_recipe").label
        )

    # A local file: the run is made with the recipe's settings and that file.
    weights_file = data_dir / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), weights_file)
    weights.set_value(backbones.PATH).run()
    at.text_input(key="weights_path").set_value(str(weights_file)).run()
    assert _fields(at) == recipe_fields and at.toggle(key="small_recipe").value and _start_enabled(at)

    # The user's own batch size: the toggle goes off and says why; on again, the recipe comes back.
    at.select_slider(key=_hp("mobilenet_v3_small", "batch")).set_value(16).run()
    no_exception(at)
    assert not at.toggle(key="small_recipe").value and _fields(at)[0] == 16
    assert any("you changed the batch size" in c.value for c in at.caption)
    at.toggle(key="small_recipe").set_value(True).run()
    assert _fields(at) == recipe_fields and at.toggle(key="small_recipe").value

    # No weights at all cannot be the recipe (nothing pretrained to freeze): off too.
    weights.set_value(backbones.NONE).run()
    assert not at.toggle(key="small_recipe").value and any("you changed the weights" in c.value for c in at.caption)
    at.toggle(key="small_recipe").set_value(True).run()
    assert at.selectbox(key="weights-mobilenet_v3_small").value == "IMAGENET1K_V1" and _fields(at) == recipe_fields


def test_the_recipe_fills_the_fields_a_cuda_machine_shows(data_dir, monkeypatch):
    """On a CUDA machine the form's fields are the GPU recipe's (their own keys): the recipe must land in those."""
    import core.models.presets
    import studio.train_form

    for module in (core.models.presets, studio.train_form):  # "auto" picks a CUDA GPU here, without one to run on
        monkeypatch.setattr(module, "uses_gpu", lambda device: device in ("cuda", "auto"))
    at, recipe = _recipe_page(data_dir)
    shown = (at.select_slider(key="hp-mobilenet_v3_small-gpu-batch").value, at.number_input(key="hp-mobilenet_v3_small-gpu-epochs").value)
    assert shown == (recipe["batch_size"], recipe["epochs"]) and at.toggle(key="small_recipe").value


def test_offline_imagenet_weights_say_so_at_start_and_offer_a_way_on(data_dir, models_root, monkeypatch, tmp_path):
    """Offline, with the weights not on disk: Start makes no run that fails; the page names the file, where to get it
    and how to upload it, and trains the small preset from scratch (with the recipe's batch and epochs) instead."""
    asked: list[str] = []

    def offline(url, *args, **kwargs):
        asked.append(str(url))
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    for proxy in ("https_proxy", "HTTPS_PROXY"):  # a run process that tried anyway would not leave this machine
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    at, recipe = _recipe_page(data_dir)
    assert any("are not on this computer yet" in w.value for w in at.warning) and _start_enabled(at)
    assert not asked  # drawing the page only looks in the cache

    next(b for b in at.button if b.label == "Start training").click().run()
    no_exception(at)
    assert asked == [weights_summary("mobilenet_v3_small")["url"]]
    assert runs.list_runs(models_root) == []  # no failed run in any list
    (error,) = [e.value for e in at.error]
    assert "mobilenet_v3_small-047dcff4.pth" in error and "upload it in the studio" in error and "Errno" not in error
    assert not _start_enabled(at)  # it would fail the same way
    assert any(f"{OFFLINE_PRESET} needs no download" in c.value and "lower test accuracy" in c.value for c in at.caption)

    next(b for b in at.button if b.label == f"Train {OFFLINE_PRESET} from scratch").click().run()
    no_exception(at)
    assert at.segmented_control(key="model_kind").value == "preset"
    assert at.selectbox(key="preset_name").value == OFFLINE_PRESET
    assert _fields(at, OFFLINE_PRESET)[:2] == (recipe["batch_size"], recipe["epochs"])
    assert not at.toggle(key="small_recipe").value and any("you changed the model" in c.value for c in at.caption)
    assert _start_enabled(at) and not at.error
