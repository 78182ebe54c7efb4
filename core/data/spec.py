"""The data SPEC, parsed in one place: `shapes` or `shapes:N`, `cifar10`, `imagefolder:PATH` (a folder or a .zip).

A spec is what a run's config.json, the command line's --data and the Train form's data picker hold: a string.
Everything that needs to know what it names (the loader, the queue's time estimates, the exports, the run's
default name, the pages) asks `DataSpec.parse(spec)` instead of splitting it on ":" itself, and the defaults it
implies (how many shapes, at what side images are stored) live here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import PlaygroundError

KINDS = ("shapes", "cifar10", "imagefolder")
SHAPES_TRAIN = 12000  # `shapes` without a size: enough drawings to learn them well in a few CPU minutes
SHAPES_TEST = 2000  # the shapes test split, whatever the training size (each test image is drawn from its own seed)
STORED_SIDE = 32  # generated shapes and CIFAR-10 are 32x32; image folders are stored at the model's input side
SETS_FOLDER = "classes"  # <data dir>/classes/<set>: your own classes (core/data/classes.py), each set a folder
NAME_MAX = 28  # a display name longer than this is cut (a folder's own name can be anything)


@dataclass(frozen=True)
class DataSpec:
    kind: str  # one of KINDS, or what a user typed (refused by `check`)
    path: str = ""  # imagefolder: the folder or .zip, as given
    n_train: int | None = None  # shapes:N; None: SHAPES_TRAIN

    @classmethod
    def parse(cls, spec: str | DataSpec) -> DataSpec:
        """Never raises: a spec that names nothing loadable is refused by `check()` when it is loaded, so that a run with
        a bad spec is still listed with its error, and any config.json can be shown."""
        if isinstance(spec, DataSpec):
            return spec
        kind, _, arg = str(spec).strip().partition(":")
        if kind == "shapes":
            return cls(kind, n_train=int(arg) if arg.isdigit() else None)
        return cls(kind, path=arg)

    def check(self) -> DataSpec:
        if self.kind == "imagefolder" and not self.path:
            raise PlaygroundError("imagefolder needs a path: imagefolder:/path/to/folder_or.zip")
        if self.kind not in KINDS:
            raise PlaygroundError(f"Unknown data spec {str(self)!r}; use cifar10, shapes, or imagefolder:PATH.")
        return self

    def __str__(self) -> str:
        if self.kind == "shapes":
            return f"shapes:{self.n_train}" if self.n_train is not None else "shapes"
        return f"{self.kind}:{self.path}" if self.path else self.kind

    @classmethod
    def folder_of(cls, path: str | Path) -> DataSpec:
        return cls("imagefolder", path=str(path))

    @classmethod
    def shapes(cls, n_train: int = SHAPES_TRAIN) -> DataSpec:
        """The default size is written `shapes`, as people type it."""
        return cls("shapes", n_train=None if n_train == SHAPES_TRAIN else n_train)

    @property
    def is_folder(self) -> bool:
        return self.kind == "imagefolder"

    @property
    def folder(self) -> Path:
        return Path(self.path).expanduser()

    @property
    def shapes_train(self) -> int:
        return self.n_train or SHAPES_TRAIN

    @property
    def is_set(self) -> bool:
        """One of your own classes' sets (core/data/classes.py keeps them in SETS_FOLDER)."""
        return self.is_folder and Path(self.path).parent.name == SETS_FOLDER

    def stored_side(self, input_size: int) -> int:
        """The side images are stored at: a folder's at the model's input side, everything else as it comes (32)."""
        return input_size if self.is_folder else STORED_SIDE

    def name(self, *, detail: bool = False) -> str:
        """How the studio names the data to a person: 'Shapes', 'CIFAR-10', or the part of a folder's or .zip's path a
        person chose ('cats-dogs' for imagefolder:/x/uploads/3fa9c2e1d0b4-cats-dogs.zip). `detail` adds what tells
        two of a kind apart where there is room: 'Shapes (600 images)', 'pets (your classes)', 'image folder cats-dogs'."""
        if self.kind == "shapes":
            return f"Shapes ({self.n_train:,} images)" if detail and self.n_train is not None else "Shapes"
        if self.kind == "cifar10":
            return "CIFAR-10"
        stem = Path(self.path.rstrip("/")).name or self.path or self.kind
        stem = re.sub(r"\.zip$", "", stem, flags=re.IGNORECASE)
        stem = re.sub(r"^[0-9a-f]{12}-", "", stem) or stem  # uploads are saved as <content hash>-<file name>
        stem = stem if len(stem) <= NAME_MAX else stem[: NAME_MAX - 1] + "…"
        if not detail:
            return stem
        return f"{stem} (your classes)" if self.is_set else f"image folder {stem}"
