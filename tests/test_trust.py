"""Issue #18: every number, warning and suggestion the studio gives a learner is right.

The run figures the pages show (accuracy with its caveat, throughput), the health switch they name, and the time
they promise, checked on the pages under Streamlit's AppTest against what the run recorded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import test_app
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import no_exception

from core.export import formats as export
from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import train
from studio import state

pytestmark = pytest.mark.timeout(600)


def open_page(page: str) -> AppTest:
    at = test_app.open_page(page, timeout=300)
    no_exception(at)
    return at


def pets(folder: Path, per_class: int = 20) -> Path:
    """A tiny own data set: 20 'cats' and 20 'dogs' (noise around two colours), only class folders."""
    rng = np.random.default_rng(0)
    for cls, hue in (("cat", 40), ("dog", 200)):
        (folder / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(hue, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / cls / f"{i:02d}.png")
    return folder


@pytest.fixture
def tiny_run(models_root, tmp_path):
    """cifar10_quick trained 3 epochs on 40 pictures: 34 to train on, 6 to test on."""
    config = TrainConfig.for_model("cifar10_quick", data=f"imagefolder:{pets(tmp_path / 'pets')}", epochs=3, batch_size=8)
    result = train(config, models_root / "pets")
    state.runs_changed()
    return models_root / "pets", result


def test_throughput_is_one_figure_in_the_records_and_the_result(tiny_run):
    """The chart, the live metric (the newest step record), the results (the epoch record) and the command line's
    train_img_per_s are one definition: training images per second so far, warm-up and evaluation left out."""
    run_dir, result = tiny_run
    records, _ = runs.read_metrics(run_dir)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert steps[0]["img_per_s"] is None  # the warm-up interval: no steady-state figure yet
    for epoch in epochs:  # the epoch's last step record says what the epoch record says
        last_step = [r for r in steps if r["epoch"] == epoch["epoch"] - 1][-1]
        assert last_step["img_per_s"] == epoch["img_per_s"]
    assert epochs[-1]["img_per_s"] == result["train_img_per_s"] == runs.run_info(run_dir).img_per_s > 0


def test_a_small_test_split_is_said_beside_the_accuracy_on_every_page_and_export(tiny_run):
    run_dir, result = tiny_run
    warning = runs.read_config(run_dir)["dataset"]["test_split_warning"]
    assert warning.startswith("6 test images: each one is 17 points of accuracy") and warning == result["test_split_warning"]

    at = open_page("pages/train.py")
    assert "(of only 6 test images)" in at.success[0].value
    accuracy = next(m for m in at.metric if m.label == "Test accuracy")
    assert accuracy.proto.delta == "of only 6 test images" and accuracy.help == warning
    assert any(w.value == warning for w in at.warning)  # and the whole sentence under the results
    throughput = next(m for m in at.metric if m.label == "Images / s")
    assert throughput.value == f"{result['train_img_per_s']:,.0f}" and "warm-up" in throughput.help
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    curves = next(spec for spec in specs if any(t.get("name") == "images / s" for t in spec["data"]))
    line = next(t for t in curves["data"] if t.get("name") == "images / s")
    assert line["y"][-1] == result["train_img_per_s"]  # the chart ends where the metric beside it stands

    table = open_page("pages/runs.py").dataframe[0].value
    row = table[table["run id"] == run_dir.name].iloc[0]
    assert row["test images"] == "⚠ 6" and list(table.columns[:3]) == ["name", "best accuracy", "test images"]

    home = open_page("pages/home.py").dataframe[0].value
    assert home["test accuracy"].iloc[0].endswith("⚠ 6 test images")

    assert f"Careful: {warning}" in export.export_script(run_dir)


def test_a_large_test_split_gets_no_caveat(models_root):
    result = train(TrainConfig.for_model("cifar10_quick", data="shapes:200", epochs=1, batch_size=50), models_root / "shapes")
    assert result["test_split_warning"] is None and runs.read_config(models_root / "shapes")["dataset"]["test_split_warning"] is None
    state.runs_changed()
    at = open_page("pages/train.py")
    accuracy = next(m for m in at.metric if m.label == "Test accuracy")
    assert not accuracy.proto.delta and "of only" not in at.success[0].value
    assert open_page("pages/runs.py").dataframe[0].value["test images"].iloc[0] == "2,000"


def test_the_health_switch_the_panel_names_is_in_more_settings(tiny_run, models_root):
    at = open_page("pages/train.py")
    said = next(c.value for c in at.caption if "Switch off with" in c.value)  # under the finished run's health panel
    assert "*Training health records* under **More settings**" in said
    switch = at.toggle(key="hp-cifar10_quick-health")
    assert switch.label == "Training health records" and switch.value is True
    switch.set_value(False)
    at.segmented_control(key="data_kind").set_value("shapes")
    at.run()
    at.select_slider(key="shapes_n").set_value(600)
    at.number_input(key="hp-cifar10_quick-epochs").set_value(1)
    at.run()
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (run_dir,) = [p for p in models_root.iterdir() if p != tiny_run[0] and (p / runs.CONFIG_FILE).exists()]
    try:
        assert runs.read_config(run_dir)["health"] is False  # the run is made with health off
    finally:
        (run_dir / runs.STOP_FILE).touch()


PROMISE = re.compile(r"about (a|an|\d+) minutes?|a minute or two|in (a|\d+) minutes? on", re.IGNORECASE)


@pytest.mark.parametrize("page", ["pages/home.py", "pages/train.py", "pages/predict.py", "pages/inside.py"])
def test_no_page_promises_a_training_time_it_has_not_measured(models_root, page):
    """Home said 'about 2 minutes', Train 'about a minute'; the default run took 2:56 on a busy 2-core CPU."""
    at = open_page(page)
    texts = [e.value for kind in ("markdown", "caption", "info") for e in at.get(kind) if isinstance(e.value, str)]
    promised = [t for t in texts if PROMISE.search(t)]
    assert not promised, promised
