"""What the Runs page compares: which runs by default, and their settings side by side in words."""

from __future__ import annotations

import pandas as pd

from core.serving.runs import RunInfo
from core.training.describe import settings_in_words

NOT_USED = "—"  # a setting one compared run has and another did not use (an EMA, a time limit)
DEFAULT_COMPARED = 3


def default_compared(every: list[RunInfo]) -> list[str]:
    """The newest runs that have curves to draw; a failed run (it stopped on an error, usually before its
    first step) would only add an empty legend entry and settings that never ran."""
    return [r.run_id for r in every if r.status != "failed" and any(rec.get("kind") == "step" for rec in r.records)][:DEFAULT_COMPARED]


def settings_table(infos: list[RunInfo], names: dict[str, str]) -> pd.DataFrame:
    """Settings as rows (in words, only those that applied), one column per run named by `names`; with several
    runs only the rows that differ. Runs as columns stay readable side by side; the page wraps long cells."""
    words = {names[r.run_id]: settings_in_words(r.config) for r in infos}
    labels = list(dict.fromkeys(label for settings in words.values() for label in settings))
    table = pd.DataFrame({name: [settings.get(label, NOT_USED) for label in labels] for name, settings in words.items()}, index=labels)
    table.index.name = "setting"
    if len(infos) > 1:
        table = table[table.nunique(axis=1) > 1]
    return table
