"""The mistakes panel (Train and Runs pages) and the Inside the model page under Streamlit's AppTest.

AppTest has no Plotly element to click, so a click is sent the way the browser sends it: the
chart's selection state (JSON) as its widget value in the next run's widget states.
tests/test_browser.py clicks a real confusion-matrix cell in Chromium.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest
from test_app import APP, chart_specs, no_exception

from core.insight.evaluate import predict_split, run_test_split
from core.insight.predict import Predictor
from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import train

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs, "MODELS_DIR", root)
        mp.setenv("PLAYGROUND_MODELS_DIR", str(root))
        mp.setenv("PLAYGROUND_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        out = root / "quick-shapes"
        train(TrainConfig.for_model("cifar10_quick", data="shapes:500", epochs=1, batch_size=50, precision="fp32"), out)
        yield out


@pytest.fixture(scope="module")
def expected(run_dir):
    predictor = Predictor.from_run(run_dir)
    split, classes = run_test_split(run_dir, predictor)
    return predict_split(predictor, split, classes)


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(page)
    return at.run()


def select_points(at: AppTest, chart_key_part: str, points: list[dict]) -> AppTest:
    """Rerun as if the user had clicked these points of the Plotly chart whose widget id contains `chart_key_part`."""
    chart = next(c for c in at.get("plotly_chart") if chart_key_part in c.proto.id)
    states = at._tree.get_widget_states()
    selection = {"selection": {"points": points, "point_indices": [p["point_index"] for p in points], "box": [], "lasso": []}}
    states.widgets.append(WidgetState(id=chart.proto.id, string_value=json.dumps(selection)))
    return at._run(states)


def array(value) -> np.ndarray:
    """A Plotly JSON array: a list, or numpy's base64 form ({"dtype", "bdata", "shape"}) that Plotly 6+ writes."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(d) for d in str(value.get("shape", len(flat))).split(",")])
    return np.asarray(value)


def images(at: AppTest) -> list[list[str]]:
    """Captions of each st.image list on the page."""
    return [el.captions for el in at.image]


def test_results_panel_counts_cells_and_shows_a_clicked_cells_images(run_dir, expected):
    at = open_page("pages/train.py")
    no_exception(at)
    cm = expected.confusion()
    # the confusion matrix: a heatmap with a clickable marker per cell (the health panel's heatmaps have none)
    matrix = next(s for s in chart_specs(at) if {t.get("type") for t in s["data"]} >= {"heatmap", "scatter"})
    heat = next(t for t in matrix["data"] if t["type"] == "heatmap")
    assert np.array_equal(array(heat["customdata"]), cm)  # counts, not only shares
    i, j = np.unravel_index(np.argmax(cm), cm.shape)
    assert heat["text"][i][j].startswith(f"{cm[i, j]}<br>")
    cells = next(t for t in matrix["data"] if t["type"] == "scatter")
    assert len(cells["x"]) == cm.size  # one clickable marker per cell

    pair = expected.most_confused(1)[0]
    t, p = expected.classes.index(pair["true"]), expected.classes.index(pair["pred"])
    point = {
        "curve_number": 1,
        "point_number": t * len(cm) + p,
        "point_index": t * len(cm) + p,
        "x": pair["pred"],
        "y": pair["true"],
        "customdata": [t, p, pair["count"], 0.1],
    }
    at = select_points(at, "train-confusion", [point])
    no_exception(at)
    assert any(f"{pair['true']} predicted as {pair['pred']} ({pair['count']} images)" in m.value for m in at.markdown)
    cell = next(c for c in images(at) if c and "%" in c[0] and "→" not in c[0])
    assert len(cell) == min(pair["count"], 40) and all(c.startswith(pair["pred"]) for c in cell)
    top = next(c for c in images(at) if c and "→" in c[0])
    assert len(top) == min(24, len(expected.mistakes())) and top[0].startswith(f"{expected.mistakes(1)[0]['true']} →")
    table = next(df.value for df in at.dataframe if "predicted as" in df.value.columns)
    assert table["images"].tolist() == [c["count"] for c in expected.most_confused(15)]
    assert any("mistakes" in b.label for b in at.get("download_button"))


def test_a_cell_can_be_chosen_from_the_list_too(run_dir, expected):
    at = open_page("pages/runs.py")
    no_exception(at)
    assert any(s for s in chart_specs(at) if any(t.get("type") == "heatmap" for t in s["data"]))
    c = expected.classes.index(expected.classes[int(np.argmax(np.diag(expected.confusion())))])
    at.selectbox(key="runs-cell").set_value((c, c)).run()
    no_exception(at)
    cell = next(c for c in images(at) if c and "%" in c[0] and "→" not in c[0])
    assert len(cell) == min(40, int(expected.confusion()[c, c])) and cell[0].startswith(expected.classes[c])


def test_inside_page_maps_arithmetic_and_embedding_click(run_dir, expected):
    at = open_page("pages/inside.py")
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    headers = [m.value for m in at.markdown if m.value.startswith("**Layer")]
    assert [h.split("`")[1] for h in headers] == ["model[0]", "model[2]", "model[4]"]  # the code that reaches each layer
    assert "32 x 32 x 32" in headers[0] and "64 x 8 x 8" in headers[2]  # the layer table's shapes

    at.segmented_control(key="inside_view").set_value("first").run()
    no_exception(at)
    assert any("the same number" in m.value for m in at.markdown)
    assert len(images(at)[-1]) == 32  # one tile per filter of the first conv

    at.segmented_control(key="inside_view").set_value("embedding").run()
    no_exception(at)
    scatter = next(s for s in chart_specs(at) if s["data"] and s["data"][0].get("type") == "scatter")
    wrong = [int(i) for tr in scatter["data"] if tr["marker"]["symbol"] == "x" for i, _ in array(tr["customdata"])]
    assert sorted(wrong) == np.flatnonzero(expected.wrong).tolist()  # every test image is shown (PCA)
    index = wrong[0]
    at = select_points(
        at,
        "inside-embedding",
        [{"curve_number": 0, "point_number": 0, "point_index": 0, "customdata": [index, int(expected.preds[index])]}],
    )
    no_exception(at)
    assert any(f"Test image {index}" in m.value for m in at.markdown)
    next(b for b in at.button if b.label.startswith("Look inside")).click().run()
    no_exception(at)
    true_class = expected.classes[int(expected.labels[index])]
    assert at.selectbox(key="inside_class").value == true_class
