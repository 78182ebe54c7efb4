"""What the pages show must be what happened (issue #18): run settings in words and only those that applied,
same-named runs told apart in words, failed runs out of the default comparison, a rename confirmed, the
architecture's working layers kept while one is wrong, failed Predict files listed in full, a plain device badge.

Run folders are written by conftest.fake_run (no training) except where a checkpoint is needed.
tests/test_browser_trust.py checks, in Chromium, what only a browser shows.
"""

from __future__ import annotations

import json

import pytest
from conftest import fake_run
from streamlit.testing.v1 import AppTest
from test_app import APP, chart_specs, no_exception, png

from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import train
from studio import state, widgets

pytestmark = pytest.mark.timeout(300)
T0 = 1_790_000_000.0  # a fixed start time: runs are numbered by it


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(page)
    return at.run()


# --------------------------------------------------------------------------- settings in words


def test_settings_in_words_show_only_what_applied():
    from core.training.describe import settings_in_words

    adamw = settings_in_words({**TrainConfig(optimizer="adamw", lr=0.003).to_dict(), "env": {"device": "cpu", "precision": "bf16"}})
    assert adamw["Optimizer"] == "AdamW, lr 0.003, weight decay 0.0005"
    text = json.dumps(adamw)
    assert "omentum" not in text and "Nesterov" not in text  # AdamW has no momentum setting
    assert "None" not in text and "False" not in text and "True" not in text
    assert not {"Weight averaging", "Time limit", "Test-time augmentation", "Input size", "Speed-ups"} & set(adamw)
    assert adamw["Device"] == "CPU, bf16 (16-bit numbers)"

    sgd = settings_in_words(TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0).to_dict())
    assert sgd["Optimizer"] == "SGD, lr 0.05, momentum 0.9 (Nesterov)"

    extras = settings_in_words(TrainConfig(ema=0.99, time_limit=300, tta=1, augment=False, label_smoothing=0.1, health=False).to_dict())
    assert "0.99" in extras["Weight averaging"] and extras["Time limit"] == "stop after 5 min"
    assert extras["Augmentation"] == "none" and extras["Loss"] == "Cross-entropy, label smoothing 0.1"
    assert extras["Training health"] == "not recorded" and "mirror" in extras["Test-time augmentation"]


def test_same_named_runs_are_numbered_by_start_not_by_id(tmp_path):
    folders = [fake_run(tmp_path, f"20300101-0000{i}-cifar10_quick-shapes-{h}", created=T0 + i) for i, h in enumerate(["ff01", "0a02"])]
    runs.write_meta(fake_run(tmp_path, "mine", created=T0 + 5), name="cifar10_quick on Shapes #1")  # a hand-made clash
    fake_run(tmp_path, "other", created=T0 + 9, data="cifar10")
    names = runs.distinct_names(runs.list_runs(tmp_path))
    assert names[folders[0].name] == "cifar10_quick on Shapes #2"  # "#1" is taken by the run named so by hand
    assert names[folders[1].name] == "cifar10_quick on Shapes #3"
    assert names["mine"] == "cifar10_quick on Shapes #1" and names["other"] == "cifar10_quick on CIFAR-10"
    assert len(set(names.values())) == len(names)


# --------------------------------------------------------------------------- the Runs page


@pytest.fixture
def four_runs(models_root):
    """Three finished runs of one set-up (two AdamW, one SGD), and the newest, a failed one."""
    fake_run(models_root, "a-first", created=T0, optimizer="adamw", lr=0.003, seed=0)
    fake_run(models_root, "b-second", created=T0 + 60, optimizer="adamw", lr=0.003, seed=1)
    fake_run(models_root, "c-third", created=T0 + 120, optimizer="sgd", lr=0.05, seed=0, ema=0.99)
    fake_run(models_root, "d-failed", created=T0 + 180, status="failed", steps=0, data="imagefolder:/nowhere")
    state.runs_changed()
    return models_root


def test_runs_page_compares_in_words_numbers_same_names_and_leaves_out_failed_runs(four_runs):
    at = open_page("pages/runs.py")
    no_exception(at)
    picker = next(m for m in at.multiselect if m.label == "Runs to compare")
    assert set(picker.value) == {"a-first", "b-second", "c-third"}, picker.value  # not the failed run
    numbered = ["cifar10_quick on Shapes #1", "cifar10_quick on Shapes #2", "cifar10_quick on Shapes #3"]
    legend = {t.get("name") for t in chart_specs(at)[0]["data"] if t.get("showlegend", True)}
    assert legend == set(numbered), legend  # in words, not "…a-fi"
    assert set(at.dataframe[0].value["name"]) >= set(numbered)

    (table,) = at.table
    settings = table.value
    assert sorted(settings.columns) == numbered
    assert "Optimizer" in settings.index and "Seed" in settings.index and "Weight averaging" in settings.index
    assert "Batch size" not in settings.index  # the same in all three: not a difference
    assert settings.loc["Optimizer", "cifar10_quick on Shapes #1"] == "AdamW, lr 0.003, weight decay 0.0005"
    assert settings.loc["Optimizer", "cifar10_quick on Shapes #3"] == "SGD, lr 0.05, momentum 0.9 (Nesterov), weight decay 0.0005"
    assert settings.loc["Weight averaging", "cifar10_quick on Shapes #1"] == "—"  # not used by that run
    cells = settings.to_string()
    assert "None" not in cells and "False" not in cells and "lr_" not in cells

    picker.set_value(["c-third"]).run()
    no_exception(at)
    assert any(m.value == "##### Settings" for m in at.markdown)
    one = at.table[0].value
    assert "Momentum" not in one.index and "None" not in one.to_string() and one.loc["Model", "cifar10_quick on Shapes #3"]


def test_save_name_and_note_confirms_and_renames_everywhere(four_runs):
    at = open_page("pages/runs.py")
    at.selectbox(key="manage_pick").set_value("b-second").run()
    next(t for t in at.text_input if t.label == "Name").set_value("wider net")
    next(t for t in at.text_area if t.label == "Note").set_value("tried 64 channels")
    next(b for b in at.button if b.label == "Save name and note").click().run()
    no_exception(at)
    assert [s.value for s in at.success] == ["Saved the name “wider net” and the note."]
    pick = at.selectbox(key="manage_pick")
    assert pick.value == "b-second" and pick.format_func("b-second").startswith("wider net · cifar10_quick · Shapes")
    assert "wider net" in set(at.dataframe[0].value["name"])
    assert runs.run_info(four_runs / "b-second").name == "wider net"
    # the two left of that set-up are numbered among themselves again
    assert "cifar10_quick on Shapes #2" in {t.get("name") for t in chart_specs(at)[0]["data"]}
    at.run()
    assert not at.success  # said once, not on every later run of the page


# --------------------------------------------------------------------------- Architecture


def test_architecture_keeps_the_layers_that_fit_and_marks_the_broken_one(models_root):
    at = open_page("pages/architecture.py")
    key = f"arch_editor_{at.session_state['arch_version']}"
    at.session_state[key] = {"edited_rows": {4: {"kernel": 9, "padding": 0}}, "added_rows": [], "deleted_rows": []}
    at.run()
    no_exception(at)
    assert any("Layer 5 (Conv2d)" in e.value for e in at.error), [e.value for e in at.error]
    shapes = next(d.value for d in at.dataframe if "output shape" in d.value)
    shapes = getattr(shapes, "data", shapes)  # a Styler marks the broken row
    assert shapes["layer"].tolist() == [str(i) for i in range(1, 10)]  # every row of the editor
    assert shapes["output shape"].tolist()[:4] == ["32 x 32 x 32", "32 x 16 x 16", "32 x 16 x 16", "32 x 8 x 8"]
    assert shapes["output shape"][4].startswith("✗") and all(s.startswith("not built") for s in shapes["output shape"][5:])
    assert at.get("plotly_chart"), "the diagram of the layers that fit"
    printed = next(c.value for c in at.code if c.value.startswith("Sequential("))
    assert "(3): MaxPool2d" in printed and "(4): ✗ Conv2d" in printed
    assert not any(b.label == "Use for training →" for b in at.button)  # a model that does not build cannot train


# --------------------------------------------------------------------------- Predict


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs, "MODELS_DIR", root)
        mp.setenv("PLAYGROUND_MODELS_DIR", str(root))
        mp.setenv("PLAYGROUND_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        train(
            TrainConfig.for_model("cifar10_quick", data="shapes:200", epochs=1, batch_size=50, precision="fp32", health=False),
            root / "tiny",
        )
        yield root


def test_predict_table_has_no_none_and_lists_failed_files_in_full(trained_root):
    at = open_page("pages/predict.py")
    bad = "my-holiday-notes-with-a-long-name.png"
    uploads = [("a.png", png(0), "image/png"), ("b.png", png(1), "image/png"), (bad, b"not a picture, only text", "image/png")]
    at.file_uploader(key="images").set_value(uploads).run()
    no_exception(at)
    table = next(d.value for d in at.dataframe if "top1" in d.value)
    assert list(table["file"]) == ["a.png", "b.png"] and "error" not in table  # answers only: no "None" row
    assert not table.isna().any().any()
    (listed,) = [w.value for w in at.warning if "Not classified" in w.value]
    message = next(e.value for e in at.error if bad in e.value)  # the gallery's box for the file
    assert "1 of 3 files" in listed and message.split(bad, 1)[1].strip() in listed  # the whole reason, not cut


# --------------------------------------------------------------------------- the device badge


@pytest.mark.parametrize("fast", [True, False])
def test_device_badge_says_in_plain_words_which_numbers_it_trains_with(monkeypatch, fast):
    monkeypatch.setattr(widgets, "device_info", lambda: {"kind": "cpu", "cores": 8, "threads": 8, "fast_bf16": fast})
    headline, detail = widgets.device_line()
    assert "8 cores" in headline
    assert "AMX" not in detail and "AVX" not in detail  # instruction-set names are in the tooltip, not the badge
    assert ("trains in bf16" if fast else "trains in fp32") in detail
    assert "16\u2011bit" in detail and ("faster" in detail)
    assert "AMX" in widgets.PRECISION_HELP and "fp32" in widgets.PRECISION_HELP
    assert detail.startswith("8 torch threads ·")
    monkeypatch.setattr(widgets, "device_info", lambda: {"kind": "cpu", "cores": 2, "threads": 1, "fast_bf16": fast})
    assert widgets.device_line()[1].startswith("1 torch thread ·")  # OMP_NUM_THREADS=1, as the browser tests run
