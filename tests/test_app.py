"""The pages under Streamlit's AppTest, and the UI helpers they are built from.

One tiny run on `shapes` is trained from the Train page (module scope, so the
pages that need a finished run share it); everything else is quick.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.data.datasets import shapes_dataset
from core.models.build import build
from core.models.layers import build_from_spec, spec_of
from core.serving import runs
from core.training.curves import Curves, RunTail, downsample, ema, format_duration
from studio import arch, charts, state
from studio.widgets import readable

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
PAGES = [
    "pages/home.py",
    "pages/first_steps.py",
    "pages/architecture.py",
    "pages/train.py",
    "pages/predict.py",
    "pages/inside.py",
    "pages/runs.py",
]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs, "MODELS_DIR", root)
        mp.setenv("PLAYGROUND_MODELS_DIR", str(root))
        mp.setenv("PLAYGROUND_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        yield root
    for run in root.iterdir():  # never leave a trainer behind
        if run.is_dir():
            (run / runs.STOP_FILE).touch()


def open_page(page: str, timeout: float = 60) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page != "pages/home.py":
        at.switch_page(page)
        at.run()
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def png(label: int = 0, size: int = 64) -> bytes:
    ds = shapes_dataset(n_train=10, n_test=10, seed=5)
    index = int((ds.test.labels == label).nonzero()[0])
    buffer = io.BytesIO()
    Image.fromarray(ds.test.images[index].permute(1, 2, 0).numpy()).resize((size, size)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trained(models):
    """A tiny run started from the Train page, watched until it finishes; returns (AppTest, run folder)."""
    at = open_page("pages/train.py")
    no_exception(at)
    at.select_slider(key="shapes_n").set_value(600)
    at.number_input(key="hp-cifar10_quick-epochs").set_value(1)
    at.run()
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    seen_live = False
    deadline = time.time() + 180
    while time.time() < deadline:
        at.run()
        no_exception(at)
        seen_live |= any(b.label.startswith("Stop") for b in at.button)
        if at.success:
            break
        time.sleep(1)
    assert at.success, "the run did not finish: " + str([e.value for e in at.error] + [w.value for w in at.warning])
    assert seen_live, "the page never showed the run while it trained"
    (run_dir,) = [p for p in models.iterdir() if (p / runs.CONFIG_FILE).exists()]
    return at, run_dir


# --------------------------------------------------------------------------- every page


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_runs(models, page):
    at = open_page(page)
    no_exception(at)
    assert at.title, page
    assert "cores" in at.sidebar.markdown[0].value or "GPU" in at.sidebar.markdown[0].value  # the device badge


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_finished_run(trained, page):
    at = open_page(page)
    no_exception(at)
    assert not at.error, [e.value for e in at.error]


# --------------------------------------------------------------------------- train


def test_train_form_remembers_its_choices_after_another_page(models):
    at = open_page("pages/train.py")
    at.select_slider(key="shapes_n").set_value(2000)
    at.number_input(key="hp-cifar10_quick-epochs").set_value(3)
    at.selectbox(key="hp-cifar10_quick-loss").set_value("nll")
    at.run()
    at.switch_page("pages/runs.py")
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    no_exception(at)
    assert at.select_slider(key="shapes_n").value == 2000
    assert at.number_input(key="hp-cifar10_quick-epochs").value == 3
    assert at.selectbox(key="hp-cifar10_quick-loss").value == "nll"


def test_train_page_shows_the_loop_for_the_current_settings(models):
    at = open_page("pages/train.py")
    code = next(c.value for c in at.code if "for epoch in range(" in c.value)
    assert "range(8)" in code and "nn.CrossEntropyLoss(label_smoothing=0)" in code and "torch.manual_seed(0)" in code
    at.number_input(key="hp-cifar10_quick-epochs").set_value(3)
    at.selectbox(key="hp-cifar10_quick-loss").set_value("nll")
    at.number_input(key="hp-cifar10_quick-seed").set_value(7)
    at.select_slider(key="shapes_n").set_value(600)
    at.run()
    no_exception(at)
    code = next(c.value for c in at.code if "for epoch in range(" in c.value)
    assert "range(3)" in code and "F.nll_loss(F.log_softmax(" in code and "torch.manual_seed(7)" in code
    assert "load_dataset('shapes:600'" in code
    assert at.number_input(key="hp-cifar10_quick-ls").disabled  # smoothing goes with cross-entropy only


def test_train_page_run_produces_curves_and_results(trained):
    at, run_dir = trained
    assert "Finished" in at.success[0].value
    specs = chart_specs(at)
    curves = next(s for s in specs if any(t.get("name") == "train" for t in s["data"]))
    train_loss = next(t for t in curves["data"] if t.get("name") == "train" and t.get("yaxis", "y") == "y")
    assert len(train_loss["x"]) >= 1 and all(v is not None for v in train_loss["y"])
    assert len(specs) >= 3  # curves, per-class accuracy, confusion matrix
    labels = [b.label for b in at.get("download_button")]
    assert any("state_dict" in label for label in labels) and any("Whole model" in label for label in labels)
    config = runs.read_config(run_dir)
    assert config["model"] == "cifar10_quick" and config["data"] == "shapes:600" and config["epochs"] == 1
    assert config["optimizer"] == "adamw"  # the preset's recipe survived the form


def test_a_second_session_sees_the_run(trained):
    _, run_dir = trained
    at = open_page("pages/train.py")
    assert at.selectbox(key=f"pick-{run_dir.name}").value == run_dir.name
    assert at.success and "Finished" in at.success[0].value


def test_start_errors_are_shown_not_raised(models):
    at = open_page("pages/train.py")
    at.number_input(key="hp-cifar10_quick-lr").set_value(1e-6)
    at.run()
    at.segmented_control(key="data_kind").set_value("folder")
    at.run()
    at.text_input(key="data_folder").set_value("/no/such/folder").run()
    no_exception(at)
    assert any("does not exist" in e.value for e in at.error)
    assert next(b for b in at.button if b.label == "Start training").disabled


# --------------------------------------------------------------------------- predict


def test_predict_uploaded_image_gets_topk_and_bad_file_a_message(trained):
    at = open_page("pages/predict.py")
    no_exception(at)
    at.file_uploader(key="images").set_value(
        [("circle.png", png(0), "image/png"), ("notes.png", b"just some text, not a picture", "image/png")]
    )
    at.run()
    no_exception(at)
    tops = [s for s in chart_specs(at) if s["data"] and s["data"][0].get("type") == "bar"]
    assert len(tops) == 1 and len(tops[0]["data"][0]["x"]) == 5
    assert any("circle.png" in m.value and "→" in m.value for m in at.markdown)
    assert [e.value for e in at.error if "notes.png" in e.value], "the bad file got no message"
    assert at.get("download_button")  # batch CSV


def test_predict_with_uploaded_weights_and_refused_pickle(trained):
    _, run_dir = trained
    at = open_page("pages/predict.py")
    at.segmented_control(key="predict_source").set_value("upload").run()
    at.file_uploader(key="weights_upload").set_value(("mine.pt", runs.state_dict_bytes(run_dir), "application/octet-stream"))
    at.run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    at.file_uploader(key="images").set_value(("star.png", png(4), "image/png")).run()
    no_exception(at)
    assert any("star.png" in m.value and "→" in m.value for m in at.markdown)

    whole = runs.whole_model_bytes(build("cifar10_quick"))
    at.file_uploader(key="weights_upload").set_value(("whole.pt", whole, "application/octet-stream")).run()
    no_exception(at)
    assert any("refused" in e.value for e in at.error)


def test_predict_takes_exported_weights_with_their_json_and_names_the_users_files(trained):
    _, run_dir = trained
    at = open_page("pages/predict.py")
    at.segmented_control(key="predict_source").set_value("upload").run()
    at.file_uploader(key="weights_upload").set_value(("my weights.pt", runs.state_dict_bytes(run_dir), "application/octet-stream"))
    at.file_uploader(key="weights_info_upload").set_value(
        ("my weights.json", json.dumps(runs.weights_info(run_dir)).encode(), "application/json")
    )
    at.run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert any("circle, ring" in c.value for c in at.caption)  # the class names came from the JSON
    assert any(t.value == "cifar10_quick" and t.disabled for t in at.text_input)  # and so did the architecture

    at.file_uploader(key="weights_info_upload").set_value(None).run()
    at.selectbox[0].set_value("lenet5").run()  # the wrong architecture for these weights
    messages = [e.value for e in at.error]
    assert messages and all("my weights.pt" in m and "tmp" not in m for m in messages), messages

    at.file_uploader(key="weights_upload").set_value(
        ("my-model.pt", runs.whole_model_bytes(build("lenet5")), "application/octet-stream")
    ).run()
    messages = [e.value for e in at.error]
    assert any("my-model.pt" in m and "on purpose" in m and "state_dict" in m for m in messages), messages


def test_run_results_offer_every_export_and_how_to_load_it(trained):
    at, run_dir = trained
    labels = [b.label for b in at.get("download_button")]
    for wanted in (
        "Weights (state_dict .pt)",
        "Classes + normalization (.json)",
        "Training script (.py)",
        "Notebook (.ipynb)",
        "ONNX (.onnx)",
        "Whole model (pickle)",
    ):
        assert wanted in labels, labels
    code = "\n".join(c.value for c in at.code)
    assert f'model.load_state_dict(torch.load("{run_dir.name}.pt", weights_only=True))' in code
    assert "netron.app" in " ".join(c.value for c in at.caption)
    at = open_page("pages/runs.py")  # the Runs page has the same panel
    no_exception(at)
    assert "Training script (.py)" in [b.label for b in at.get("download_button")]


def test_predict_samples_toggle(trained):
    at = open_page("pages/predict.py")
    at.toggle(key="samples").set_value(True).run()
    no_exception(at)
    assert sum("sample-" in m.value for m in at.markdown) == 4


# --------------------------------------------------------------------------- architecture


def test_architecture_edit_error_names_the_layer(models):
    at = open_page("pages/architecture.py")
    no_exception(at)
    assert at.metric[0].value == "145.6 K"
    shapes = next(d.value for d in at.dataframe if "output shape" in d.value)
    assert shapes["layer"].tolist()[:2] == ["1", "2"] and shapes["in code"].tolist()[:2] == [
        "model[0]",
        "model[1]",
    ]  # rows, and PyTorch's names
    key = f"arch_editor_{at.session_state['arch_version']}"
    at.session_state[key] = {"edited_rows": {7: {"type": "Conv2d"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    no_exception(at)
    assert any("Layer 8 (Conv2d)" in e.value for e in at.error), [e.value for e in at.error]


def test_architecture_use_for_training_saves_and_preselects(models):
    at = open_page("pages/architecture.py")
    at.text_input[0].set_value("tiny-net").run()
    next(b for b in at.button if b.label.startswith("Use for training")).click().run()
    no_exception(at)
    assert [a["name"] for a in arch.saved_architectures()] == ["tiny-net"]
    assert at.segmented_control(key="model_kind").value == "saved"
    assert at.selectbox(key="saved_name").value == "tiny-net"


def test_architecture_torchvision_freeze_map(models):
    at = open_page("pages/architecture.py")
    at.selectbox[0].set_value("resnet18").run()
    at.toggle[0].set_value(True).run()
    no_exception(at)
    assert any("Trainable" in c.value for c in at.caption)
    assert at.metric[1].value == "5.1 K"  # only the new 10-class head


def test_architecture_a_typed_wrong_in_features_gives_the_tutorial_error(models):
    """The classic mistake: a Linear whose in_features does not match what Flatten gives. Blank = worked out."""
    at = open_page("pages/architecture.py")
    key = f"arch_editor_{at.session_state['arch_version']}"
    at.session_state[key] = {"edited_rows": {7: {"in": 1000}}, "added_rows": [], "deleted_rows": []}
    at.run()
    no_exception(at)
    (error,) = [e.value for e in at.error]
    assert "Layer 8 (Linear): in_features is 1000" in error and "64 x 4 x 4 into 1024" in error
    assert "needs in_features=1024" in error and "mat1 and mat2 shapes cannot be multiplied (1x1024 and 1000x64)" in error
    at.session_state[key] = {"edited_rows": {7: {"in": 1024}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.error and at.metric[0].value == "145.6 K"  # the right number is accepted as written


def test_architecture_shows_a_module_class_as_its_source(models):
    at = open_page("pages/architecture.py")
    at.selectbox[0].set_value("mycnn").run()
    no_exception(at)
    source = next(c.value for c in at.code if "class MyCNN(nn.Module)" in c.value)
    assert "def forward(self, x" in source and "self.fc(self.flatten(" in source
    assert not any("cannot be written as one" in i.value for i in at.info)


@pytest.mark.parametrize("model, side", [("vgg16", 64), ("resnet18", 32), ("alexnet", 224)])
def test_architecture_diagram_draws_every_layer_with_room_for_its_label(model, side):
    overview = arch.inspect_model(model, side=side)["overview"]
    assert not overview["type"].isin(["Sequential", "BasicBlock", "Identity"]).any()  # layers, not containers
    assert (overview["type"] == "Conv2d").sum() == {"vgg16": 13, "resnet18": 20, "alexnet": 5}[model]
    fig = charts.architecture_figure(overview, (3, side, side))
    assert sum(s.type == "rect" for s in fig.layout.shapes) == len(overview) + 1  # and the input
    labels, shapes_text = fig.data[0], fig.data[1]
    assert list(labels.text[1:]) == [charts.short_type(t) for t in overview["type"]]
    positions = list(zip(labels.x, labels.y))
    assert len(set(positions)) == len(positions) and max(labels.x) < charts.ARCH_PER_ROW  # one cell per label, wrapped
    # No overlap in the page's wide layout (about 820 px for the chart at a 1280 px window): the widest label fits
    # its cell (a character is about 0.6 of the font size wide).
    cell = 820 / (max(labels.x) + 1)
    for trace in (labels, shapes_text):
        assert max(len(t) for t in trace.text) * trace.textfont.size * 0.6 < cell, trace.text


def test_conv_calculator_and_padding_solver(models):
    at = open_page("pages/architecture.py")
    assert any("= 32" in c.value for c in at.code)  # (32 + 2*2 - 1*(5-1) - 1) / 1 + 1 = 32
    assert any("padding = 2" in s.value for s in at.success)


# --------------------------------------------------------------------------- first steps and runs


def test_home_offers_one_first_step(models):
    at = open_page("pages/home.py")
    no_exception(at)
    starts = [m.value for m in at.markdown if "start here" in m.value.lower() or "quick start" in m.value.lower()]
    assert len(starts) == 1 and "First steps" in starts[0], starts
    (start,) = [b for b in at.button if b.proto.type == "primary"]  # one call to action
    links = [link.proto.page for link in at.get("page_link")]
    assert links[:2] == ["first_steps", "architecture"]  # the path from 1
    assert "lessons" in links  # and the lessons beyond First steps, findable from Home
    start.click().run()
    no_exception(at)
    assert at.title[0].value.endswith("First steps") or "First steps" in at.title[0].value, at.title[0].value


def test_first_steps_trains_the_line(models):
    at = open_page("pages/first_steps.py")
    at.button_group[0].set_value("instant").run()
    next(b for b in at.button if b.label == "Train").click().run()
    no_exception(at)
    values = {m.label: m.value for m in at.metric}
    assert values["step (of 100)"] == "100"
    assert abs(float(values["w (→ 2)"]) - 2) < 0.2 and abs(float(values["b (→ 3)"]) - 3) < 0.2
    assert not at.warning
    # both charts are keyed Vega-Lite charts: a frame swaps their data, the chart itself stays on the page
    line, loss = (pd.DataFrame(vega_rows(chart)) for chart in at.get("vega_lite_chart")[:2])  # the third: the trap
    assert len(loss) == 101 and loss["step"].max() == 100
    assert (line["series"] == charts.REGRESSION_SERIES["data"]).sum() == 100


def vega_rows(chart) -> pd.DataFrame:
    import pyarrow as pa  # streamlit's own dependency: the chart's data travels as Arrow

    return pa.ipc.open_stream(chart.proto.data.data).read_pandas()


def test_first_steps_shows_where_a_diverging_run_stopped(models):
    """lr 1.1, instant: the page shows the step where the loss blew up, its loss curve until then and why."""
    at = open_page("pages/first_steps.py")
    at.select_slider[0].set_value(1.1)
    at.button_group[0].set_value("instant").run()
    next(b for b in at.button if b.label == "Train").click().run()
    no_exception(at)
    values = {m.label: m.value for m in at.metric}
    stopped = int(values["step (of 100)"])
    assert 1 < stopped < 100 and values["loss"] == "∞"
    assert values["w (→ 2)"] == "2×10¹⁸"  # short enough for its column, not a clipped "1802013658..."
    loss = vega_rows(at.get("vega_lite_chart")[1])
    assert len(loss) == stopped and loss["step"].max() == stopped - 1  # every finite step is drawn
    assert any("blew up" in w.value for w in at.warning)
    assert "torch.manual_seed(0)" in at.code[0].value


def test_runs_page_compares_and_deletes(trained, models):
    _, run_dir = trained
    copy = models / (run_dir.name + "-copy")
    copy.mkdir()
    for name in (runs.CONFIG_FILE, runs.METRICS_FILE):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    state.runs_changed()  # a run made outside the app shows up within a second; the test does not wait
    at = open_page("pages/runs.py")
    no_exception(at)
    assert chart_specs(at)
    table = at.dataframe[0].value
    # the figures are not pushed off-screen; beside the accuracy, how many test images it was measured on
    assert list(table.columns[:4]) == ["name", "best accuracy", "test images", "status"]
    # Unnamed runs are called "model on data"; two of one set-up are numbered, not told apart by their ids
    assert set(table["name"]) == {"cifar10_quick on Shapes #1", "cifar10_quick on Shapes #2"}
    at.selectbox(key="manage_pick").set_value(copy.name).run()
    name_box = next(t for t in at.text_input if t.label == "Name")
    name_box.set_value("my copy")
    next(t for t in at.text_area if t.label == "Note").set_value("same run, copied")
    next(b for b in at.button if b.label == "Save name and note").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    info = runs.run_info(copy)
    assert (info.name, info.note) == ("my copy", "same run, copied")
    assert json.loads((copy / runs.CONFIG_FILE).read_text()) == json.loads((run_dir / runs.CONFIG_FILE).read_text())
    label = next(o for o in at.multiselect[0].options if o.startswith("my copy"))
    assert "cifar10_quick" in label and "Shapes" in label and "%" in label, label  # name, model, data, accuracy
    legend = {trace.get("name") for trace in chart_specs(at)[0]["data"]}
    assert {"my copy", "cifar10_quick on Shapes"} <= legend, legend  # the compare chart names runs the same way
    at.selectbox(key="manage_pick").set_value(copy.name).run()
    next(b for b in at.button if b.label == "Yes, delete it").click().run()
    no_exception(at)
    assert not copy.exists() and run_dir.exists()


# --------------------------------------------------------------------------- helpers without a page


def _steps(n: int, start: int = 1) -> list[dict]:
    return [
        {
            "kind": "step",
            "epoch": 0,
            "step": s,
            "progress": s / 100,
            "loss": 1.0 / s,
            "acc": 0.5,
            "lr": 0.1,
            "img_per_s": 100.0,
            "time": float(s),
        }
        for s in range(start, start + n)
    ]


def test_readable_numbers_fit_a_metric():
    assert [readable(v) for v in (1.91449, -0.2, 1234.6, 12345.6, 0.0)] == ["1.914", "-0.200", "1,235", "1.23 × 10⁴", "0.000"]
    assert readable(-8.9e30) == "-8.90 × 10³⁰" and readable(2.5e-7) == "2.50 × 10⁻⁷"
    assert readable(float("inf")) == "∞" and readable(float("nan")) == "NaN"


def test_lesson_charts_keep_their_spec_while_the_model_moves():
    """A frame must change only the data (so the browser updates the chart in place), even when w explodes."""
    x, y = [-2.0, 0.0, 2.0], [-1.0, 3.0, 7.0]
    first = charts.regression_chart(x, y, 0.1, -0.3, (2.0, 3.0))
    later = charts.regression_chart(x, y, 1.8e18, float("inf"), (2.0, 3.0))
    assert first[1] == later[1] and not first[0].equals(later[0])
    assert later[0]["y"].map(math.isfinite).all()  # JSON and Vega carry no inf
    losses = [5.0, 2.0, 0.5, float("inf")]
    frames = [charts.loss_chart(range(n), losses[:n], 3, (0.5, 5.0)) for n in (1, 3, 4)]
    assert frames[0][1] == frames[1][1] == frames[2][1]
    assert len(frames[0][0]) == 1 and len(frames[2][0]) == 3  # one step is still drawn; inf is left out


def test_curves_stay_bounded_and_keep_the_newest_step():
    curves = Curves(max_points=100)
    for chunk in range(50):
        curves.add(_steps(1000, start=chunk * 1000 + 1))
    frame = curves.steps_frame()
    assert len(frame) <= 101 and frame["step"].iloc[-1] == 50_000
    assert frame["step"].is_monotonic_increasing


def test_curves_rewind_when_a_resumed_run_replays_steps():
    curves = Curves(max_points=10)
    curves.add(_steps(30) + [{"kind": "epoch", "epoch": 1, "test_acc": 0.5}, {"kind": "epoch", "epoch": 2, "test_acc": 0.6}])
    curves.add([{"kind": "status", "status": "running"}] + _steps(5, start=21) + [{"kind": "epoch", "epoch": 2, "test_acc": 0.7}])
    frame = curves.steps_frame()
    assert frame["step"].iloc[-1] == 25 and frame["step"].is_monotonic_increasing
    assert curves.epochs_frame()["test_acc"].tolist() == [0.5, 0.7]


def test_run_tail_reads_only_new_lines(tmp_path):
    writer = runs.MetricsWriter(tmp_path)
    tail = RunTail(tmp_path)
    for record in _steps(3):
        writer.write(record)
    assert tail.update() == 3
    assert tail.update() == 0
    writer.write({"kind": "status", "status": "finished"})
    assert tail.update() == 1 and tail.state == "finished"
    writer.close()


def test_eta_and_smoothing_and_formatting():
    curves = Curves()
    curves.add(
        [
            {"kind": "status", "status": "running"},
            {"kind": "step", "step": 1, "progress": 0.5, "time": 100.0},
            {"kind": "step", "step": 2, "progress": 1.0, "time": 110.0},
        ]
    )
    assert curves.eta_seconds(epochs=3) == pytest.approx(40.0)
    assert ema([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no dip towards 0 at the start
    assert ema([1.0, None, 3.0], 0.0) == [1.0, None, 3.0]
    assert len(downsample(pd.DataFrame({"a": range(10_000)}), 100)) <= 101
    assert format_duration(83) == "1:23" and format_duration(3725) == "1:02:05" and format_duration(None) == "–"


def test_compared_losses_go_on_a_log_axis_only_when_one_run_blew_up():
    def run(losses):
        curves = Curves()
        curves.add([{"kind": "step", "step": i + 1, "progress": (i + 1) / len(losses), "loss": v} for i, v in enumerate(losses)])
        return curves

    calm = {"lr 0.0003": run([2.3, 2.2, 2.1, 2.0]), "lr 0.003": run([2.3, 1.8, 1.4, 1.2])}
    assert charts.compare_figure(calm, smoothing=0).layout.yaxis.type in (None, "linear")
    blown = {**calm, "lr 0.03": run([2.3, 350.0, 410.0, 40.0])}  # the 3 x 2 sweep's lr 0.03 on shapes
    axis = charts.compare_figure(blown, smoothing=0).layout.yaxis
    assert axis.type == "log" and "log" in axis.title.text


def test_layer_table_round_trips_and_orders_rows():
    spec = spec_of(build("cifar10_quick"))
    table = arch.spec_to_table(spec)
    assert build_from_spec(arch.table_to_spec(table)) is not None
    assert [layer["type"] for layer in arch.table_to_spec(table)] == [layer["type"] for layer in spec]
    extra = pd.concat([table, pd.DataFrame([{"#": 6.5, "type": "Dropout", "p": 0.25}, {"type": None}])], ignore_index=True)
    edited = arch.table_to_spec(arch.typed_table(extra))
    assert edited[6] == {"type": "Dropout", "p": 0.25} and len(edited) == len(spec) + 1
    no_bias = arch.typed_table(table.assign(bias=[False] * len(table)))
    assert arch.table_to_spec(no_bias)[0]["bias"] is False


def test_charts_build_from_run_records():
    curves = Curves()
    curves.add(_steps(50) + [{"kind": "epoch", "epoch": 1, "train_acc": 0.4, "test_acc": 0.5, "test_loss": 1.2}])
    fig = charts.training_figure(curves, smoothing=0.6, epochs=3)
    assert {t.name for t in fig.data} >= {"train", "test"}
    assert charts.confusion_figure(["a", "b"], [[3, 1], [0, 4]]).data[0].type == "heatmap"
    assert len(charts.topk_figure([{"label": "a", "prob": 0.9}, {"label": "b", "prob": 0.1}]).data[0].x) == 2
    table = arch.inspect_model("cifar10_quick")["overview"]
    assert len(charts.architecture_figure(table, (3, 32, 32)).layout.shapes) > len(table)
