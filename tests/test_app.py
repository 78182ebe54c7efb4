"""The pages under Streamlit's AppTest, and the UI helpers they are built from.

One tiny run on `shapes` is trained from the Train page (module scope, so the
pages that need a finished run share it); everything else is quick.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import runs
from core.curves import Curves, RunTail, downsample, ema, format_duration
from core.data import shapes_dataset
from core.models import build, build_from_spec, spec_of
from studio import arch, charts, state

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
PAGES = ["pages/home.py", "pages/first_steps.py", "pages/architecture.py", "pages/train.py", "pages/predict.py",
         "pages/inside.py", "pages/runs.py"]

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
    at.file_uploader(key="images").set_value([("circle.png", png(0), "image/png"),
                                              ("notes.png", b"just some text, not a picture", "image/png")])
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


def test_conv_calculator_and_padding_solver(models):
    at = open_page("pages/architecture.py")
    assert any("= 32" in c.value for c in at.code)  # (32 + 2*2 - 1*(5-1) - 1) / 1 + 1 = 32
    assert any("padding = 2" in s.value for s in at.success)


# --------------------------------------------------------------------------- first steps and runs


def test_first_steps_trains_the_line(models):
    at = open_page("pages/first_steps.py")
    at.button_group[0].set_value("instant").run()
    next(b for b in at.button if b.label == "Train").click().run()
    no_exception(at)
    values = {m.label: m.value for m in at.metric}
    assert values["step (of 100)"] == "100"
    assert abs(float(values["w (→ 2)"]) - 2) < 0.2 and abs(float(values["b (→ 3)"]) - 3) < 0.2


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
    at.selectbox(key="manage_pick").set_value(copy.name).run()
    next(b for b in at.button if b.label == "Yes, delete it").click().run()
    no_exception(at)
    assert not copy.exists() and run_dir.exists()


# --------------------------------------------------------------------------- helpers without a page


def _steps(n: int, start: int = 1) -> list[dict]:
    return [{"kind": "step", "epoch": 0, "step": s, "progress": s / 100, "loss": 1.0 / s, "acc": 0.5, "lr": 0.1,
             "img_per_s": 100.0, "time": float(s)} for s in range(start, start + n)]


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
    curves.add([{"kind": "status", "status": "running"}, {"kind": "step", "step": 1, "progress": 0.5, "time": 100.0},
                {"kind": "step", "step": 2, "progress": 1.0, "time": 110.0}])
    assert curves.eta_seconds(epochs=3) == pytest.approx(40.0)
    assert ema([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no dip towards 0 at the start
    assert ema([1.0, None, 3.0], 0.0) == [1.0, None, 3.0]
    assert len(downsample(pd.DataFrame({"a": range(10_000)}), 100)) <= 101
    assert format_duration(83) == "1:23" and format_duration(3725) == "1:02:05" and format_duration(None) == "–"


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
