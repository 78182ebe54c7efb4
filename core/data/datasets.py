"""Datasets as uint8 tensors: shapes (generated), CIFAR-10 (torchvision's files) and image folders (or a .zip).

Images are decoded once (and cached on disk), so that every epoch is pure tensor work on the device
(core/data/batches.py): no per-sample PIL work or DataLoader workers in the training loop, which is both
faster and one less thing to crash (airbench's approach).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import multiprocessing
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data

from core.data.images import IMAGE_EXTENSIONS, fast_jpeg_decoder, load_files_for_model
from core.data.spec import SHAPES_TEST, SHAPES_TRAIN, STORED_SIDE, DataSpec
from core.errors import PlaygroundError
from core.files import atomic_write_bytes

DATA_DIR = Path(os.environ.get("PLAYGROUND_DATA_DIR", Path(__file__).resolve().parents[2] / "data"))
MAX_DATASET_BYTES = 6 * 1024**3  # decoded uint8 pixels kept in memory
DOWNLOAD_TIMEOUT_S = 20
TEST_FRACTION = 0.1  # of each class, held out for testing when a folder has no test split
MIN_TEST_PER_CLASS = 3  # ... but at least this many per class: one or two test images say nothing
PARALLEL_DECODE_MIN_FILES = 1024  # below this, starting worker processes costs more than it saves
# torchvision's JPEG decoder saves ~0.2 ms a file over PIL's path; getting it costs ~20 ms (its image library alone,
# core.data.images._jpeg_op) or 1-2 s where torchvision must be imported whole, so it is used where each decoding
# process has this many files (or torchvision is imported already).
TORCHVISION_DECODE_MIN_FILES = 8000
DECODER_VERSION = 2  # part of every cache key: bump when decoding would give other pixels
SHAPES_VERSION = 1  # part of the shapes cache key: bump when _render_shapes draws differently
SHAPES_CLASSES = ("circle", "ring", "square", "triangle", "star", "cross", "stripes", "checker", "dots", "crescent")


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    files: list[str] | None = None  # each image's file, for data read from files (so a mistake can be found on disk)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        files = None
        if self.files is not None:
            positions = index.nonzero().flatten() if index.dtype == torch.bool else index.flatten()
            files = [self.files[i] for i in positions.tolist()]
        return Split(self.images[index], self.labels[index], files)


@dataclass
class Dataset:
    spec: str
    classes: list[str]
    train: Split
    test: Split
    skipped: int = 0  # unreadable files left out
    has_test_split: bool = True  # False: `test` was carved out of one folder by a seeded split

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean/std of the training images in [0, 1], for normalization.

        From each channel's histogram of its 256 levels: exact, and ~8x cheaper than the images as floats.
        """
        x = self.train.images[:20000]
        counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])]).double()
        levels = torch.arange(256, dtype=torch.float64, device=counts.device) / 255
        n = counts.sum(1)
        mean = counts @ levels / n
        std = ((counts * (levels - mean[:, None]) ** 2).sum(1) / (n - 1)).sqrt().clamp_min(1e-3)
        return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def save_upload(name: str, payload: bytes) -> Path:
    """An uploaded file (a .zip of class folders, a weights file) kept in DATA_DIR/uploads, where a training process
    can read it, as <content hash>-<file name>: the same file uploaded twice is one file (and one extraction cache),
    and DataSpec.name shows the file name without the hash."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name)[-60:]
    folder = DATA_DIR / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha1(payload).hexdigest()[:12]}-{name}"
    if not path.exists():
        path.write_bytes(payload)
    return path


# --------------------------------------------------------------------------- entry point


def load_dataset(
    spec: str | DataSpec,
    *,
    image_size: int = STORED_SIDE,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    test_fraction: float = TEST_FRACTION,
    download: bool = True,
) -> Dataset:
    """Parse a data SPEC (`cifar10`, `shapes`, `imagefolder:PATH`) and load it as tensors."""
    data_dir = Path(data_dir or DATA_DIR)
    spec = DataSpec.parse(spec).check()
    if spec.kind == "shapes":
        return shapes_dataset(n_train=spec.shapes_train, n_test=SHAPES_TEST, seed=seed, cache_dir=data_dir / "cache")
    if spec.kind == "cifar10":
        return cifar10_dataset(data_dir, download=download)
    return imagefolder_dataset(spec.folder, image_size=image_size, seed=seed, test_fraction=test_fraction, cache_dir=data_dir / "cache")


# --------------------------------------------------------------------------- shapes


def _shape_masks(label: int, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean masks of one class in rotated, centred coordinates (u, v) with radius r."""
    rho2 = u**2 + v**2
    disk = rho2 <= r**2
    if label == 0:  # circle
        return disk
    if label == 1:  # ring
        return disk & (rho2 >= (0.55 * r) ** 2)
    if label == 2:  # square
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if label == 3:  # triangle: three half-planes
        inside = np.ones_like(disk)
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(a) + v * np.sin(a) <= 0.5 * r
        return inside
    if label == 4:  # five-pointed star
        phi = np.arctan2(v, u)
        return np.sqrt(rho2) <= r * (0.6 + 0.4 * np.cos(5 * phi))
    if label == 5:  # cross
        return ((np.abs(u) <= 0.3 * r) & (np.abs(v) <= r)) | ((np.abs(v) <= 0.3 * r) & (np.abs(u) <= r))
    if label == 6:  # stripes in a disk
        return disk & (np.floor(u / (0.4 * r)) % 2 == 0)
    if label == 7:  # checkerboard square
        p = 0.45 * r
        return (np.abs(u) <= 0.9 * r) & (np.abs(v) <= 0.9 * r) & ((np.floor(u / p) + np.floor(v / p)) % 2 == 0)
    if label == 8:  # four dots
        out = np.zeros_like(disk)
        for k in range(4):
            a = np.pi / 2 * k
            out |= (u - 0.6 * r * np.cos(a)) ** 2 + (v - 0.6 * r * np.sin(a)) ** 2 <= (0.3 * r) ** 2
        return out
    if label == 9:  # crescent
        return disk & ((u - 0.45 * r) ** 2 + v**2 > (0.85 * r) ** 2)
    raise AssertionError(label)


def _render_shapes(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Draw one shape per label with random colour, size, position, rotation and noise.

    Drawn at 2x resolution and averaged down, so edges are anti-aliased like photos.
    """
    n, ss = len(labels), 2 * size
    r = rng.uniform(0.2, 0.42, n) * ss
    cx = rng.uniform(r, ss - r)
    cy = rng.uniform(r, ss - r)
    theta = rng.uniform(0, 2 * np.pi, n)
    grid = np.arange(ss) + 0.5
    x = grid[None, None, :] - cx[:, None, None]
    y = grid[None, :, None] - cy[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u, v = x * cos + y * sin, -x * sin + y * cos
    mask = np.zeros((n, ss, ss), dtype=bool)
    for label in range(len(SHAPES_CLASSES)):
        idx = np.nonzero(labels == label)[0]
        if len(idx):
            mask[idx] = _shape_masks(label, u[idx], v[idx], r[idx, None, None])
    alpha = mask.reshape(n, size, 2, size, 2).mean(axis=(2, 4))[:, None]  # (n, 1, size, size)
    bg = rng.uniform(0, 255, (n, 3, 1, 1))
    fg = rng.uniform(0, 255, (n, 3, 1, 1))
    too_close = np.abs(fg - bg).sum(axis=1, keepdims=True) < 180
    fg = np.where(too_close, 255 - bg, fg)
    img = alpha * fg + (1 - alpha) * bg
    img += rng.normal(0, rng.uniform(2, 14, (n, 1, 1, 1)), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@lru_cache(maxsize=4)
def shapes_dataset(n_train: int = SHAPES_TRAIN, n_test: int = SHAPES_TEST, seed: int = 0, cache_dir: Path | None = None) -> Dataset:
    """Ten classes of 32x32 shapes, generated offline and identical for a given seed.

    The test split comes from a different random stream than the training split
    for every seed, so no test image is a copy of a training image. With `cache_dir`,
    the tensors are kept on disk (drawing 14,000 images takes seconds; reading them, milliseconds).
    """
    cache = cache_dir / f"shapes-v{SHAPES_VERSION}-{n_train}-{n_test}-{seed}.pt" if cache_dir else None
    blob = _read_cache(cache) if cache else None
    if blob is not None:
        splits = [Split(blob.get(f"{name}_images"), blob.get(f"{name}_labels")) for name in ("train", "test")]
        if all(_is_split(s.images, s.labels, 32) and len(s) == n for s, n in zip(splits, (n_train, n_test))):
            return Dataset("shapes", list(SHAPES_CLASSES), *splits)
    out = []
    for n, stream in ((n_train, 0), (n_test, 1)):
        rng = np.random.default_rng([seed, stream])
        labels = np.arange(n) % len(SHAPES_CLASSES)
        rng.shuffle(labels)
        chunks = [_render_shapes(labels[i : i + 2000], rng) for i in range(0, n, 2000)]
        images = np.concatenate(chunks) if chunks else np.zeros((0, 3, 32, 32), dtype=np.uint8)
        out.append(Split(torch.from_numpy(images), torch.from_numpy(labels).long()))
    if cache:
        _write_cache(
            cache,
            {"train_images": out[0].images, "train_labels": out[0].labels, "test_images": out[1].images, "test_labels": out[1].labels},
        )
    return Dataset("shapes", list(SHAPES_CLASSES), out[0], out[1])


# --------------------------------------------------------------------------- cifar10


def download_cifar10(data_dir: str | os.PathLike | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Download and unpack CIFAR-10 into data_dir (torchvision's layout), with progress and a bounded timeout."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, extract_archive

    root = Path(data_dir or DATA_DIR)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / CIFAR10.filename
    if not check_integrity(str(archive), CIFAR10.tgz_md5):
        partial = archive.with_suffix(".part")
        try:
            with urllib.request.urlopen(CIFAR10.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as f:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            partial.unlink(missing_ok=True)
            raise PlaygroundError(
                f"Could not download CIFAR-10 ({getattr(exc, 'reason', exc)}). If this machine is offline, "
                f"use the `shapes` dataset or `imagefolder:PATH`, or put {CIFAR10.filename} in {root}."
            ) from None
        os.replace(partial, archive)
        if not check_integrity(str(archive), CIFAR10.tgz_md5):
            archive.unlink(missing_ok=True)
            raise PlaygroundError("The CIFAR-10 download is corrupt (checksum mismatch); try again.")
    extract_archive(str(archive), str(root))
    return root


def cifar10_available(data_dir: str | os.PathLike | None = None) -> bool:
    return (Path(data_dir or DATA_DIR) / "cifar-10-batches-py" / "test_batch").exists()


def cifar10_dataset(data_dir: Path, download: bool = True) -> Dataset:
    from torchvision.datasets import CIFAR10

    if not cifar10_available(data_dir):
        if not download:
            raise PlaygroundError(f"CIFAR-10 is not in {data_dir}; download it first (or use `shapes`).")
        download_cifar10(data_dir)
    splits = []
    for train in (True, False):
        ds = CIFAR10(str(data_dir), train=train, download=False)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits.append(Split(images, torch.tensor(ds.targets, dtype=torch.long)))
    return Dataset("cifar10", list(CIFAR10(str(data_dir), train=False).classes), splits[0], splits[1])


# --------------------------------------------------------------------------- image folders


def _is_image_name(name: str) -> bool:
    dot = name.rfind(".")  # Path.suffix, without building a Path per file
    return 0 < dot < len(name) - 1 and name[dot:].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def _is_image(path: Path) -> bool:
    return _is_image_name(path.name)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))


def _resolve_folder(path: Path, cache_dir: Path) -> Path:
    """A folder to read from: the path itself, or a zip safely extracted into the cache."""
    if not path.exists():
        raise PlaygroundError(f"{path} does not exist; give a folder of class folders or a .zip of one.")
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise PlaygroundError(f"{path.name} is neither a folder nor a .zip file.")
        from core.data.archive import safe_extract_zip

        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        dest = cache_dir / "extracted" / key
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            safe_extract_zip(path, dest)
        path = dest
    # A zip of "myset/train/..." has one wrapping folder; look inside it.
    while True:
        children = [c for c in path.iterdir() if not c.name.startswith((".", "__"))]
        if len(children) == 1 and children[0].is_dir() and not any(_is_image(c) for c in children):
            path = children[0]
            continue
        return path


def _folder_layout(root: Path) -> tuple[dict[str, Path], list[str]]:
    """Splits -> folder, and the class names; `train`+`test`/`val` or only class folders."""
    names = {d.name.lower(): d for d in _class_dirs(root)}
    if "train" in names:
        test = names.get("test") or names.get("val") or names.get("valid") or names.get("validation")
        splits = {"train": names["train"]} | ({"test": test} if test else {})
        classes = [d.name for d in _class_dirs(names["train"])]
    else:
        splits = {"all": root}
        classes = [d.name for d in _class_dirs(root)]
    if not classes:
        raise PlaygroundError(
            f"{root} has no class folders; arrange images as {root.name}/<class>/<image> (optionally inside train/ and test/ folders)."
        )
    return splits, classes


def _scan_class(class_dir: str) -> list[tuple[str, os.stat_result]]:
    """Image files under one class folder as (path relative to it, stat), in the order sorted Paths of rglob had.

    os.scandir tells files from folders without a stat call; each file is stat'ed once, for the cache key.
    Like rglob, it does not descend into symlinked folders and skips folders it may not read.
    """
    found, stack, nested = [], [""], False
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(class_dir, rel)) as entries:
                for entry in entries:
                    name = os.path.join(rel, entry.name) if rel else entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(name)
                            nested = True
                        elif entry.is_file() and _is_image_name(entry.name):
                            found.append((name, entry.stat()))
                    except OSError:
                        continue  # vanished or a broken link
        except OSError:
            continue
    if nested or os.name == "nt":
        # Path order compares component by component ("a/b" before "a-c"); normcase matches Windows' case folding.
        found.sort(key=lambda item: os.path.normcase(item[0]).split(os.sep))
    else:
        found.sort(key=lambda item: item[0])
    return found


def _scan_split(split_dir: Path, classes: list[str], size: int) -> tuple[list[str], list[int], str]:
    """Every image of a split with its label, and a cache key that changes when any file is added, removed,
    renamed, moved to another class or rewritten (path, size and mtime of each)."""
    files, labels = [], []
    key = [f"{DECODER_VERSION}|{split_dir.resolve()}|{size}|{classes}"]
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            continue
        for rel, st in _scan_class(class_dir):
            files.append(os.path.join(class_dir, rel))
            labels.append(label)
            key.append(f"{label}|{rel}|{st.st_size}|{st.st_mtime_ns}")
    return files, labels, hashlib.sha1("\n".join(key).encode()).hexdigest()[:20]


def decode_workers(n_files: int) -> int:
    """Processes that decode a cold dataset: one per core this process may use (up to 32), none for small
    sets, on one core, or where this process may not start children (a daemon)."""
    if n_files < PARALLEL_DECODE_MIN_FILES or multiprocessing.current_process().daemon:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 32) if cores > 1 else 0


class _DecodeChunks(torch.utils.data.Dataset):
    """Consecutive chunks of files, decoded by DataLoader worker processes.

    Decoding small images is bound by Python work per file, which threads would serialize on the GIL;
    worker processes scale with the cores, and DataLoader hands their tensors back in shared memory.
    """

    def __init__(self, files: list[str], size: int, chunk: int, use_torchvision: bool):
        self.files, self.size, self.chunk, self.use_torchvision = files, size, chunk, use_torchvision

    def __len__(self) -> int:
        return math.ceil(len(self.files) / self.chunk)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        start = k * self.chunk
        return (start, *load_files_for_model(self.files[start : start + self.chunk], self.size, use_torchvision=self.use_torchvision))


def _decode_all(
    files: list[str], size: int, workers: int | None = None, use_torchvision: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode files to (N, 3, size, size) uint8 and a mask of those that could be read."""
    workers = decode_workers(len(files)) if workers is None else workers
    if use_torchvision is None:
        use_torchvision = "torchvision" in sys.modules or len(files) >= TORCHVISION_DECODE_MIN_FILES * max(1, workers)
    if use_torchvision:
        fast_jpeg_decoder()  # import and check the decoder once here, not in every worker after the fork
    chunk = min(1024, max(64, len(files) // (8 * max(1, workers))))  # ~8 chunks a worker keeps them all busy
    images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    ok = torch.zeros(len(files), dtype=torch.bool)
    loader = torch.utils.data.DataLoader(_DecodeChunks(files, size, chunk, use_torchvision), batch_size=None, num_workers=workers)
    for start, part, part_ok in loader:
        images[start : start + len(part)] = part
        ok[start : start + len(part)] = part_ok
    return images, ok


def _read_cache(path: Path) -> dict[str, Any] | None:
    """A cache file's dict of tensors, or None (and the file removed) when it is missing, corrupt or something else."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        if isinstance(blob, dict):
            return blob
    except Exception:  # a corrupt cache is rebuilt, never trusted
        pass
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def _is_split(images: Any, labels: Any, size: int) -> bool:
    return (
        isinstance(images, torch.Tensor)
        and isinstance(labels, torch.Tensor)
        and images.dtype == torch.uint8
        and labels.dtype == torch.long
        and images.dim() == 4
        and tuple(images.shape[1:]) == (3, size, size)
        and len(images) == len(labels)
    )


def _write_cache(path: Path, blob: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:
        pass  # a read-only data folder only costs a re-decode next time


def _kept_files(files: list[str], kept: torch.Tensor | None) -> list[str] | None:
    """The files whose images were decoded (unreadable ones are left out of the split), as strings."""
    if kept is None or len(kept) != len(files):
        return None
    return [str(f) for f, k in zip(files, kept.tolist()) if k]


def _load_split(split_dir: Path, classes: list[str], size: int, cache_dir: Path) -> tuple[Split, int]:
    files, labels, key = _scan_split(split_dir, classes, size)
    if not files:
        raise PlaygroundError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in the class folders of {split_dir}.")
    needed = len(files) * 3 * size * size
    if needed > MAX_DATASET_BYTES:
        raise PlaygroundError(
            f"{len(files)} images at {size}x{size} need {needed / 1024**3:.1f} GB of memory; choose a smaller image size."
        )
    cache = cache_dir / f"{key}.pt"
    blob = _read_cache(cache)
    if blob is not None:
        images, kept_labels, skipped, kept = blob.get("images"), blob.get("labels"), blob.get("skipped"), blob.get("kept")
        if (
            _is_split(images, kept_labels, size)
            and isinstance(skipped, int)
            and skipped + len(kept_labels) == len(files)
            and isinstance(kept, torch.Tensor)
            and len(kept) == len(files)
        ):
            return Split(images, kept_labels, _kept_files(files, kept)), skipped
        cache.unlink(missing_ok=True)  # readable but not this split's: rebuilt like a corrupt one
    images, ok = _decode_all(files, size)
    labels_t = torch.tensor(labels, dtype=torch.long)
    if bool(ok.all()):
        split = Split(images, labels_t, list(files))
    else:
        split = Split(images[ok].contiguous(), labels_t[ok], _kept_files(files, ok))
    skipped = len(files) - len(split)
    if len(split) == 0:
        raise PlaygroundError(f"None of the {len(files)} files in {split_dir} could be read as images.")
    # `kept` says which files made it into the split, so mistakes can name their files after a cache hit.
    _write_cache(cache, {"images": split.images, "labels": split.labels, "skipped": skipped, "kept": ok})
    return split, skipped


def test_count(n: int, fraction: float = TEST_FRACTION, minimum: int = MIN_TEST_PER_CLASS) -> int:
    """How many of a class's `n` images a folder without a test split holds out for testing: `fraction` of them,
    at least `minimum` (so every class is tested on a few images) and at most half (so every class still trains)."""
    if n < 2:
        return 0
    return max(round(n * fraction), min(minimum, n // 2))


def imagefolder_counts(
    path: str | os.PathLike, *, cache_dir: Path | None = None, test_fraction: float = TEST_FRACTION
) -> dict[str, object]:
    """Images per class in each split, from the file names alone (nothing decoded): {"classes", "train", "test",
    "has_test_split"}; without a test folder, the counts the seeded split will give."""
    root = _resolve_folder(Path(path).expanduser(), cache_dir or DATA_DIR / "cache")
    splits, classes = _folder_layout(root)

    def per_class(split_dir: Path) -> list[int]:
        return [len(_scan_class(os.path.join(split_dir, name))) if os.path.isdir(os.path.join(split_dir, name)) else 0 for name in classes]

    if "all" in splits or "test" not in splits:
        total = per_class(splits.get("all") or splits["train"])
        test = [test_count(n, test_fraction) for n in total]
        return {"classes": classes, "train": [n - t for n, t in zip(total, test)], "test": test, "has_test_split": False}
    return {"classes": classes, "train": per_class(splits["train"]), "test": per_class(splits["test"]), "has_test_split": True}


def imagefolder_dataset(
    path: Path, *, image_size: int = 32, seed: int = 0, test_fraction: float = TEST_FRACTION, cache_dir: Path | None = None
) -> Dataset:
    cache_dir = cache_dir or DATA_DIR / "cache"
    root = _resolve_folder(path, cache_dir)
    splits, classes = _folder_layout(root)
    if "all" not in splits:
        train, skipped = _load_split(splits["train"], classes, image_size, cache_dir)
        if "test" in splits:
            test, skipped_test = _load_split(splits["test"], classes, image_size, cache_dir)
            return Dataset(str(DataSpec.folder_of(path)), classes, train, test, skipped + skipped_test, has_test_split=True)
        everything = train
    else:
        everything, skipped = _load_split(splits["all"], classes, image_size, cache_dir)
    # No test folder: hold out a seeded, stratified fraction of each class (test_count: with a minimum per class).
    gen = torch.Generator().manual_seed(seed)
    test_idx = []
    for label in range(len(classes)):
        idx = torch.nonzero(everything.labels == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        test_idx.append(idx[: test_count(len(idx), test_fraction)])
    test_index = torch.cat(test_idx)
    is_test = torch.zeros(len(everything), dtype=torch.bool)
    is_test[test_index] = True
    return Dataset(
        str(DataSpec.folder_of(path)), classes, everything.subset(~is_test), everything.subset(is_test), skipped, has_test_split=False
    )


def load_eval_split(
    spec: str | DataSpec, *, image_size: int = STORED_SIDE, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> tuple[Split, list[str]]:
    """What `core.evaluate` scores: the test/val split when there is one, else every image.

    A folder's test split is read (from the same cache training wrote) without its training split.
    """
    spec = DataSpec.parse(spec)
    if spec.is_folder and spec.path:
        cache_dir = Path(data_dir or DATA_DIR) / "cache"
        splits, classes = _folder_layout(_resolve_folder(spec.folder, cache_dir))
        if "test" in splits:
            return _load_split(splits["test"], classes, image_size, cache_dir)[0], classes
    ds = load_dataset(spec, image_size=image_size, seed=seed, data_dir=data_dir)
    if ds.has_test_split:
        return ds.test, ds.classes
    files = ds.train.files + ds.test.files if ds.train.files is not None and ds.test.files is not None else None
    return Split(torch.cat([ds.train.images, ds.test.images]), torch.cat([ds.train.labels, ds.test.labels]), files), ds.classes
