"""The run folder: models/<run-id>/{config.json, metrics.jsonl, checkpoint.pt, meta.json}.

Every way of training (a child process the studio's queue starts, `python -m core.train` on the command line,
torchrun) writes this same folder, and every view reads it, so there is one truth per run.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.spec import DataSpec
from core.errors import PlaygroundError
from core.files import atomic_write_bytes, safe_torch_load, write_json

MODELS_DIR = Path(os.environ.get("PLAYGROUND_MODELS_DIR", Path(__file__).resolve().parents[2] / "models"))
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
STOP_FILE = "STOP"
# The person's own words about a run (a short name, a note): apart from config.json, which only
# write_config writes and which says how the run was made, so renaming never touches the record.
META_FILE = "meta.json"
NAME_MAX, NOTE_MAX = 40, 2000
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FINAL_STATUSES = ("finished", "stopped", "diverged", "failed", "interrupted")
# "queued": waiting in the fair queue, no process yet; "running": a process owns the run (from the
# moment the queue hands it over, through set-up, to the last step). See core/serving/jobs.py.
ACTIVE_STATUSES = ("running", "queued")


def new_run_id(model: str, data: str) -> str:
    """Sortable by start time, readable, and unique even for two runs started in the same second."""
    data_name = re.sub(r"[^A-Za-z0-9]+", "-", DataSpec.parse(data).name())[:24].strip("-")
    model_name = re.sub(r"[^A-Za-z0-9_]+", "-", model)[:24]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{model_name}-{data_name or 'data'}-{secrets.token_hex(2)}"


def run_path(run_id: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of a run id, refusing ids that could escape the models folder."""
    if not RUN_ID_PATTERN.match(run_id or "") or ".." in run_id:
        raise PlaygroundError(f"{run_id!r} is not a valid run id (letters, digits, '.', '_' and '-' only).")
    return Path(root or MODELS_DIR) / run_id


def write_config(run_dir: str | os.PathLike, config: dict[str, Any], **details: Any) -> None:
    """config.json: a run's TrainConfig (as a dict), its id and creation time, and what the trainer adds once the
    data is loaded (classes, sizes, normalization, parameters, env). The one writer of the file, in any process."""
    run_dir = Path(run_dir)
    write_json(run_dir / CONFIG_FILE, {**config, "run_id": run_dir.name, "created": time.time(), **details})


def check_name(name: str) -> str:
    """A run's short name, stripped; empty means 'use the default name'."""
    name = (name or "").strip()
    if len(name) > NAME_MAX or "\n" in name:
        raise PlaygroundError(f"Give the run a short name: one line of at most {NAME_MAX} characters (this one has {len(name)}).")
    return name


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """meta.json ({"name", "note"}); a missing or unreadable file is no name and no note."""
    try:
        meta = json.loads((Path(run_dir) / META_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_meta(run_dir: str | os.PathLike, *, name: str | None = None, note: str | None = None) -> dict[str, Any]:
    """Set a run's name and/or note (None leaves it as it is, "" clears it); returns the new meta."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise PlaygroundError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); nothing renamed.")
    meta = read_meta(run_dir)
    if name is not None:
        meta["name"] = check_name(name)
    if note is not None:
        note = note.strip()
        if len(note) > NOTE_MAX:
            raise PlaygroundError(f"Keep the note under {NOTE_MAX:,} characters (it has {len(note):,}).")
        meta["note"] = note
    write_json(run_dir / META_FILE, {k: v for k, v in meta.items() if v != ""})
    return meta


def setting_word(value: Any) -> str:
    """A setting's value in words: on/off, 0.01, none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def describe_settings(settings: dict[str, Any]) -> str:
    """{"lr": 0.01, "augment": False} -> 'lr 0.01, augment off'."""
    return ", ".join(f"{k.replace('_', ' ')} {setting_word(v)}" for k, v in settings.items())


def default_name(config: dict[str, Any]) -> str:
    """'<model> on <data>'; a sweep's run adds its setting and seed, which tell it from its siblings."""
    name = f"{config.get('model', '?')} on {DataSpec.parse(str(config.get('data', '?'))).name()}"
    sweep = config.get("sweep") or {}
    if sweep.get("settings"):
        name += f" · {describe_settings(sweep['settings'])}, seed {config.get('seed', 0)}"
    return name


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomic torch.save; a failure (full disk, read-only folder) keeps the previous file intact."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        atomic_write_bytes(Path(path), buffer.getvalue())
    except OSError as exc:
        raise PlaygroundError(
            f"Could not write checkpoint {path} ({exc.strerror or exc}); free disk space or "
            "choose a writable folder. The previous checkpoint is unchanged."
        ) from None


# --------------------------------------------------------------------------- metrics


class MetricsWriter:
    """Appends one JSON object per line; one writer per run (rank 0 of the trainer)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        record.setdefault("time", time.time())
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        # Flush per record: readers poll the file and a kill must not lose finished epochs.
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def append_status(run_dir: Path, record: dict[str, Any]) -> None:
    """One status record at the end of metrics.jsonl, written by a process that is not the run's trainer (the queue)."""
    writer = MetricsWriter(run_dir)
    try:
        writer.write({"kind": "status", **record})
    finally:
        writer.close()


def read_metrics(run_dir: str | os.PathLike, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Records from byte `offset` on, and the offset to continue from.

    A last line without its newline is still being written (or was cut by a
    crash) and is left for the next read; an unparsable complete line is skipped.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    records = []
    for line in chunk[:end].splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records, offset + end


# --------------------------------------------------------------------------- listing


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited child nobody waited for is a zombie: it answers signals but is dead
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class RunInfo:
    run_id: str
    path: Path
    config: dict[str, Any]
    status: str  # queued, running, finished, stopped, diverged, failed, interrupted, created
    message: str = ""
    epochs_done: int = 0
    best_acc: float | None = None
    last_acc: float | None = None
    img_per_s: float | None = None
    started: float | None = None
    seconds: float | None = None
    has_checkpoint: bool = False
    switched_off: dict[str, str] = field(default_factory=dict)  # fast-path parts the run went on without (core/training/fallback.py)
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    workspace: str | None = None  # shared mode: the workspace that started it (core.serving.shared)
    queue: dict[str, Any] | None = None  # the record that put it in the queue (core.serving.jobs): when, how, on what
    attempts: int = 0  # processes the queue gave it since it was queued
    slots: list[str] | None = None  # the devices its process holds, e.g. ["cuda:0"]
    pid: int | None = None
    host: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # meta.json: the person's name and note for the run

    @property
    def name(self) -> str:
        """The run's short name: the one given to it, else '<model> on <data>'."""
        return self.meta.get("name") or default_name(self.config)

    @property
    def note(self) -> str:
        return self.meta.get("note", "")

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def resumable(self) -> bool:
        return (
            self.has_checkpoint
            and self.status in ("stopped", "interrupted", "diverged", "failed")
            and self.epochs_done < int(self.config.get("epochs", 0))
        )


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise PlaygroundError(f"{run_dir} is not a run folder (no {CONFIG_FILE}).") from None
    except ValueError:
        raise PlaygroundError(f"{run_dir}/{CONFIG_FILE} is corrupt.") from None


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Status and headline figures from a run's records, and where it stands in the queue (core.serving.jobs)."""
    out: dict[str, Any] = {
        "status": "created",
        "message": "",
        "epochs_done": 0,
        "best_acc": None,
        "last_acc": None,
        "img_per_s": None,
        "started": None,
        "seconds": None,
        "pid": None,
        "host": None,
        "workspace": None,
        "queue": None,
        "dispatched": False,
        "attempts": 0,
        "slots": None,
        "switched_off": {},  # `notice` records: what -> the message (the last one, if a resumed run met it again)
    }
    for r in records:
        kind = r.get("kind")
        if kind == "status":
            status = r.get("status", out["status"])
            out["status"] = status
            out["message"] = r.get("message", "")
            out["workspace"] = out["workspace"] or r.get("workspace")
            if status == "queued" and not r.get("pid"):  # waiting in the queue: no process yet
                out.update(queue=r, dispatched=False, attempts=0, slots=None, pid=None, host=None)
            elif status in ACTIVE_STATUSES:
                out["status"] = "running"  # a process owns it (an older app wrote "queued" with the pid)
                out["pid"], out["host"] = r.get("pid"), r.get("host")
                out["started"] = out["started"] or r.get("time")
                # The queue's hand-over record (and an older app's "queued" with a pid): a process owns
                # the run but training has not begun; the trainer's own "running" record follows.
                out["dispatched"] = bool(r.get("dispatched") or status == "queued")
                out["attempts"] += bool(r.get("dispatched"))
                out["slots"] = r.get("slots", out["slots"])
            if "epochs_done" in r:
                out["epochs_done"] = r["epochs_done"]
        elif kind == "epoch":
            out["epochs_done"] = r.get("epoch", out["epochs_done"])
            acc = r.get("test_acc")
            if acc is not None:
                out["last_acc"] = acc
                out["best_acc"] = acc if out["best_acc"] is None else max(out["best_acc"], acc)
            out["img_per_s"] = r.get("img_per_s", out["img_per_s"])
        elif kind == "notice" and r.get("what"):
            out["switched_off"][r["what"]] = r.get("message", "")
        if "elapsed" in r:
            out["seconds"] = r["elapsed"]
    return out


_READ_CACHE: dict[Path, tuple[tuple, dict[str, Any], list[dict[str, Any]], dict[str, Any], dict[str, Any]]] = {}
_READ_CACHE_MAX = 4096


def _file_key(path: Path) -> tuple:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (None,)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """config, records, their summary and meta, re-read only when one of the files changed:
    a class's listing is polled every second by every browser, and most runs are long finished."""
    key = (_file_key(run_dir / CONFIG_FILE), _file_key(run_dir / METRICS_FILE), _file_key(run_dir / META_FILE))
    hit = _READ_CACHE.get(run_dir)
    if hit is not None and hit[0] == key:
        return hit[1], hit[2], hit[3], hit[4]
    config = read_config(run_dir)
    records, _ = read_metrics(run_dir)
    summary = summarize(records)
    meta = read_meta(run_dir)
    if len(_READ_CACHE) >= _READ_CACHE_MAX:
        _READ_CACHE.pop(next(iter(_READ_CACHE)), None)
    _READ_CACHE[run_dir] = (key, config, records, summary, meta)
    return config, records, summary, meta


def run_info(run_dir: str | os.PathLike) -> RunInfo:
    run_dir = Path(run_dir)
    config, records, s, meta = _read_run(run_dir)
    status, message = s["status"], s["message"]
    if status in ACTIVE_STATUSES and s["pid"] and s["host"] == socket.gethostname() and not _pid_alive(int(s["pid"])):
        if s["dispatched"] and s["queue"]:
            # Its process died before training began (killed while starting up): the run never
            # started, so it is still waiting, at its old place in the queue.
            status, message = "queued", "Its training process ended before it started; it is back in the queue."
        else:  # the process that owned the run is gone (killed, crashed, app restarted)
            status, message = "interrupted", "The training process ended without finishing; resume from the last checkpoint."
    return RunInfo(
        run_id=run_dir.name,
        path=run_dir,
        config=config,
        status=status,
        message=message,
        has_checkpoint=(run_dir / CHECKPOINT_FILE).exists(),
        records=records,
        meta=meta,
        # the figures `summarize` read from the records, under the same names
        **{k: s[k] for k in ("epochs_done", "best_acc", "last_acc", "img_per_s", "started", "seconds", "switched_off")},
        **{k: s[k] for k in ("workspace", "queue", "attempts", "slots", "pid", "host")},
    )


def list_runs(root: str | os.PathLike | None = None, workspace: str | None = None) -> list[RunInfo]:
    """Every readable run under `root`, newest first (only `workspace`'s when given); folders
    that are not runs are ignored."""
    root = Path(root or MODELS_DIR)
    if not root.is_dir():
        return []
    runs = []
    for child in root.iterdir():
        if child.is_dir() and (child / CONFIG_FILE).exists():
            try:
                info = run_info(child)
            except PlaygroundError:
                continue
            if workspace is None or info.workspace == workspace:
                runs.append(info)
    for gone in [p for p in _READ_CACHE if p.parent == root and not p.is_dir()]:  # deleted runs
        _READ_CACHE.pop(gone, None)
    return sorted(runs, key=lambda r: r.run_id, reverse=True)


def distinct_names(infos: Iterable[RunInfo]) -> dict[str, str]:
    """run id -> the run's name, with " #1", " #2", ... (oldest first) where several runs share it: legends, table
    columns and pickers tell same-named runs apart in words, never by a fragment of their ids."""
    infos = sorted(infos, key=lambda r: (r.config.get("created") or r.started or 0, r.run_id))
    counts: dict[str, int] = {}
    for info in infos:
        counts[info.name] = counts.get(info.name, 0) + 1
    taken = {name for name, n in counts.items() if n == 1}
    names, seen = {}, dict.fromkeys(counts, 0)
    for info in infos:
        name = info.name
        if counts[name] > 1:
            seen[name] += 1
            number = seen[name]
            while f"{name} #{number}" in taken:  # someone named another run "x #2" by hand
                number += 1
            name = f"{name} #{number}"
            taken.add(name)
        names[info.run_id] = name
    return names


def delete_run(run_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> None:
    run_dir = Path(run_dir).resolve()
    root = Path(root or MODELS_DIR).resolve()
    if run_dir.parent != root or not (run_dir / CONFIG_FILE).exists():
        raise PlaygroundError(f"{run_dir} is not a run folder inside {root}; nothing deleted.")
    if run_info(run_dir).active:
        raise PlaygroundError("This run is queued or training; stop it before deleting it.")
    shutil.rmtree(run_dir)


def position(epochs_done: int, step: int, epochs: int, steps_per_epoch: int = 0) -> str:
    """'epoch 4 of 8, step 21 of 25': where a run is, counted one way everywhere (progress bar, stop message).

    The epoch is the one under way, from 1 (as a progress bar counts); the step is how many of its batches are
    done. `epochs_done` and `step` are what a checkpoint records: a stop right at the end of epoch 3 is
    epoch 3, step 25 of 25 (not epoch 4, step 0).
    """
    if step == 0 and epochs_done > 0 and steps_per_epoch:
        epochs_done, step = epochs_done - 1, steps_per_epoch
    where = f"epoch {min(epochs_done + 1, max(epochs, 1))} of {epochs}"
    return f"{where}, step {step} of {steps_per_epoch}" if steps_per_epoch else f"{where}, step {step}"


def request_stop(run_dir: str | os.PathLike) -> None:
    """Ask a trainer in another process to stop: it checks for this file every batch."""
    (Path(run_dir) / STOP_FILE).touch()


# --------------------------------------------------------------------------- checkpoints and exports


def load_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        raise PlaygroundError(f"Run {Path(run_dir).name} has no checkpoint yet (it saves one at the end of each epoch).")
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise PlaygroundError(f"{path} is not a Torch Playground checkpoint.")
    return ckpt


def state_dict_bytes(run_dir: str | os.PathLike) -> bytes:
    """The tutorial's way 2, exactly: torch.save(model.state_dict()) of the run's model (contiguous CPU tensors),
    so model.load_state_dict(torch.load(f, weights_only=True)) works; what else it needs is in weights_info()."""
    state = {k: v.detach().cpu().contiguous() for k, v in load_checkpoint(run_dir)["model"].items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


# What a weights file needs beside it to be used: the JSON sidecar of state_dict_bytes.
WEIGHTS_INFO_KEYS = ("model", "layers", "widths", "classes", "normalization", "image_size", "input_size", "tta")


def weights_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The state_dict's companion: architecture, classes, normalization and sizes (plain JSON)."""
    ckpt = load_checkpoint(run_dir)
    config = ckpt.get("config") or read_config(run_dir)
    return {
        "model": config.get("model"),
        "layers": config.get("layers") if config.get("model") == "custom" else None,
        "classes": list(ckpt["classes"]),
        # float32 values written as their shortest exact decimals (0.4877, not 0.4876999855041504)
        "normalization": {k: [float(str(np.float32(v))) for v in ckpt["normalization"][k]] for k in ("mean", "std")},
        "image_size": int(ckpt["image_size"]),
        "input_size": int(ckpt["input_size"]),
        "tta": int(config.get("tta") or 0),
        "widths": config.get("widths"),
        "run_id": Path(run_dir).name,
        "epochs": int(ckpt.get("epoch", 0)),
        "test_acc": (ckpt.get("metrics") or {}).get("test_acc"),
        "preprocessing": "RGB; resize the shorter side to image_size and centre-crop; resize to input_size "
        "(bilinear, antialiased); scale to [0, 1]; subtract mean and divide by std per channel",
    }


def read_weights_info(source: str | os.PathLike | bytes, name: str | None = None) -> dict[str, Any]:
    """A weights_info JSON (e.g. uploaded beside a state_dict), checked field by field."""
    name = name or (Path(source).name if isinstance(source, (str, os.PathLike)) else "the JSON file")
    try:
        text = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else source
        info = json.loads(text)
    except (OSError, ValueError) as exc:
        raise PlaygroundError(f"{name} is not a readable JSON file ({str(exc).splitlines()[0][:120]}).") from None
    problem = ""
    if not isinstance(info, dict):
        problem = "it is not a JSON object"
    elif "classes" in info and not (
        isinstance(info["classes"], list) and info["classes"] and all(isinstance(c, str) for c in info["classes"])
    ):
        problem = "classes must be a list of names"
    elif "normalization" in info and not (
        isinstance(info["normalization"], dict)
        and all(
            isinstance(info["normalization"].get(k), list)
            and len(info["normalization"][k]) == 3
            and all(isinstance(v, (int, float)) for v in info["normalization"][k])
            for k in ("mean", "std")
        )
    ):
        problem = 'normalization must be {"mean": [3 numbers], "std": [3 numbers]}'
    elif any(k in info and not (isinstance(info[k], int) and 1 <= info[k] <= 4096) for k in ("image_size", "input_size")):
        problem = "image_size and input_size must be whole numbers of pixels"
    elif info.get("widths") is not None and not (
        isinstance(info["widths"], list) and len(info["widths"]) == 3 and all(isinstance(w, int) and 1 <= w <= 4096 for w in info["widths"])
    ):
        problem = "widths must be the speedrun net's 3 channel counts"
    if problem:
        raise PlaygroundError(f"{name} does not describe weights ({problem}); use the .json downloaded with the weights.")
    return {k: info[k] for k in WEIGHTS_INFO_KEYS if info.get(k) is not None}


def whole_model_bytes(model: torch.nn.Module) -> bytes:
    """The tutorial's other save style, torch.save(model): a pickle that runs code when
    loaded, so only load such files from yourself (see load_whole_model)."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def load_whole_model(
    path: str | os.PathLike, *, allow_unsafe_pickle: bool = False, root: str | os.PathLike | None = None
) -> torch.nn.Module:
    """Load a whole pickled model, only from the user's own models folder and only after an explicit opt-in."""
    if not allow_unsafe_pickle:
        raise PlaygroundError(
            "Loading a whole pickled model can run arbitrary code; opt in explicitly "
            "(allow_unsafe_pickle=True) and only for files you saved yourself."
        )
    path = Path(path).resolve()
    root = Path(root or MODELS_DIR).resolve()
    if root not in path.parents:
        raise PlaygroundError(f"Whole-model pickles are only loaded from your own models folder ({root}).")
    model = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(model, torch.nn.Module):
        raise PlaygroundError(f"{path.name} does not contain a model.")
    return model
