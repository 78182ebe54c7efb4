"""The lessons on their pages, under Streamlit's AppTest: for every task, a right answer passes (and is remembered:
the page's count, the overview, the navigation's tick) and a wrong one shows its hint. Progress is per browser: its
learner id (a cookie), or its workspace in shared mode."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw
from test_app import no_exception, open_page

from core.data import datasets as data
from core.lessons import LESSONS
from core.lessons.progress import Progress, progress_path
from studio import lessons

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def data_dir(tmp_path, models_root, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setattr(data, "DATA_DIR", folder)  # where the progress file goes (core.lessons.progress)
    return folder


def passed(at, data_dir) -> set[str]:
    """The tasks passed by the browser behind `at` (AppTest sends no cookie: each test is a new browser)."""
    return set(Progress(progress_path(learner=at.session_state["learner"], data_dir=data_dir)).passed())


def check(at, key: str):
    at.button(key=f"check:{key}").click().run()
    no_exception(at)
    return at


def hint(at) -> str:
    assert not at.success or all("Same shapes" in s.value or "same number" in s.value for s in at.success), [s.value for s in at.success]
    (box,) = [w.value for w in at.warning if w.value.startswith("**Not yet.**")]
    return box


def success(at) -> str:
    return " ".join(s.value for s in at.success)


def nav_icons(at) -> dict[str, str]:
    """The navigation's entries (title -> icon) as the last run registered them with st.navigation."""
    return {info["page_name"]: info["icon"] for info in at._registered_pages.values()}


# --------------------------------------------------------------------------- lesson 1


def test_first_steps_converge_task(data_dir):
    at = open_page("pages/first_steps.py")
    at.select_slider[0].set_value(0.05).run()  # the default: 57 steps
    assert "57 steps" in hint(check(at, "regression.converge")) and not passed(at, data_dir)
    at.select_slider[0].set_value(0.3).run()
    assert not any(w.value.startswith("**Not yet.**") for w in at.warning)  # a verdict for another lr is not shown
    check(at, "regression.converge")
    assert "7 steps" in success(at) and passed(at, data_dir) == {"regression.converge"}
    assert any("tasks passed: 1 of 2" in c.value for c in at.caption)


def test_first_steps_diverge_task_and_the_broadcasting_trap(data_dir):
    at = open_page("pages/first_steps.py")
    at.select_slider[0].set_value(0.5).run()
    assert "larger learning rate" in hint(check(at, "regression.diverge"))
    at.select_slider[0].set_value(1.1).run()
    assert "diverged" in success(check(at, "regression.diverge"))
    # the trap: [30, 1] outputs against [1, 30] targets (the page's start) warn and fit a flat line
    assert any("target size (torch.Size([1, 30]))" in c.value for c in at.code)
    assert any("A flat line" in m.value for m in at.markdown)
    at.selectbox(key="trap_target").set_value("[30, 1]").run()
    assert not any("target size" in c.value for c in at.code) and not any("A flat line" in m.value for m in at.markdown)


# --------------------------------------------------------------------------- lesson 2


def test_padding_task(data_dir):
    at = open_page("pages/lesson_padding.py")
    assert any("mat1 and mat2" in c.value or "too small" in c.value for c in at.code)  # padding 0: PyTorch's own error
    for i, p in ((0, 2), (2, 1), (4, 2)):
        at.number_input(key=f"pad{i}").set_value(p)
    at.run()
    assert "model[2] shrinks 16×16 to 14×14" in hint(check(at, "padding.same_size"))
    at.number_input(key="pad2").set_value(2).run()
    assert "keeps its size" in success(check(at, "padding.same_size"))
    assert passed(at, data_dir) == {"padding.same_size"}
    assert nav_icons(at)["Sequential & padding"] == lessons.DONE_ICON


# --------------------------------------------------------------------------- lesson 3


def test_loss_task_and_the_real_run_after_it(data_dir):
    at = open_page("pages/lesson_loss.py")
    assert any("0.4170" in s.value for s in at.success)  # by hand == nn.CrossEntropyLoss
    at.number_input(key="uniform_guess").set_value(0.1).run()
    assert "probability" in hint(check(at, "loss.uniform"))
    assert not at.get("plotly_chart")  # the run is the reward, after the prediction
    at.number_input(key="uniform_guess").set_value(2.303).run()
    assert "ln 10" in success(check(at, "loss.uniform"))
    assert at.get("plotly_chart") and passed(at, data_dir) == {"loss.uniform"}


# --------------------------------------------------------------------------- lesson 4


def test_loop_accumulate_task(data_dir):
    at = open_page("pages/lesson_loop.py")
    at.radio(key="loop_answer").set_value("sum").run()
    assert "Untick" in hint(check(at, "loop.accumulate"))
    at.toggle(key="loop_zero_grad").set_value(False).run()
    at.radio(key="loop_answer").set_value("latest").run()
    assert "does not overwrite" in hint(check(at, "loop.accumulate"))
    at.radio(key="loop_answer").set_value("sum").run()
    assert "adds each new gradient" in success(check(at, "loop.accumulate"))
    assert any("# optimizer.zero_grad()" in c.value for c in at.code)  # the code on screen lost the line too


def test_loop_steps_task(data_dir):
    at = open_page("pages/lesson_loop.py")
    at.number_input(key="steps_answer0").set_value(313).run()
    assert "test set" in hint(check(at, "loop.steps"))
    at.number_input(key="steps_answer0").set_value(1563).run()
    assert "1563" in success(check(at, "loop.steps"))
    next(b for b in at.button if b.label == "Another one").click().run()
    assert any("10,000" in c.value for c in at.code)  # the next puzzle
    assert passed(at, data_dir) == {"loop.steps"}


# --------------------------------------------------------------------------- lesson 5


def test_device_task(data_dir):
    at = open_page("pages/lesson_device.py")
    assert any("not on the expected device" in c.value or "should be the same" in c.value for c in at.code)  # reproduced
    at.selectbox(key="device_statement").set_value("images.to(device)")
    at.radio(key="device_slot").set_value("A").run()
    assert "moved copy" in hint(check(at, "device.to_device"))
    at.selectbox(key="device_statement").set_value("images, labels = images.to(device), labels.to(device)").run()
    assert "It runs" in success(check(at, "device.to_device"))
    assert passed(at, data_dir) == {"device.to_device"}


# --------------------------------------------------------------------------- lesson 6


def test_saving_task(data_dir):
    at = open_page("pages/lesson_saving.py", timeout=120)
    at.selectbox(key="save_build").set_value("model = tiny_net(num_classes=3)")
    at.selectbox(key="save_load").set_value('model.load_state_dict(torch.load("tiny.pt", weights_only=True))')
    at.selectbox(key="save_mode").set_value("(nothing)").run()
    assert "training mode" in hint(check(at, "saving.reload"))
    at.selectbox(key="save_mode").set_value("model.eval()").run()
    assert "same prediction" in success(check(at, "saving.reload"))
    assert passed(at, data_dir) == {"saving.reload"}


# --------------------------------------------------------------------------- lesson 7


def test_new_image_task(data_dir):
    at = open_page("pages/lesson_new_image.py", timeout=120)
    at.radio(key="new_image_choice").set_value("training").run()
    assert "different tensors" in hint(check(at, "new_image.eval_transform"))
    at.radio(key="new_image_choice").set_value("imagenet").run()
    assert "ImageNet" in hint(check(at, "new_image.eval_transform"))
    at.radio(key="new_image_choice").set_value("eval").run()
    assert "Deterministic" in success(check(at, "new_image.eval_transform"))
    assert passed(at, data_dir) == {"new_image.eval_transform"}
    at.file_uploader(key="new_image_upload").set_value(("mine.png", photo(), "image/png")).run()  # the learner's own
    no_exception(at)
    assert not at.success  # the verdict was for the sample picture
    at.radio(key="new_image_choice").set_value("training").run()
    assert "different tensors" in hint(check(at, "new_image.eval_transform"))  # checked on the upload now


def photo() -> bytes:
    picture = Image.new("RGB", (120, 90), (40, 90, 200))
    ImageDraw.Draw(picture).ellipse((30, 15, 90, 75), fill=(240, 200, 40))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- lesson 8


def test_fine_tuning_task(data_dir):
    at = open_page("pages/lesson_fine_tuning.py")
    at.radio(key="ft_freeze").set_value("every parameter")
    at.radio(key="ft_replace").set_value("model.classifier[6]")
    at.radio(key="ft_order").set_value("replace, then freeze").run()
    assert "Nothing trains" in hint(check(at, "fine_tuning.head_only"))
    at.radio(key="ft_order").set_value("freeze, then replace").run()
    assert "Only classifier.6.weight and classifier.6.bias train" in success(check(at, "fine_tuning.head_only"))
    assert passed(at, data_dir) == {"fine_tuning.head_only"}


# --------------------------------------------------------------------------- progress


def test_the_overview_shows_progress_and_starts_over(data_dir):
    at = open_page("pages/lessons.py")
    store = Progress(progress_path(learner=at.session_state["learner"], data_dir=data_dir))
    for task in LESSONS[1].tasks + LESSONS[7].tasks:
        store.mark(task.key)
    at.run()
    no_exception(at)
    assert "2 of 8 lessons done" in at.get("progress")[0].proto.text
    icons = nav_icons(at)
    assert icons["Sequential & padding"] == icons["Fine-tuning"] == lessons.DONE_ICON and icons["First steps"] == lessons.TODO_ICON
    next(b for b in at.button if b.label == "Forget my progress").click().run()
    assert store.passed() == {} and "0 of 8 lessons done" in at.get("progress")[0].proto.text


def test_shared_mode_keeps_progress_per_workspace(data_dir, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_SHARED", "1")
    at = open_page("pages/lesson_padding.py")
    code = at.session_state["workspace"]
    for i in (0, 2, 4):
        at.number_input(key=f"pad{i}").set_value(2)
    at.run()
    check(at, "padding.same_size")
    assert set(Progress(progress_path(workspace=code, data_dir=data_dir)).passed()) == {"padding.same_size"}
    assert "learner" not in at.session_state and not (data_dir / "lessons").exists()  # no browser-wide file
    other = open_page("pages/lessons.py")
    assert other.session_state["workspace"] != code and "0 of 8 lessons done" in other.get("progress")[0].proto.text
