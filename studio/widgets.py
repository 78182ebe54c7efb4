"""Small pieces several pages share: the device badge, error display, run labels."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import streamlit as st

from core.data.classes import run_test_split_warning
from core.data.spec import DataSpec
from core.errors import PlaygroundError
from core.serving.runs import RunInfo, distinct_names
from core.training.curves import format_duration
from studio.state import device_info, training_now

log = logging.getLogger("torch_playground")

STATUS_COLORS = {
    "finished": "green",
    "running": "blue",
    "queued": "blue",
    "stopped": "orange",
    "interrupted": "orange",
    "diverged": "red",
    "failed": "red",
    "created": "gray",
}
STATUS_ICONS = {
    "finished": ":material/check_circle:",
    "running": ":material/sync:",
    "queued": ":material/schedule:",
    "stopped": ":material/pause_circle:",
    "interrupted": ":material/pause_circle:",
    "diverged": ":material/trending_up:",
    "failed": ":material/error:",
    "created": ":material/radio_button_unchecked:",
}


@contextlib.contextmanager
def guard(unexpected: bool = True) -> Iterator[None]:
    """Show a user's mistake as a red box instead of a traceback.

    With `unexpected`, other exceptions are shown too (and logged with their
    traceback for us): an upload should never be able to take a page down.
    """
    try:
        yield
    except PlaygroundError as exc:
        st.error(str(exc), icon=":material/warning:")
    except Exception as exc:  # noqa: BLE001 - see docstring
        if not unexpected:
            raise
        log.exception("unexpected error on a page")
        st.error(
            f"Something unexpected went wrong ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
            "Try again, or report it with what you did.",
            icon=":material/bug_report:",
        )


# The badge's tooltip: the words behind "bf16" for whoever wants them.
PRECISION_HELP = (
    "Training multiplies millions of numbers. fp32 stores each in 32 bits; bf16 (bfloat16) in 16 bits, with the "
    "same range and fewer digits, which is plenty for training. CPUs with AMX or AVX512-BF16 instructions (and most "
    "GPUs) compute bf16 in hardware, so it is faster there; elsewhere it would be emulated and slower, so the studio "
    "trains in fp32. Precision on the Train page overrides the choice."
)


def device_line() -> tuple[str, str]:
    """(headline, detail) for the badge: the device, and in plain words which numbers it trains with and why."""
    d = device_info()
    if d["kind"] == "cuda":
        count = f"{d['count']} × " if d.get("count", 1) > 1 else ""
        return f":material/memory: GPU · {count}{d['name']}", f"{d.get('memory_gb', '?')} GB · trains in {d.get('precision', 'fp32')}"
    if d["kind"] == "mps":
        return ":material/memory: Apple GPU (MPS)", "trains in fp32"
    if d.get("fast_bf16"):
        numbers = "trains in bf16: 16‑bit numbers, which this CPU computes in hardware, so faster than 32‑bit at about the same accuracy"
    else:
        numbers = "trains in fp32 (32‑bit numbers): this CPU has no hardware for the faster 16‑bit kind (bf16)"
    threads = d.get("threads", "?")
    return f":material/computer: CPU · {d.get('cores', '?')} cores", f"{threads} torch thread{'' if threads == 1 else 's'} · {numbers}"


def device_badge(where=None) -> None:
    where = where or st.sidebar
    headline, detail = device_line()
    with where.container(border=True):
        st.markdown(f"**{headline}**")
        st.caption(detail, help=PRECISION_HELP)


def percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.1%}"


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def readable(value: float, digits: int = 3) -> str:
    """A number that fits a metric whatever its size: 1.914, 0.198, 1,235, -8.91 × 10³⁰, ∞, NaN.

    `digits`: decimals for ordinary values (below 10,000); tiny and huge ones get that many
    significant digits in powers-of-ten notation, so the text never grows past ~10 characters.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    size = abs(value)
    if size == 0 or 1e-3 <= size < 1e4:
        return f"{value:.{digits}f}" if size < 1000 else f"{value:,.0f}"
    mantissa, exponent = f"{value:.{max(digits - 1, 0)}e}".split("e")
    return f"{mantissa} × 10{str(int(exponent)).translate(_SUPERSCRIPT)}"


# One throughput figure everywhere (core.training.loop.Progress): the same number in the live metric, the chart, the results,
# the Runs table and the command line's `train_img_per_s`.
THROUGHPUT_LABEL = "Images / s"
THROUGHPUT_HELP = (
    "Training images per second: images trained ÷ seconds spent training them, over the run so far (since its "
    "process started). Not counted: the first log interval (warm-up) and the test after each epoch. The chart's "
    "Images / s line is the same figure over time."
)


def small_test_split(config: dict[str, Any], status: dict[str, Any] | None = None) -> tuple[int, str] | None:
    """(test images, the warning) when a run's test split is too small for its accuracy to mean much (core.data.classes'
    rule, as the run recorded it: config.json, or while it starts, its running status record)."""
    status = status or {}
    warning = status.get("test_split_warning") or run_test_split_warning(config)
    n_test = status.get("n_test", (config.get("dataset") or {}).get("n_test"))
    return (int(n_test), warning) if warning and n_test is not None else None


def accuracy_caveat(config: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    """st.metric arguments that put a small test split beside an accuracy (nothing when it is large enough)."""
    small = small_test_split(config, status)
    if small is None:
        return {}
    return {"delta": f"of only {small[0]} test images", "delta_color": "orange", "delta_arrow": "off", "help": small[1]}


def accuracy_text(value: float | None, info: RunInfo) -> str:
    """'33.3%', or '33.3% ⚠ 6 test images' where so few test images make it say little (tables, run labels)."""
    small = small_test_split(info.config)
    return percent(value) + (f" ⚠ {small[0]} test images" if small and value is not None else "")


def test_images_text(info: RunInfo) -> str:
    """'2,000', or '⚠ 6' where the test split is too small for the accuracy beside it to mean much."""
    small = small_test_split(info.config)
    if small:
        return f"⚠ {small[0]}"
    n_test = (info.config.get("dataset") or {}).get("n_test")
    return f"{n_test:,}" if n_test is not None else ""


def run_title(info: RunInfo) -> str:
    """'cifar10_quick on Shapes · 93.1% · finished' for pickers and headers."""
    model = info.config.get("model", "?")
    acc = f" · {accuracy_text(info.best_acc, info)}" if info.best_acc is not None else ""
    # "queued" turns into "running" within seconds; a label saying "training" stays true longer.
    status = "training" if info.active else info.status
    return f"{model} on {DataSpec.parse(str(info.config.get('data', '?'))).name(detail=True)}{acc} · {status}"


def run_label(info: RunInfo, name: str | None = None) -> str:
    """'cats vs dogs · resnet18 · cats-dogs · 06 Dec 14:03 · 93.1%' for run pickers: what a person needs to tell
    runs apart. `name`: the run's name among others (`run_labels`), numbered where several runs share one."""
    name = name or info.name
    model, data = info.config.get("model", "?"), DataSpec.parse(str(info.config.get("data", "?"))).name()
    what = f"{name} · {model} · {data}" if info.meta.get("name") else name  # the default name is model on data
    if info.started:
        what += f" · {datetime.fromtimestamp(info.started):%d %b %H:%M}"
    if info.best_acc is not None:
        what += f" · {accuracy_text(info.best_acc, info)}"
    status = "training" if info.active else info.status
    return what if status == "finished" else f"{what} · {status}"


def run_labels(every: list[RunInfo]) -> dict[str, str]:
    """run id -> `run_label` for every run a session sees (same-named runs numbered #1, #2 by start)."""
    names = distinct_names(every)
    return {r.run_id: run_label(r, names[r.run_id]) for r in every}


def choice(label: str, options: dict[str, str], key: str) -> str:
    """One of a few ways to do something (value -> its words): the first is chosen at first, and one always is."""
    return st.segmented_control(label, list(options), default=next(iter(options)), required=True, key=key, format_func=options.get)


def status_badge(status: str) -> None:
    st.badge(status, icon=STATUS_ICONS.get(status), color=STATUS_COLORS.get(status, "gray"))


def duration(seconds: float | None) -> str:
    return format_duration(seconds)


def started_text(started: float | None) -> str:
    """When a run (or a sweep's first run) started, as the Runs table shows it."""
    return datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") if started else ""


def training_note(where=None) -> None:
    """Runs training right now, on every page, so switching pages never hides one. Markdown, not a link's label:
    the sidebar is narrow and a label is cut off on one line, where this wraps."""
    where = where or st.sidebar
    for info in training_now()[:3]:
        doing = "Queued" if info.status == "queued" else "Training"
        with where.container(border=True):
            st.markdown(
                f":material/sync: **{doing}:** {info.config.get('model')} on {DataSpec.parse(str(info.config.get('data', ''))).name(detail=True)}"
            )
            st.page_link("pages/train.py", label="Watch it on Train", icon=":material/monitoring:")
