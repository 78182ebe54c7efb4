"""Sweeps on the Train page: "Try several values" in the form, then every run's curve on one chart, the table, the
parallel-coordinates chart, one sentence on what mattered (with the seed-to-seed spread) and "Use the best setting".

The sweep itself is core.training.sweep: its runs are ordinary runs in the fair queue, tagged with the sweep's id.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core.data.spec import DataSpec
from core.errors import PlaygroundError
from core.serving import runs
from core.serving.jobs import estimate_s
from core.training import sweep
from core.training.config import OPTIMIZERS, SCHEDULES, TrainConfig
from core.training.curves import curves_of, format_duration
from core.training.losses import LOSSES
from studio import state, train_form, workspace
from studio.charts import PALETTE, compare_figure, sweep_parallel_figure
from studio.widgets import guard, percent, started_text

# The fields the form can vary, with their labels and the form field each fills back in ("Use the best setting").
FIELDS: dict[str, tuple[str, str]] = {
    "lr": ("Learning rate", "lr"),
    "batch_size": ("Batch size", "batch"),
    "epochs": ("Epochs", "epochs"),
    "optimizer": ("Optimizer", "opt"),
    "schedule": ("LR schedule", "sched"),
    "weight_decay": ("Weight decay", "wd"),
    "augment": ("Augment (crop + flip)", "aug"),
    "loss": ("Loss function", "loss"),
    "label_smoothing": ("Label smoothing", "ls"),
}
CHOICES: dict[str, tuple[Any, ...]] = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "loss": tuple(LOSSES), "augment": (True, False)}
MAX_SEEDS = 5
FILL_KEY = "_sweep_fill"  # the best setting, written into the form's fields on the next run (before they exist)
ON_KEY = "sweep_on"


def apply_best() -> None:
    """Before the hyperparameter widgets: the setting "Use the best setting" chose goes into their state."""
    fill = st.session_state.pop(FILL_KEY, None)
    if fill:
        st.session_state.update(fill)
        st.session_state[ON_KEY] = False  # back to one run, with the winning values


def setup(config: TrainConfig | None) -> tuple[dict[str, list[Any]], int] | None:
    """The "Try several values" controls under the hyperparameters: (grid, seeds), or None for a single run."""
    on = st.toggle(
        "Try several values",
        key=ON_KEY,
        help="Train one run per value (or pair of values) of one or two fields, each with a few seeds, "
        "and see which setting wins and by how much more than chance.",
    )
    if not on or config is None:
        return None
    fields = st.multiselect(
        "Fields to vary (one or two)",
        list(FIELDS),
        default=["lr"],
        max_selections=2,
        format_func=lambda f: FIELDS[f][0],
        key="sweep_fields",
    )
    grid: dict[str, list[Any]] = {}
    columns = st.columns(max(1, len(fields)) + 1)
    for column, name in zip(columns, fields):
        defaults = sweep.default_values(name, config)
        key = f"sweep-values-{name}-{config.model}"
        if name in CHOICES:
            values = column.multiselect(
                FIELDS[name][0],
                list(CHOICES[name]),
                default=[v for v in defaults if v in CHOICES[name]],
                format_func=lambda v, n=name: LOSSES[v].title if n == "loss" else runs.setting_word(v),
                key=key,
            )
        else:
            text = column.text_input(
                f"{FIELDS[name][0]} values",
                ", ".join(runs.setting_word(v) for v in defaults),
                key=key,
                help="Values separated by commas.",
            )
            try:
                values = list(dict.fromkeys(sweep.parse_value(name, v) for v in text.split(",") if v.strip()))
            except PlaygroundError as exc:
                column.error(str(exc).replace("--grid ", ""))
                return None
        if values:
            grid[name] = values
    seeds = int(
        columns[-1].number_input(
            "Seeds per setting",
            1,
            MAX_SEEDS,
            2,
            key="sweep_seeds",
            help="Runs that differ only in their seed land apart too; with 2 or more the page can tell a real difference from chance.",
        )
    )
    if not grid:
        st.caption("Choose a field and at least one value.")
        return None
    count = len(sweep.settings_of(grid)) * seeds
    if count > sweep.MAX_RUNS:
        st.error(f"That is {count} runs; a sweep takes at most {sweep.MAX_RUNS}. Use fewer values or seeds.")
        return None
    each = estimate_s(config.to_dict(), state.all_runs())
    parallel = max(1, workspace.settings().runs_per_device)
    how_long = (
        f"about {format_duration(each * count / parallel)} on this machine, judged by runs like it that finished here"
        if each
        else "no time estimate yet: no run like it has finished on this machine"
    )
    sizes = " × ".join(f"{len(v)} {FIELDS[k][0].lower()}" for k, v in grid.items())
    st.caption(f"**{count} runs** ({sizes} × {seeds} seed{'s' * (seeds > 1)}): {how_long}.")
    return grid, seeds


def start(config: TrainConfig, grid: dict[str, list[Any]], seeds: int) -> None:
    """Queue the sweep's runs (all or none, within the workspace's quotas) and watch its first run."""
    base = {k: v for k, v in config.to_dict().items() if k not in ("seed", "sweep") and v is not None}
    plan = sweep.Sweep(sweep.Sweep.new_id(config.model), base, grid, list(range(config.seed, config.seed + seeds)))
    folders = sweep.start(state.jobs(), plan, workspace=workspace.current())
    state.runs_changed()
    state.watch(folders[0])


# --------------------------------------------------------------------------- a sweep's runs, live and after


def sweep_of(info: runs.RunInfo) -> sweep.Sweep | None:
    """The sweep a run belongs to (None for a run of its own, or when its record is gone)."""
    tag = info.config.get("sweep") or {}
    if not tag.get("id"):
        return None
    try:
        return sweep.Sweep.load(runs.MODELS_DIR, tag["id"])
    except PlaygroundError:
        return None


def panel(plan: sweep.Sweep) -> None:
    """The sweep's progress and curves (redrawn while its runs train), then its results."""

    @st.fragment(run_every=2.0)
    def live() -> None:
        members = _members(plan)
        if not any(info is not None and info.active for info in members.values()):
            st.rerun()  # the whole page: the results below replace the live view
        _overview(plan, members)

    members = _members(plan)
    if any(info is not None and info.active for info in members.values()):
        live()
    else:
        _overview(plan, members)
        results(plan, key="train")


def _members(plan: sweep.Sweep) -> dict[str, runs.RunInfo | None]:
    by_id = {r.run_id: r for r in state.all_runs()}
    return {r["run_id"]: by_id.get(r["run_id"]) for r in plan.runs}


def _overview(plan: sweep.Sweep, members: dict[str, runs.RunInfo | None]) -> None:
    infos = [i for i in members.values() if i is not None]
    counts = {s: sum(i.status == s for i in infos) for s in ("finished", "running", "queued")}
    other = len(plan.runs) - sum(counts.values())
    st.markdown(
        f"**{title(plan)}**: {counts['finished']} finished, {counts['running']} training, {counts['queued']} waiting"
        + (f", {other} stopped or failed" if other else "")
    )
    st.progress(counts["finished"] / max(1, len(plan.runs)))
    st.plotly_chart(sweep_curves(plan, members), key=f"sweep-curves-{plan.sweep_id}")


def sweep_curves(plan: sweep.Sweep, members: dict[str, runs.RunInfo | None]) -> Any:
    """Every run's curves on one chart: a colour per setting, a dash per seed."""
    settings = [runs.describe_settings(s) for s in sweep.settings_of(plan.grid)]
    series, styles = {}, {}
    for r in plan.runs:
        info = members.get(r["run_id"])
        if info is None or not info.records:
            continue
        name = f"{runs.describe_settings(r['settings'])} · seed {r['seed']}"
        series[name] = curves_of(info.records)
        index = settings.index(runs.describe_settings(r["settings"]))
        styles[name] = (PALETTE[index % len(PALETTE)], ("solid", "dot", "dash", "dashdot", "longdash")[plan.seeds.index(r["seed"]) % 5])
    fig = compare_figure(series, smoothing=0.6)
    for trace in fig.data:
        color, dash = styles[trace.name]
        trace.update(line=dict(color=color, dash=dash, width=2.5))
    fig.update_layout(uirevision=plan.sweep_id)
    return fig


def table(plan: sweep.Sweep, document: dict[str, Any]) -> pd.DataFrame:
    """One row per run: its settings (one column per field), seed, status, test accuracy, run id."""
    return pd.DataFrame(
        [
            {
                **{FIELDS.get(k, (k,))[0]: runs.setting_word(v) for k, v in row["settings"].items()},
                "seed": row["seed"],
                "status": row["status"],
                "test accuracy": row["val_acc"],
                "run id": row["run_dir"].rsplit("/", 1)[-1],
            }
            for row in document["runs"]
        ]
    )


def results(plan: sweep.Sweep, *, key: str) -> None:
    """The table, the parallel-coordinates chart, what mattered, the CSV and "Use the best setting"."""
    document = sweep.results(plan, runs.MODELS_DIR)
    frame = table(plan, document)
    best = document["best"]
    if best:
        spread = f" (seeds {percent(best['spread'])} apart)" if best["spread"] is not None else ""
        st.success(
            f"Best: **{runs.describe_settings(best['settings'])}**, test accuracy {percent(best['mean_acc'])} on average{spread}. "
            + document["verdict"],
            icon=":material/emoji_events:",
        )
    else:
        st.info(document["verdict"])
    st.dataframe(
        frame,
        hide_index=True,
        column_config={"test accuracy": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1)},
        key=f"sweep-table-{key}",
    )
    if best:
        st.plotly_chart(sweep_parallel_figure(document["runs"], plan.grid), key=f"sweep-parallel-{key}")
    with st.container(horizontal=True):
        if best and st.button("Use the best setting", icon=":material/done_all:", type="primary", key=f"sweep-best-{key}"):
            model = str(plan.base.get("model"))
            st.session_state[FILL_KEY] = {train_form.field_key(model, FIELDS[k][1]): v for k, v in best["settings"].items() if k in FIELDS}
            if key == "train":
                st.rerun()
            st.switch_page("pages/train.py")
        st.download_button(
            "Table (CSV)",
            frame.to_csv(index=False),
            f"{plan.sweep_id}.csv",
            "text/csv",
            on_click="ignore",
            icon=":material/download:",
            key=f"sweep-csv-{key}",
        )


def delete(plan: sweep.Sweep, *, key: str) -> None:
    """One click, confirmed: the sweep's runs and its record."""
    with st.popover("Delete sweep…", icon=":material/delete:"):
        st.write(f"Delete this sweep and its **{len(plan.runs)} runs** (their checkpoints too)? This cannot be undone.")
        if st.button("Yes, delete them", type="primary", key=f"sweep-delete-{key}"):
            with guard():
                if workspace.settings().shared and not workspace.is_operator() and plan.workspace != workspace.current():
                    raise PlaygroundError("This sweep belongs to another workspace; you can only delete your own.")
                sweep.delete_sweep(runs.MODELS_DIR, plan)
                for r in plan.runs:
                    state.forget_tail(runs.MODELS_DIR / r["run_id"])
                state.runs_changed()
                st.toast(f"Deleted the sweep and its {len(plan.runs)} runs.")
                st.rerun()


# --------------------------------------------------------------------------- the Runs page


def title(plan: sweep.Sweep) -> str:
    """'Sweep: lr 0.001/0.01 × 2 seeds (4 runs)'."""
    grid = runs.describe_settings({k: "/".join(runs.setting_word(v) for v in values) for k, values in plan.grid.items()})
    seeds = f" × {len(plan.seeds)} seeds" if len(plan.seeds) > 1 else ""
    return f"Sweep: {grid}{seeds} ({len(plan.runs)} runs)"


def collapse(every: list[runs.RunInfo]) -> list[runs.RunInfo | sweep.Sweep]:
    """The runs as the Runs page lists them: a sweep's runs folded into one entry, at its newest run's place (a run
    whose sweep record is gone is listed on its own)."""
    sweeps = {s.sweep_id: s for s in sweep.list_sweeps(runs.MODELS_DIR)}
    rows: list[runs.RunInfo | sweep.Sweep] = []
    seen: set[str] = set()
    for info in every:
        sweep_id = (info.config.get("sweep") or {}).get("id")
        if sweep_id not in sweeps:
            rows.append(info)
        elif sweep_id not in seen:
            seen.add(sweep_id)
            rows.append(sweeps[sweep_id])
    return rows


def row(plan: sweep.Sweep, by_id: dict[str, runs.RunInfo]) -> dict[str, Any]:
    """The Runs table's row of a sweep: its best setting's mean accuracy, how many runs have finished."""
    members = [by_id[r["run_id"]] for r in plan.runs if r["run_id"] in by_id]
    document = sweep.results(plan, runs.MODELS_DIR)
    finished = sum(m.status == "finished" for m in members)
    active = any(m.active for m in members)
    return {
        "name": title(plan),
        "best accuracy": document["best"]["mean_acc"] if document["best"] else None,
        "status": "running" if active else "finished" if finished == len(plan.runs) else "stopped",
        "epochs": f"{finished}/{len(plan.runs)} runs",
        "model": plan.base.get("model"),
        "data": DataSpec.parse(str(plan.base.get("data", ""))).name(),
        "duration": format_duration(sum(m.seconds or 0 for m in members)),
        "started": started_text(min((m.started for m in members if m.started), default=None)),
        "note": document["verdict"],
        "run id": plan.sweep_id,
    }


def section(rows: list[runs.RunInfo | sweep.Sweep]) -> None:
    """Each sweep opens into its runs, what mattered, and its delete button."""
    plans = [r for r in rows if isinstance(r, sweep.Sweep)]
    if not plans:
        return
    st.subheader("Sweeps")
    for plan in plans:
        with st.expander(title(plan)):
            results(plan, key=plan.sweep_id)
            delete(plan, key=plan.sweep_id)
