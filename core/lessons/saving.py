"""Lesson 6, saving and loading: the tutorial's two ways on the tiny net, why the state_dict way is the one to use,
and what loading a whole pickled model can do.

Everything is written to a real temporary folder and read back with torch.load, so the sizes and messages on the
page are PyTorch's. The pickle demonstration is harmless on purpose: the file asks the loader to call
os.getpid() (a name for this process), and the answer proves the call happened; a malicious file names
os.system instead.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from core.lessons import Verdict, tiny

STATE_FILE = "tiny.pt"


@lru_cache(maxsize=1)
def original() -> tuple[nn.Sequential, torch.Tensor]:
    """The model to save (the tiny net after a few steps, so BatchNorm has statistics) and three test pictures.
    Kept for the next check (it is the same every time): read it, never train it further."""
    run = tiny.trained(steps=30)
    return run.model, tiny.as_input(run.data.test.images[:3], run.data)


@dataclass(frozen=True)
class BothWays:
    state_dict_bytes: int
    whole_model_bytes: int
    state_dict_keys: list[str]  # what the state_dict holds: names -> tensors, nothing else
    whole_model_refused: str  # torch.load(..., weights_only=True) on the whole model: its message
    pickle_ran: int  # what the "evil" file's call returned when loaded with weights_only=False (this process's id)
    pickle_refused: str  # the same file with weights_only=True


class _CallsOnLoad:
    """Pickled as "call os.getpid() to rebuild me": what any pickled object can ask of the loader."""

    def __reduce__(self):  # noqa: ANN204 - pickle's protocol
        return (os.getpid, ())


def both_ways(model: nn.Module) -> BothWays:
    with tempfile.TemporaryDirectory() as folder:
        state_path, whole_path, evil_path = (Path(folder) / name for name in (STATE_FILE, "whole.pt", "evil.pt"))
        torch.save(model.state_dict(), state_path)
        torch.save(model, whole_path)
        torch.save({"weights": torch.zeros(2), "extra": _CallsOnLoad()}, evil_path)
        keys = list(torch.load(state_path, weights_only=True))
        refused = _refusal(whole_path)
        ran = torch.load(evil_path, weights_only=False)["extra"]
        return BothWays(state_path.stat().st_size, whole_path.stat().st_size, keys, refused, ran, _refusal(evil_path))


def _refusal(path: Path) -> str:
    try:
        torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle's UnpicklingError: shown, word for word
        lines = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]  # the line naming what it refused
        return lines[0] if lines else str(exc).splitlines()[0]
    return ""


# ----------------------------------------------------------------- the task

BUILD = {
    "model = tiny_net(num_classes=3)": 3,
    "model = tiny_net(num_classes=10)": 10,
    "model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))": None,
}
LOAD = (
    'model.load_state_dict(torch.load("tiny.pt", weights_only=True))',
    'model = torch.load("tiny.pt", weights_only=True)',
    'model.load_state_dict("tiny.pt")',
)
MODE = ("model.eval()", "(nothing)")


def _build(choice: str) -> nn.Module:
    classes = BUILD[choice]
    return tiny.tiny_net(classes) if classes is not None else nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))


def task_code(build: str, load: str, mode: str) -> str:
    lines = [build, load]
    if mode != "(nothing)":
        lines.append(mode)
    return "\n".join([*lines, "with torch.no_grad():", "    prediction = model(pictures).softmax(dim=1)"])


def check_reload(build: str, load: str, mode: str) -> Verdict:
    """Save the original's state_dict to a real file, then build, load and predict as chosen, and compare."""
    if build not in BUILD or load not in LOAD or mode not in MODE:
        return Verdict(False, "Choose one line of each kind.")
    model, pictures = original()
    with torch.no_grad():
        expected = model.eval()(pictures).softmax(dim=1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / STATE_FILE
        torch.save(model.state_dict(), path)
        fresh = tiny.make_net(seed=1) if BUILD[build] == 3 else _build(build)  # other weights until the load
        try:
            if load == LOAD[0]:
                fresh.load_state_dict(torch.load(path, weights_only=True))
            elif load == LOAD[1]:
                fresh = torch.load(path, weights_only=True)
            else:
                fresh.load_state_dict(str(path))  # type: ignore[arg-type] - the learner's mistake, run as written
            if mode == "model.eval()":
                fresh.eval()
            with torch.no_grad(), tiny.seeded(0):
                got = fresh(pictures).softmax(dim=1)
        except (RuntimeError, TypeError, AttributeError) as exc:
            return Verdict(False, _hint(build, load), f"{type(exc).__name__}: {str(exc).strip()}")
    if torch.allclose(got, expected, atol=1e-5):
        return Verdict(True, "The same weights in the same architecture, in eval mode: the same prediction, to the last digit.")
    return Verdict(
        False,
        f"A different prediction: {got[0].max().item():.1%} for its top class instead of {expected[0].max().item():.1%}. "
        "The model is still in training mode: Dropout drops random features and BatchNorm uses this batch's "
        "statistics. Switch it to evaluation mode before predicting.",
    )


def _hint(build: str, load: str) -> str:
    if load == LOAD[1]:
        return "torch.load gives back the state_dict (names -> tensors), not a model: a dict cannot be called. Load it INTO a model."
    if load == LOAD[2]:
        return "load_state_dict takes the dict itself, not a file name: read the file with torch.load first."
    if BUILD[build] is None:
        return "The file's names (0.weight, 1.running_mean, ..., 14.bias) and shapes belong to the tiny net: build the same architecture."
    return "Same architecture, but another head: the saved one has 3 outputs. Build it with the classes it was trained on."
