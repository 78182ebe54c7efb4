"""Your own classes, Teachable-Machine style: a named set of class folders you fill with pictures.

A set is an ordinary image folder (`<set>/<class>/<image>.jpg`), so it trains as
`imagefolder:<path>`, can be picked again later, and downloads as a .zip that any
tool reading class folders understands. It lives in the data folder
(`data/classes/<set>`), or in shared mode in the workspace's own
(`data/workspaces/<code>/classes/<set>`), so students never see each other's.

Every picture goes through core.data.images' checks (a web page saved as .jpg, a HEIC
photo, a decompression bomb are refused with a message naming the file), is turned
upright by its EXIF orientation, shrunk to at most MAX_SIDE pixels and stored as a
JPEG named after the upload and its content hash: no name a user types reaches the
file system unchecked, the same picture added twice is kept once, and camera
metadata (GPS) is not kept.

Also the advice for small data: below a few hundred images per class, fine-tune a
pretrained network with a batch that gives several steps per epoch, and a warning
when the test split is too small to mean anything.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from core.data import datasets
from core.data.images import IMAGE_EXTENSIONS, open_image
from core.data.spec import SETS_FOLDER, DataSpec
from core.errors import PlaygroundError
from core.models.presets import SMALL_DATA_BACKBONE

MAX_SIDE = 640  # stored pictures: enough for any network's input (224-518), small enough for a class's worth of them
JPEG_QUALITY = 92
SMALL_DATA_PER_CLASS = 300  # below this many training images per class, fine-tune a pretrained network
MEANINGFUL_TEST_IMAGES = 20  # fewer test images than this: each one moves the accuracy by more than 5 points
MIN_PER_CLASS = 2  # one picture to train on, one to test with
MIN_BATCH = 4  # a dozen pictures still give three steps an epoch (training drops a last, partial batch)
TARGET_STEPS = 100  # the small-data recipe trains about this many optimizer steps in all
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$")
# A class folder with one of these names would make core.data.datasets read the set as train/ and test/ folders.
_RESERVED = {"train", "test", "val", "valid", "validation"}


def sets_root(workspace: str | None = None, data_dir: str | Path | None = None) -> Path:
    """Where sets live: the data folder's `classes/`, or the workspace's own in shared mode."""
    base = Path(data_dir or datasets.DATA_DIR)
    return base / "workspaces" / workspace / SETS_FOLDER if workspace else base / SETS_FOLDER


def _check_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise PlaygroundError(
            f"Name the {what} with up to 40 letters, digits, spaces, '-', '_' or '.' "
            f"(starting with a letter or digit); {name!r} does not fit."
        )
    return name


# --------------------------------------------------------------------------- sets and classes


def list_sets(root: Path) -> list[str]:
    """The sets under `root`, most recently changed first."""
    if not root.is_dir():
        return []
    sets = [d for d in root.iterdir() if d.is_dir() and _NAME.match(d.name)]
    return [d.name for d in sorted(sets, key=lambda d: d.stat().st_mtime, reverse=True)]


def create_set(root: Path, name: str) -> Path:
    name = _check_name(name, "image set")
    path = root / name
    if path.exists():
        raise PlaygroundError(f"There is already a set called {name!r}; pick it from the list or choose another name.")
    path.mkdir(parents=True)
    return path


def open_set(root: Path, name: str) -> Path:
    path = root / _check_name(name, "image set")
    if not path.is_dir():
        raise PlaygroundError(f"There is no set called {name!r} any more; create it again.")
    return path


def delete_set(root: Path, name: str) -> None:
    shutil.rmtree(open_set(root, name))


def class_names(set_path: Path) -> list[str]:
    """In the order training uses (sorted folder names: core.data.datasets gives class i to the i-th)."""
    return sorted(d.name for d in set_path.iterdir() if d.is_dir() and _NAME.match(d.name)) if set_path.is_dir() else []


def add_class(set_path: Path, name: str) -> Path:
    name = _check_name(name, "class")
    if name.lower() in _RESERVED:
        raise PlaygroundError(
            f"{name!r} cannot be a class name: a folder called {name} means a data split. Choose another name (e.g. 'train engine')."
        )
    if any(existing.lower() == name.lower() for existing in class_names(set_path)):
        raise PlaygroundError(f"There is already a class called {name!r} in this set.")
    path = set_path / name
    path.mkdir(parents=True)
    return path


def _class_dir(set_path: Path, name: str) -> Path:
    if name not in class_names(set_path):
        raise PlaygroundError(f"The set has no class called {name!r}.")
    return set_path / name


def rename_class(set_path: Path, old: str, new: str) -> Path:
    source = _class_dir(set_path, old)
    new = _check_name(new, "class")
    if new == old:
        return source
    if new.lower() in _RESERVED:
        raise PlaygroundError(f"{new!r} cannot be a class name: a folder called {new} means a data split.")
    if any(existing.lower() == new.lower() for existing in class_names(set_path) if existing != old):
        raise PlaygroundError(f"There is already a class called {new!r} in this set.")
    return source.rename(set_path / new)


def remove_class(set_path: Path, name: str) -> None:
    shutil.rmtree(_class_dir(set_path, name))


def images(set_path: Path, name: str) -> list[Path]:
    """A class's pictures, oldest first (the order they were added)."""
    folder = _class_dir(set_path, name)
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def counts(set_path: Path) -> dict[str, int]:
    return {name: len(images(set_path, name)) for name in class_names(set_path)}


@dataclass
class Added:
    """What add_images did: the files stored, those already there, and a message per file it refused."""

    added: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"added {len(self.added)} picture{'s' * (len(self.added) != 1)}"]
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} already there")
        if self.refused:
            parts.append(f"{len(self.refused)} refused")
        return ", ".join(parts).capitalize() + "."


def _stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(name).stem).strip("-")
    return stem[:40] or "image"


def _store(folder: Path, name: str, payload: bytes, result: Added) -> None:
    try:
        img = open_image(payload, name=name)
    except PlaygroundError as exc:
        result.refused.append(str(exc))
        return
    digest = hashlib.sha1(payload).hexdigest()[:10]
    if any(folder.glob(f"*-{digest}.jpg")):  # the same bytes under any name
        result.duplicates.append(name)
        return
    target = folder / f"{_stem(name)}-{digest}.jpg"
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=JPEG_QUALITY)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(buffer.getvalue())
    partial.replace(target)  # a half-written picture is never listed
    result.added.append(target.name)


def _add_zip(folder: Path, name: str, payload: bytes, result: Added) -> None:
    from core.data.archive import safe_extract_zip

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "upload.zip"
        archive.write_bytes(payload)
        try:
            extracted = safe_extract_zip(archive, Path(tmp) / "files", name=name)
        except PlaygroundError as exc:
            result.refused.append(str(exc))
            return
        found = sorted(p for p in extracted.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            result.refused.append(f"{name} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        for path in found:
            _store(folder, f"{name}/{path.relative_to(extracted)}", path.read_bytes(), result)


def add_images(set_path: Path, class_name: str, files: list[tuple[str, bytes]]) -> Added:
    """Store uploaded pictures (or every picture in an uploaded .zip) in a class; bad files are refused, one message
    each, and never stop the others."""
    folder = _class_dir(set_path, class_name)
    result = Added()
    for name, payload in files:
        if Path(name).suffix.lower() == ".zip":
            _add_zip(folder, Path(name).name, payload, result)
        else:
            _store(folder, Path(name).name, payload, result)
    return result


def remove_image(set_path: Path, class_name: str, file_name: str) -> None:
    folder = _class_dir(set_path, class_name)
    target = folder / Path(file_name).name  # a bare name: nothing outside the class folder can be named
    if Path(file_name).name != file_name or not target.is_file():
        raise PlaygroundError(f"{class_name} has no picture called {file_name!r} (already removed?).")
    target.unlink()


# --------------------------------------------------------------------------- split, export, import


def spec(set_path: Path) -> str:
    """The data SPEC that trains on a set."""
    return str(DataSpec.folder_of(set_path))


def not_ready(set_path: Path) -> str | None:
    """Why a set cannot train yet (fewer than two classes, or a class with fewer than two pictures), or None."""
    per_class = counts(set_path)
    if len(per_class) < 2:
        return "Add at least two classes: a classifier tells classes apart."
    short = [f"{name} has {n}" for name, n in per_class.items() if n < MIN_PER_CLASS]
    if short:
        return (
            f"Add at least {MIN_PER_CLASS} pictures to every class ({', '.join(short)}): one to train on and one to "
            "test with. A dozen or more per class works much better."
        )
    return None


def split(set_path: Path) -> list[dict[str, Any]]:
    """Per class: images, and how many train and test (the same stratified, seeded split training makes)."""
    rows = []
    for name, n in counts(set_path).items():
        test = datasets.test_count(n)
        rows.append({"class": name, "images": n, "train": n - test, "test": test})
    return rows


def export_zip(set_path: Path) -> bytes:
    """The set as `<set>/<class>/<image>` in a .zip: it trains again as `imagefolder:<file>.zip` anywhere."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not compress further
        for name in class_names(set_path):
            for path in images(set_path, name):
                zf.write(path, f"{set_path.name}/{name}/{path.name}")
    return buffer.getvalue()


def import_zip(root: Path, set_name: str, payload: bytes, zip_name: str = "upload.zip") -> tuple[Path, Added]:
    """A new set from a .zip of class folders (`<class>/<image>`, optionally inside train/ and test/ folders, which
    are merged: the set makes its own split)."""
    from core.data.archive import safe_extract_zip

    set_path = create_set(root, set_name)
    result = Added()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "upload.zip"
            archive.write_bytes(payload)
            folder = datasets._resolve_folder(safe_extract_zip(archive, Path(tmp) / "files", name=zip_name), Path(tmp))
            splits, classes = datasets._folder_layout(folder)
            for name in classes:
                add_class(set_path, name)
                for split_dir in splits.values():
                    found = sorted(p for p in (split_dir / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
                    for path in found:
                        _store(set_path / name, path.name, path.read_bytes(), result)
    except PlaygroundError:
        shutil.rmtree(set_path, ignore_errors=True)  # a zip that cannot be read leaves no empty set behind
        raise
    return set_path, result


# --------------------------------------------------------------------------- small data: the right recipe


def suggested_batch_size(n_train: int) -> int:
    """A batch that gives about four steps per epoch or more: a power of two, between MIN_BATCH and 64."""
    batch = 2 ** int(math.log2(max(1, n_train // 4))) if n_train >= 4 else MIN_BATCH
    return max(MIN_BATCH, min(64, batch))


def small_data_recipe(train_per_class: list[int]) -> dict[str, Any] | None:
    """For a dataset with fewer than SMALL_DATA_PER_CLASS training images in some class: fine-tune a pretrained
    network with a frozen backbone, a batch size that gives several steps per epoch and enough epochs for about
    TARGET_STEPS steps, and a one-line why. None when the data is big enough for the usual recipes."""
    if not train_per_class or min(train_per_class) >= SMALL_DATA_PER_CLASS:
        return None
    n_train = sum(train_per_class)
    batch = suggested_batch_size(n_train)
    steps = max(1, n_train // batch)
    epochs = max(5, min(30, math.ceil(TARGET_STEPS / steps)))
    fewest = min(train_per_class)
    why = (
        f"Only {fewest} training picture{'s' * (fewest != 1)} in the smallest class: a network pretrained on ImageNet "
        "already knows edges, textures and object parts, so a new head on its features learns from a handful of "
        "pictures, where training from scratch needs thousands."
    )
    return {
        "model": SMALL_DATA_BACKBONE,
        "weights": "DEFAULT",
        "freeze_backbone": True,
        "batch_size": batch,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "why": why,
    }


def run_test_split_warning(config: dict[str, Any]) -> str | None:
    """A run's small-test-split warning as its config.json records it (`dataset.test_split_warning`); for a run
    recorded before that field existed, the same rule applied to its `dataset.n_test`."""
    dataset = config.get("dataset") or {}
    if "test_split_warning" in dataset:
        return dataset["test_split_warning"]
    return test_split_warning(int(dataset["n_test"])) if dataset.get("n_test") is not None else None


def test_split_warning(n_test: int, *, own_split: bool = False) -> str | None:
    """A one-line warning when a test split is too small for its accuracy to mean much; None otherwise.

    `own_split`: the data came with its own test/ (or val/) folder, rather than a share held out of each class."""
    more = (
        "Add pictures to the test folder of every class."
        if own_split
        else f"Add pictures: each class keeps {datasets.TEST_FRACTION:.0%} of its images (at least {datasets.MIN_TEST_PER_CLASS}) for testing."
    )
    if n_test <= 0:
        return "No test images: the test accuracy cannot be measured. " + (more if own_split else "Add a few more pictures to every class.")
    if n_test >= MEANINGFUL_TEST_IMAGES:
        return None
    points = 100 / n_test
    return (
        f"{n_test} test image{'s' * (n_test != 1)}: each one is {points:.0f} points of accuracy, so the test "
        f"accuracy jumps in steps of {points:.0f}% and says little. {more}"
    )
