"""The model's mistakes, under a run's results (Train page and Runs page).

Per-class accuracy and a confusion matrix with counts; click a cell (or pick it from the list) to
see the test images in it; the mistakes the model was most sure of ("top losses"); and the pairs
of classes it mixes up most. All of it comes from one per-image pass over the run's own test split
(core.insight.evaluate.predict_split), cached per run and checkpoint so a click never re-evaluates.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.data.datasets import Split
from core.insight.evaluate import Predictions, predict_split, run_test_split
from core.models.inspect import summary
from core.serving import runs
from studio.charts import confusion_figure, per_class_figure
from studio.predict_view import run_predictor
from studio.widgets import guard

CELL_IMAGES = 40  # images shown for one confusion cell (the worst first)
TOP_LOSSES = 24
THUMB = 96  # px: a 32x32 test image at 3x, square pixels
# Evaluating the test set starts by itself when it should take about this long or less; bigger
# models on a CPU (VGG at 224 px: minutes) wait for a button.
AUTO_EVAL_S = 6.0
MACS_PER_S = {"cpu": 5e10, "mps": 5e11, "cuda": 5e12}  # conservative forward throughput per device kind


def checkpoint_mtime(run_dir: Path) -> float:
    return (run_dir / runs.CHECKPOINT_FILE).stat().st_mtime


@st.cache_resource(max_entries=4, show_spinner=False)
def _test_split(run_dir: str, mtime: float) -> tuple[Split, list[str], np.ndarray]:
    """The run's test split, and its images as (N, H, W, 3) for display. A resource, not data: every
    click reruns the page, and copying the test images on each would cost more than it saves."""
    split, classes = run_test_split(run_dir, run_predictor(run_dir, mtime))
    images = split.images.permute(0, 2, 3, 1).numpy()
    images.flags.writeable = False
    return split, classes, images


def test_split(run_dir: Path) -> tuple[Split, list[str], np.ndarray]:
    with st.spinner("Loading the run's test images…"):
        return _test_split(str(run_dir), checkpoint_mtime(run_dir))


@st.cache_resource(max_entries=4, show_spinner=False)
def _evaluated(run_dir: str, mtime: float) -> tuple[Predictions, np.ndarray]:
    """Per-image results and the test images (N, H, W, 3), for one checkpoint."""
    split, classes, images = _test_split(run_dir, mtime)
    return predict_split(run_predictor(run_dir, mtime), split, classes), images


@st.cache_data(max_entries=16, show_spinner=False)
def _forward_macs(run_dir: str, mtime: float) -> int:
    predictor = run_predictor(run_dir, mtime)
    macs = summary(predictor.model, (3, predictor.input_size, predictor.input_size)).total_macs
    return int(macs) * (2 if predictor.tta else 1)


def evaluated_run(run_dir: Path) -> tuple[Predictions, np.ndarray]:
    """The run's per-image test results and test images (evaluated once per checkpoint)."""
    with st.spinner("Evaluating the checkpoint on every test image…"):
        return _evaluated(str(run_dir), checkpoint_mtime(run_dir))


def estimated_seconds(info: runs.RunInfo, n_images: int) -> float:
    run_dir = str(info.path)
    predictor = run_predictor(run_dir, checkpoint_mtime(info.path))
    return _forward_macs(run_dir, checkpoint_mtime(info.path)) * n_images / MACS_PER_S.get(predictor.device.type, 5e10)


def _final_epoch(info: runs.RunInfo) -> dict[str, Any]:
    for record in reversed(info.records):
        if record.get("kind") == "epoch" and "per_class" in record:
            return record
    return {}


def results(info: runs.RunInfo, recorded: dict[str, Any] | None = None, key: str = "insight") -> None:
    """The run's per-class results and mistakes; `recorded` is its last epoch record with per-class results."""
    recorded = _final_epoch(info) if recorded is None else recorded
    classes = info.config.get("classes") or []
    evaluated = None
    if info.has_checkpoint:
        with guard():
            evaluated = _evaluation(info, recorded, key)
    if evaluated is not None:
        _evaluated_view(*evaluated, key=key)
    elif classes and recorded.get("confusion"):
        left, right = st.columns([2, 3])
        left.markdown("##### Accuracy per class")
        left.plotly_chart(per_class_figure(classes, recorded["per_class"]), key=f"{key}-per-class")
        right.markdown("##### Confusion matrix (row = true class)")
        right.plotly_chart(confusion_figure(classes, recorded["confusion"]), key=f"{key}-confusion")


def _evaluation(info: runs.RunInfo, recorded: dict[str, Any], key: str) -> tuple[Predictions, np.ndarray] | None:
    """Evaluate now when it is quick or was asked for; else offer a button saying how long it will take."""
    mtime = checkpoint_mtime(info.path)
    asked = st.session_state.setdefault("_insight_asked", set())
    n = int(np.sum(recorded["confusion"])) if recorded.get("confusion") else 10_000
    seconds = estimated_seconds(info, n)
    if (str(info.path), mtime) not in asked and seconds > AUTO_EVAL_S:
        if not st.button(
            f"Show the test images behind the results (evaluates {n:,} images, about {seconds:.0f} s)",
            key=f"{key}-evaluate",
            icon=":material/grid_view:",
        ):
            return None
    asked.add((str(info.path), mtime))
    return evaluated_run(info.path)


# ---------------------------------------------------------------------- the evaluated view


def _cell_key(key: str) -> str:
    return f"{key}-cell"


def _on_cell_click(chart_key: str, cell_key: str) -> None:
    """A click on the matrix picks that cell in the list below it (the list is the keyboard's way in)."""
    points = st.session_state[chart_key].selection.points
    if points:
        true, pred = (int(v) for v in points[0]["customdata"][:2])
        st.session_state[cell_key] = (true, pred)


def _evaluated_view(result: Predictions, images: np.ndarray, key: str) -> None:
    classes, cm = result.classes, result.confusion()
    stats = result.summary()
    left, right = st.columns([2, 3])
    left.markdown("##### Accuracy per class")
    left.plotly_chart(per_class_figure(classes, list(stats["per_class"].values())), key=f"{key}-per-class")
    right.markdown("##### Confusion matrix · click a cell to see its images")
    chart_key, cell_key = f"{key}-confusion", _cell_key(key)
    right.plotly_chart(
        confusion_figure(classes, cm, selectable=True),
        key=chart_key,
        selection_mode="points",
        on_select=functools.partial(_on_cell_click, chart_key, cell_key),
    )
    right.caption(
        f"Row = true class, column = prediction: each cell counts test images (and the share of its row). "
        f"{len(result):,} test images, {stats['accuracy']:.1%} correct."
    )
    _cell_images(result, images, cm, key)
    st.markdown("##### Top losses: the mistakes the model was most sure of")
    _top_losses(result, images)
    st.markdown("##### Most confused pairs")
    _most_confused(result, cm, key)


def _cell_images(result: Predictions, images: np.ndarray, cm: np.ndarray, key: str) -> None:
    classes = result.classes
    wrong = [(t, p) for t, p in ((c["true"], c["pred"]) for c in result.most_confused())]
    index = {name: i for i, name in enumerate(classes)}
    cells = [(index[t], index[p]) for t, p in wrong] + [(i, i) for i in range(len(classes)) if cm[i, i]]
    cell_key = _cell_key(key)
    if st.session_state.get(cell_key) not in cells:
        st.session_state.pop(cell_key, None)

    def label(cell: tuple[int, int]) -> str:
        t, p = cell
        what = f"{classes[t]} predicted as {classes[p]}" if t != p else f"{classes[t]}, correctly predicted"
        return f"{what} ({cm[t, p]:,} images)"

    cell = st.selectbox(
        "Test images in one cell of the matrix",
        cells,
        index=None,
        format_func=label,
        key=cell_key,
        placeholder="Click a cell of the matrix, or choose one here",
    )
    if cell is None:
        return
    t, p = cell
    chosen = result.cell(t, p)
    shown = chosen[:CELL_IMAGES]
    where = "the model got most wrong" if t != p else "the model was least sure of"
    st.markdown(f"**{label(cell)}**" + (f" · showing the {len(shown)} {where}" if len(chosen) > len(shown) else ""))
    captions = [f"{classes[p]} {result.probs[i, p]:.0%}" + (f" · {classes[t]} {result.probs[i, t]:.0%}" if t != p else "") for i in shown]
    st.image([enlarge(images[i]) for i in shown], caption=captions, width=THUMB)


def _top_losses(result: Predictions, images: np.ndarray) -> None:
    worst = result.mistakes(TOP_LOSSES)
    if not worst:
        st.caption("No test image is misclassified.")
        return
    st.image(
        [enlarge(images[m["index"]]) for m in worst], width=THUMB, caption=[f"{m['true']} → {m['pred']} {m['prob']:.0%}" for m in worst]
    )
    st.caption(
        "Each image: true class → predicted class and the probability the model gave it; the highest losses "
        "first. Some are the model's fault, some are mislabelled or ambiguous images."
    )
    everything = pd.DataFrame(result.mistakes())
    st.download_button(
        f"All {len(everything):,} mistakes (CSV)",
        everything.to_csv(index=False).encode(),
        "mistakes.csv",
        "text/csv",
        on_click="ignore",
        icon=":material/download:",
    )


def _most_confused(result: Predictions, cm: np.ndarray, key: str) -> None:
    pairs = result.most_confused(15)
    if not pairs:
        st.caption("The model confuses no two classes on the test images.")
        return
    row_totals = dict(zip(result.classes, cm.sum(axis=1)))
    table = pd.DataFrame(
        [
            {
                "true class": c["true"],
                "predicted as": c["pred"],
                "images": c["count"],
                "share of the true class": c["count"] / max(1, row_totals[c["true"]]),
            }
            for c in pairs
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        key=f"{key}-most-confused",
        column_config={"share of the true class": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1)},
    )


def enlarge(image: np.ndarray, side: int = THUMB) -> np.ndarray:
    """(H, W, 3) uint8 enlarged by a whole factor with square pixels (a browser's smoothing blurs 32 px images)."""
    factor = max(1, side // max(image.shape[:2]))
    return image.repeat(factor, 0).repeat(factor, 1)
