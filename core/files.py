"""Files written whole or not at all, and torch files read without running their code: what every stage that keeps
something on disk (the dataset cache, run folders, checkpoints, lesson progress) and every reader of a weights file
relies on.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import pickletools
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from core.errors import PlaygroundError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers and a
    crash see the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def safe_torch_load(source: str | os.PathLike | bytes | io.BytesIO) -> Any:
    """torch.load that never runs code from the file: tensors and plain values only."""
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "the uploaded file"
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return torch.load(data, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if any(c.startswith("torch.nn.modules.") for c in pickled_classes(source)):
            stem = Path(name).stem
            raise PlaygroundError(
                f"{name} is a whole pickled model (saved with torch.save(model)), refused on purpose: loading a pickle "
                f"runs whatever code is inside it. If you trust the file, convert it once in Python: "
                f'model = torch.load("{name}", weights_only=False); torch.save(model.state_dict(), "{stem}-state_dict.pt"); '
                f"then use {stem}-state_dict.pt."
            ) from None
        raise PlaygroundError(
            f"{name} contains Python objects that are not plain tensors, so it was refused for safety "
            f"(a whole pickled model or a file from an unknown source). Save with "
            f"torch.save(model.state_dict(), path) or use .safetensors."
        ) from None
    except FileNotFoundError:
        raise PlaygroundError(f"{name} does not exist.") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise PlaygroundError(f"{name} is not a readable PyTorch file ({str(exc).splitlines()[0][:160]}).") from None


def pickled_classes(source: str | os.PathLike | bytes | io.BytesIO) -> list[str]:
    """'module.Name' of each class a torch.save file's pickle refers to, read with pickletools: nothing is unpickled."""
    try:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            pickle_name = next(n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
            payload = archive.read(pickle_name)
        names, strings = [], []
        for opcode, arg, _ in pickletools.genops(payload):
            if opcode.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(str(arg))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
        return names
    except Exception:  # noqa: BLE001 - not a zip, no pickle, a broken pickle: no classes to report
        return []
