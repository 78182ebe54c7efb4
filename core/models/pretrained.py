"""torchvision's pretrained weights files: where they are kept, and downloading them.

torchvision keeps each file in torch's hub cache (`<TORCH_HOME>/hub/checkpoints/<file>`), the file name ending in
the first hex digits of its sha256. The studio and the command line both go through `download` here, rather than
torchvision's own loader: its download has no timeout (a page would hang on a dead network) and no progress
callback, and it fails with a socket error a learner cannot act on. Offline, the one-line message names the file,
the folder it goes in, where to get it and how to use it instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from core.errors import PlaygroundError

DOWNLOAD_TIMEOUT_S = 20  # per read, not for the whole file: a dead network fails in seconds, a slow one still works
_HASH = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's rule: "mobilenet_v3_small-047dcff4.pth" -> its sha256 starts 047dcff4


def checkpoints_dir() -> Path:
    """torch's hub cache of weights files (follows TORCH_HOME and torch.hub.set_dir)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(weights: Any) -> Path:
    """Where torchvision keeps the file of `weights` (a torchvision weights enum member)."""
    return checkpoints_dir() / Path(weights.url).name


def is_cached(weights: Any) -> bool:
    return cached_file(weights).is_file()


def unreachable_message(model: str, weights: Any) -> str:
    """One line for an offline user: which file, where it goes, where to get it, or how to do without the download."""
    target = cached_file(weights)
    return (
        f"{model}'s ImageNet weights ({target.name}) are not on this computer and {_host(weights.url)} cannot be "
        f"reached: download {weights.url} on a computer with internet and copy it into {target.parent}, or upload "
        f"it in the studio (Start from weights: Upload a weights file) / pass --weights {target.name}."
    )


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or url


def download(model: str, weights: Any, progress: Callable[[int, int], None] | None = None) -> Path:
    """The file of `weights` in the hub cache, downloaded first when it is not there yet (checked against the hash in
    its name). `progress(done, total)` is called per megabyte. PlaygroundError with one plain line when it fails."""
    target = cached_file(weights)
    if target.is_file():
        return target
    partial = target.with_name(target.name + ".part")
    expected = _HASH.search(target.name)
    digest = hashlib.sha256()
    print(f"Downloading {weights.url} into {target.parent}", file=sys.stderr)  # as torch.hub does: a big file takes a while
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(weights.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise PlaygroundError(
            f"{_host(weights.url)} answered {exc.code} {exc.reason} for {target.name}: try again later, or download "
            f"{weights.url} elsewhere and upload it in the studio / pass --weights {target.name}."
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        partial.unlink(missing_ok=True)
        raise PlaygroundError(unreachable_message(model, weights)) from None
    except OSError as exc:  # the cache folder: not writable, disk full
        partial.unlink(missing_ok=True)
        raise PlaygroundError(
            f"Could not save {target.name} into {target.parent} ({exc.strerror or type(exc).__name__}): free some "
            f"space or set TORCH_HOME to a folder you can write to."
        ) from None
    if expected and not digest.hexdigest().startswith(expected.group(1)):
        partial.unlink(missing_ok=True)
        raise PlaygroundError(f"The download of {target.name} arrived damaged (its checksum does not match): try again.")
    os.replace(partial, target)
    return target


def load_state_dict(model: str, weights: Any) -> dict[str, torch.Tensor]:
    """The tensors of `weights`, downloaded first when needed; torchvision's own loader reads the cached file."""
    path = download(model, weights)
    return torch.hub.load_state_dict_from_url(
        weights.url, model_dir=str(path.parent), map_location="cpu", progress=False, weights_only=True
    )
