"""Which lesson tasks a learner has passed, kept in a small JSON file.

Each browser is one learner. On your own machine (or a teacher's studio that is not shared) a browser is known by a
random learner id the studio keeps in a cookie, and its progress is `data/lessons/<learner id>.json`: a classmate's
browser at the same studio has its own. In shared mode each browser works in a workspace (its code is in the page's
address), and its progress lives with the workspace's other files: `data/workspaces/<code>/lessons.json`, beside its
own classes. A missing or unreadable file is no progress; it is written whole (a temporary file, then a rename), so a
crash never leaves half of one.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

from core.data import datasets
from core.files import atomic_write_bytes
from core.lessons import LESSONS, Lesson, task_keys

FILE_VERSION = 1
# 64 random bits in hex: a learner id is a file name, so nothing else (no "/", no "..") may pass for one.
LEARNER_PATTERN = re.compile(r"^[0-9a-f]{16}$")


def new_learner_id() -> str:
    return secrets.token_hex(8)


def clean_learner_id(text: str | None) -> str | None:
    """A learner id read back from a browser's cookie; None when it is not one this module made."""
    code = (text or "").strip()
    return code if LEARNER_PATTERN.match(code) else None


def progress_path(*, workspace: str | None = None, learner: str | None = None, data_dir: str | Path | None = None) -> Path:
    """The progress file of a shared-mode workspace or, outside shared mode, of one browser's learner id."""
    base = Path(data_dir or datasets.DATA_DIR)  # read when called: tests (and PLAYGROUND_DATA_DIR) move it
    if workspace:
        return base / "workspaces" / workspace / "lessons.json"
    if not LEARNER_PATTERN.match(learner or ""):
        raise ValueError(f"not a learner id: {learner!r}")
    return base / "lessons" / f"{learner}.json"


class Progress:
    """The passed tasks in the file at `path`: `{"version": 1, "passed": {"<task key>": <unix time>}}`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def passed(self) -> dict[str, float]:
        try:
            blob = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        passed = blob.get("passed") if isinstance(blob, dict) else None
        if not isinstance(passed, dict):
            return {}
        known = task_keys()  # a task renamed or removed since is not counted
        return {k: float(v) for k, v in passed.items() if k in known and isinstance(v, (int, float))}

    def mark(self, key: str) -> None:
        """Record task `key` as passed (the first time counts; later passes change nothing)."""
        if key not in task_keys():
            raise KeyError(f"no lesson task {key!r}")
        passed = self.passed()
        if key in passed:
            return
        passed[key] = round(time.time(), 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, (json.dumps({"version": FILE_VERSION, "passed": passed}, indent=1) + "\n").encode())

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)

    def lesson_done(self, lesson: Lesson, passed: dict[str, float] | None = None) -> bool:
        passed = self.passed() if passed is None else passed
        return all(task.key in passed for task in lesson.tasks)

    def lessons_done(self) -> list[Lesson]:
        passed = self.passed()
        return [item for item in LESSONS if self.lesson_done(item, passed)]
