"""Serving a class: shared mode's settings, workspaces and quotas (no Streamlit here).

Off by default: one person on their own machine sees every run, as always. With
`PLAYGROUND_SHARED=1` (or `shared = true` in playground.toml) every browser works in
a workspace: a short code kept in the page's address, so a reload or a bookmark comes
back to the same runs. A workspace sees, stops, resumes and deletes only its own runs;
server paths (a folder on the server as data, whole-model pickles) are off, uploads are
capped, and each workspace has a run and a disk quota. Nothing is ever deleted for a
user: reaching a quota only refuses the next run, with a message saying what to do.

Settings come from the environment first, then from a `[playground]` table in
`playground.toml` next to streamlit_app.py (or the file named by PLAYGROUND_CONFIG),
then the defaults below. The operator token is read from the environment only, so it
never ends up in a file someone commits.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import PlaygroundError

CONFIG_PATH = Path(os.environ.get("PLAYGROUND_CONFIG", Path(__file__).resolve().parents[2] / "playground.toml"))
WORKSPACE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{2,39}$")
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: a code is read off a screen and typed again


@dataclass(frozen=True)
class Settings:
    """How this server shares its devices (see the README's "Serving a class")."""

    shared: bool = False  # one server, many users, a workspace per browser
    runs_per_device: int = 1  # K: trainings at once per GPU, and on the CPU
    warm_worker: bool = True  # keep one training process ready (imports done) for a fast start
    max_runs: int = 30  # per workspace (shared mode): runs kept, finished or not
    max_disk_mb: int = 2000  # per workspace (shared mode): its run folders together
    max_active: int = 2  # per workspace (shared mode): runs queued or training at once
    max_upload_mb: int = 20  # per file (shared mode); on your own machine Streamlit's server.maxUploadSize applies

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = Path(path or CONFIG_PATH)
        if path.is_file():
            try:
                import tomllib  # Python 3.11+; older Pythons take the settings from the environment only
            except ModuleNotFoundError:
                raise PlaygroundError(f"Reading {path} needs Python 3.11+; set PLAYGROUND_* variables instead.") from None
            try:
                table = tomllib.loads(path.read_text()).get("playground", {})
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise PlaygroundError(f"{path} is not valid TOML ({exc}); fix or remove it.") from None
            unknown = set(table) - _FIELDS
            if unknown:
                raise PlaygroundError(
                    f"{path}: unknown setting(s) {', '.join(sorted(unknown))} in [playground]; known: {', '.join(sorted(_FIELDS))}."
                )
            values.update(table)
        for name, kind in _TYPES.items():
            raw = environ.get(f"PLAYGROUND_{name.upper()}")
            if raw is not None and raw.strip() != "":
                values[name] = _parse(name, raw.strip(), kind)
        settings = cls(**{k: _parse(k, v, _TYPES[k]) if isinstance(v, str) else v for k, v in values.items()})
        if settings.runs_per_device < 1:
            raise PlaygroundError("runs_per_device must be at least 1 (PLAYGROUND_RUNS_PER_DEVICE).")
        return settings


_FIELDS = {f.name for f in dataclasses.fields(Settings)}
_TYPES = {f.name: type(f.default) for f in dataclasses.fields(Settings)}


def _parse(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise PlaygroundError(f"PLAYGROUND_{name.upper()}={raw!r}: use 1 or 0.")
    try:
        return kind(raw)
    except ValueError:
        raise PlaygroundError(f"PLAYGROUND_{name.upper()}={raw!r} is not a number.") from None


def operator_token_ok(token: str | None, environ: dict[str, str] | None = None) -> bool:
    """True when `token` is this server's operator token (PLAYGROUND_OPERATOR_TOKEN; unset: nobody)."""
    expected = (os.environ if environ is None else environ).get("PLAYGROUND_OPERATOR_TOKEN", "")
    return bool(expected) and bool(token) and hmac.compare_digest(token.encode(), expected.encode())


# --------------------------------------------------------------------------- workspaces


def new_workspace_id() -> str:
    """Like 'k7qm-3xpa': about 40 bits, so codes cannot be guessed, and short enough to write down."""
    code = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{code[:4]}-{code[4:]}"


def clean_workspace_id(text: str | None) -> str | None:
    """A typed or URL workspace code, normalised; None when it is not a valid code."""
    code = (text or "").strip().lower()
    return code if WORKSPACE_PATTERN.match(code) else None


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


@dataclass
class Usage:
    runs: int
    active: int
    bytes: int

    def describe(self, settings: Settings) -> str:
        return f"{self.runs} of {settings.max_runs} runs · {self.bytes / 1e6:,.0f} of {settings.max_disk_mb:,} MB"


def usage(infos: Iterable[Any]) -> Usage:
    """What a workspace's runs (RunInfo objects) use. A sweep's active runs count as one active item: it is one
    thing the student started, and its runs already take turns with other workspaces' runs in the queue."""
    infos = list(infos)
    active = {(r.config.get("sweep") or {}).get("id") or r.run_id for r in infos if r.status in ("running", "queued")}
    return Usage(runs=len(infos), active=len(active), bytes=sum(folder_bytes(r.path) for r in infos))


def check_quota(infos: Iterable[Any], settings: Settings, *, new_runs: int = 1) -> None:
    """Refuse `new_runs` new runs (0: a resume) past the workspace's quotas; deletes nothing."""
    used = usage(infos)
    if used.active >= settings.max_active:
        raise PlaygroundError(
            f"Your workspace already has {used.active} runs queued or training (the limit on this server is "
            f"{settings.max_active}); wait for one to finish, or stop one, then start again."
        )
    if new_runs and used.runs + new_runs > settings.max_runs:
        also = f" and these {new_runs} would make {used.runs + new_runs}" if new_runs > 1 else ""
        raise PlaygroundError(
            f"Your workspace has {used.runs} runs{also}, past the {settings.max_runs} this server keeps per workspace; "
            "delete runs you no longer need on the Runs page, then start again."
        )
    if used.bytes >= settings.max_disk_mb * 1e6:
        raise PlaygroundError(
            f"Your workspace's runs use {used.bytes / 1e6:,.0f} MB of the {settings.max_disk_mb:,} MB it may "
            "use on this server; delete runs you no longer need on the Runs page (download their "
            "weights first if you want to keep them), then start again."
        )
