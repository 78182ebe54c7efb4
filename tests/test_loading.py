"""Loading image folders fast without changing a pixel: the listing, the decoders, the caches."""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import datasets as data
from core.data import images
from core.data.datasets import imagefolder_dataset, load_dataset, load_eval_split, shapes_dataset
from core.data.images import load_files_for_model, load_for_model
from core.errors import PlaygroundError


def reference(path: Path, size: int) -> torch.Tensor | None:
    """What loading one file meant before: load_for_model, and None for a file it refuses."""
    try:
        return load_for_model(path, size)
    except PlaygroundError:
        return None


def assert_same_as_reference(paths: list[Path], size: int, loaded: torch.Tensor, ok: torch.Tensor) -> None:
    for path, pixels, good in zip(paths, loaded, ok.tolist()):
        expected = reference(path, size)
        assert good == (expected is not None), path.name
        if good:
            assert torch.equal(pixels, expected), path.name


def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return (rng.integers(0, 100, (h, w, 3)) + np.linspace(0, 150, w)[None, :, None]).astype(np.uint8)


def odd_files(folder: Path) -> list[Path]:
    """Files a dataset folder may hold, each of which takes its own branch of open_image/prepare_image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(_noise(rng, 32, 32))
    wide = Image.fromarray(_noise(rng, 24, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="8"/></rdf:RDF></x:xmpmeta>'
    files = {
        "plain.jpg": lambda p: rgb.save(p, quality=75),
        "q95_444.jpg": lambda p: rgb.save(p, quality=95, subsampling=0),
        "progressive.jpg": lambda p: rgb.save(p, progressive=True),
        "icc.jpg": lambda p: rgb.save(p, icc_profile=b"\0" * 128),
        "restart.jpg": lambda p: rgb.save(p, restart_marker_blocks=1),
        "grey.jpg": lambda p: rgb.convert("L").save(p),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p),
        "exif_rotated.jpg": lambda p: Image.fromarray(_noise(rng, 32, 32)).save(p, exif=exif.tobytes()),
        "exif_rotated_wide.jpg": lambda p: wide.save(p, exif=exif.tobytes()),
        "xmp_rotated.jpg": lambda p: rgb.save(p, xmp=xmp),
        "wide.jpg": lambda p: wide.save(p),
        "big.jpg": lambda p: Image.fromarray(_noise(rng, 300, 200)).save(p),
        "small.jpg": lambda p: Image.fromarray(_noise(rng, 8, 8)).save(p),
        "alpha.png": lambda p: Image.fromarray(np.dstack([_noise(rng, 32, 32), rng.integers(0, 256, (32, 32), dtype=np.uint8)])).save(p),
        "palette.gif": lambda p: rgb.convert("P").save(p),
        "deep.png": lambda p: Image.fromarray((rng.integers(0, 65535, (32, 32))).astype(np.uint16)).save(p),
        "plain.png": lambda p: rgb.save(p),
        "UPPER.JPG": lambda p: rgb.save(p, format="JPEG"),
        "mislabelled.png": lambda p: rgb.save(p, format="JPEG"),  # a JPEG named .png
    }
    paths = []
    for name, write in files.items():
        write(folder / name)
        paths.append(folder / name)
    plain = (folder / "plain.jpg").read_bytes()
    damaged = {
        "truncated.jpg": plain[: len(plain) // 2],
        "no_end_marker.jpg": plain[:-2],
        "header_only.jpg": plain[:200],
        "flipped_bits.jpg": plain[:400] + bytes(b ^ 0x5A for b in plain[400:420]) + plain[420:],
        "zeros.jpg": plain[: len(plain) // 2] + bytes(len(plain) - len(plain) // 2),
        "empty.jpg": b"",
        "page.jpg": b"<!doctype html><html><body>not an image</body></html>",
        "huge_header.jpg": plain.replace(b"\xff\xc0\x00\x11\x08\x00\x20\x00\x20", b"\xff\xc0\x00\x11\x08\x4e\x20\x4e\x20"),
    }
    for name, content in damaged.items():
        (folder / name).write_bytes(content)
        paths.append(folder / name)
    return paths


def test_odd_files_load_exactly_as_before(tmp_path):
    paths = odd_files(tmp_path / "odd")
    for size in (32, 16):
        loaded, ok = load_files_for_model(paths, size)
        assert_same_as_reference(paths, size, loaded, ok)
    assert not ok[[p.name for p in paths].index("truncated.jpg")]
    assert ok[[p.name for p in paths].index("plain.jpg")]


def test_damaged_jpegs_are_kept_or_refused_exactly_as_before(tmp_path):
    rng = np.random.default_rng(2)
    buffer = io.BytesIO()
    Image.fromarray(_noise(rng, 32, 32)).save(buffer, "JPEG", quality=90)
    good = buffer.getvalue()
    paths = []
    for i in range(150):
        damaged = bytearray(good)
        if i % 3 == 0:
            damaged = damaged[: int(rng.integers(300, len(good)))]
        else:  # flipped bits in the entropy-coded data or the tables
            for at in rng.integers(20, len(good) - 2, 1 + i % 4):
                damaged[at] ^= 1 << int(rng.integers(0, 8))
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(bytes(damaged))
    loaded, ok = load_files_for_model(paths, 32)
    assert_same_as_reference(paths, 32, loaded, ok)
    assert 0 < int(ok.sum()) < len(paths)  # some damage libjpeg shrugs off, some it refuses: both as before


def test_without_torchvision_decoder_pil_gives_the_same_pixels(tmp_path, monkeypatch):
    paths = odd_files(tmp_path / "odd")
    fast = load_files_for_model(paths, 32)
    pil = load_files_for_model(paths, 32, use_torchvision=False)
    monkeypatch.setattr(images, "fast_jpeg_decoder", lambda: None)  # a torchvision without its decoders
    without = load_files_for_model(paths, 32)
    for other in (pil, without):
        assert torch.equal(fast[1], other[1]) and torch.equal(fast[0][fast[1]], other[0][other[1]])


def test_real_jpegs_decode_to_the_same_pixels_in_worker_processes(cifar_slice):
    files, labels, _ = data._scan_split(cifar_slice / "train", sorted(os.listdir(cifar_slice / "train")), 32)
    assert len(files) == 2000 and labels[:1] == [0] and labels[-1:] == [9]
    # The fast path is what makes cold loads fast: CIFAR's files must take it.
    assert images.fast_jpeg_decoder() is not None
    assert images._plain_jpeg_size(Path(files[0]).read_bytes()) == (32, 32)
    loaded, ok = data._decode_all(files, 32, workers=2, use_torchvision=True)
    assert bool(ok.all())
    assert_same_as_reference([Path(f) for f in files], 32, loaded, ok)
    in_process, _ = data._decode_all(files, 32, workers=0, use_torchvision=True)
    with_pil, _ = data._decode_all(files, 32, workers=2, use_torchvision=False)
    assert torch.equal(in_process, loaded) and torch.equal(with_pil, loaded)


def _old_listing(split_dir: Path, classes: list[str]) -> list[Path]:
    """The loader's listing before it used os.scandir (rglob, sorted Paths)."""
    files = []
    for name in classes:
        if (split_dir / name).is_dir():
            files += sorted(p for p in (split_dir / name).rglob("*") if p.is_file() and data._is_image(p))
    return files


def test_listing_matches_rglob_order_and_rules(tmp_path):
    root = tmp_path / "set"
    for rel in [
        "cat/b.jpg",
        "cat/a-c.jpg",
        "cat/a/b.jpg",
        "cat/a/z/1.png",
        "cat/A.JPG",
        "cat/.hidden.jpg",
        "cat/notes.txt",
        "cat/.cache/x.jpg",
        "cat/dir.jpg/inner.jpg",
        "cat/10.jpg",
        "cat/9.jpg",
        "dog/x.webp",
        "dog/y.jpeg",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.jpg").write_bytes(b"x")
    (root / "cat" / "linked_dir").symlink_to(outside, target_is_directory=True)  # rglob does not descend into it
    (root / "dog" / "linked.jpg").symlink_to(outside / "o.jpg")  # but a linked file counts
    (root / "dog" / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    files, labels, _ = data._scan_split(root, ["cat", "dog", "absent"], 32)
    assert files == [str(p) for p in _old_listing(root, ["cat", "dog", "absent"])]
    assert labels == [0] * (len(files) - 3) + [1] * 3


def _write_set(root: Path, n: int = 3) -> None:
    rng = np.random.default_rng(1)
    for split, count in (("train", n), ("test", 1)):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(_noise(rng, 32, 32)).save(root / split / name / f"{i}.jpg")


def _count_decodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = data._decode_all

    def counting(files, size, workers=None):
        calls.append(len(files))
        return real(files, size, workers)

    monkeypatch.setattr(data, "_decode_all", counting)
    return calls


def test_cache_is_used_until_a_file_is_added_changed_or_removed(tmp_path, monkeypatch):
    root, cache = tmp_path / "set", tmp_path / "cache"
    _write_set(root)
    decodes = _count_decodes(monkeypatch)
    first = imagefolder_dataset(root, cache_dir=cache)
    assert decodes == [6, 2]
    again = imagefolder_dataset(root, cache_dir=cache)
    assert decodes == [6, 2] and torch.equal(again.train.images, first.train.images)

    shutil.copy(root / "train" / "cat" / "0.jpg", root / "train" / "cat" / "new.jpg")
    added = imagefolder_dataset(root, cache_dir=cache)
    assert decodes[2:] == [7] and len(added.train) == 7

    (root / "train" / "cat" / "new.jpg").rename(root / "train" / "dog" / "new.jpg")  # moved to another class
    moved = imagefolder_dataset(root, cache_dir=cache)
    assert decodes[3:] == [7] and moved.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]

    (root / "train" / "dog" / "new.jpg").unlink()
    removed = imagefolder_dataset(root, cache_dir=cache)
    assert decodes[4:] == [] and torch.equal(removed.train.images, first.train.images)  # the first cache again

    target = root / "train" / "dog" / "1.jpg"
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(target)
    os.utime(target, ns=(1, 1))  # a rewritten file whose mtime went backwards still counts
    changed = imagefolder_dataset(root, cache_dir=cache)
    assert decodes[4:] == [6]
    assert torch.equal(changed.train.images[4], load_for_model(target, 32))
    assert not torch.equal(changed.train.images[4], first.train.images[4])


def test_a_corrupt_or_foreign_cache_is_rebuilt(tmp_path, monkeypatch):
    root, cache = tmp_path / "set", tmp_path / "cache"
    _write_set(root)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    first = imagefolder_dataset(root, cache_dir=cache)
    assert first.skipped == 1 and len(first.train) == 6
    decodes = _count_decodes(monkeypatch)
    caches = sorted(cache.glob("*.pt"), key=lambda p: p.stat().st_size)
    train_cache = caches[-1]
    train_cache.write_bytes(train_cache.read_bytes()[:100])  # truncated
    again = imagefolder_dataset(root, cache_dir=cache)
    assert decodes == [7] and again.skipped == 1 and torch.equal(again.train.images, first.train.images)
    torch.save(
        {"images": torch.zeros(6, 3, 8, 8, dtype=torch.uint8), "labels": torch.zeros(6, dtype=torch.long), "skipped": 1}, train_cache
    )  # tensors, but not this split's
    assert torch.equal(imagefolder_dataset(root, cache_dir=cache).train.images, first.train.images) and decodes == [7, 7]


def test_evaluation_reads_the_test_split_from_trainings_cache(tmp_path, monkeypatch):
    root = tmp_path / "set"
    _write_set(root)
    spec = f"imagefolder:{root}"
    trained = load_dataset(spec, data_dir=tmp_path / "data")
    decodes = _count_decodes(monkeypatch)
    split, classes = load_eval_split(spec, data_dir=tmp_path / "data")
    assert decodes == [] and classes == ["cat", "dog"]
    assert torch.equal(split.images, trained.test.images) and torch.equal(split.labels, trained.test.labels)
    shutil.rmtree(tmp_path / "data")
    split, _ = load_eval_split(spec, data_dir=tmp_path / "data")  # cold: only the test images are decoded
    assert decodes == [2] and torch.equal(split.images, trained.test.images)


def test_the_size_guard_still_refuses_before_decoding(tmp_path, monkeypatch):
    root = tmp_path / "set"
    _write_set(root)
    monkeypatch.setattr(data, "MAX_DATASET_BYTES", 5 * 3 * 32 * 32)
    decodes = _count_decodes(monkeypatch)
    with pytest.raises(PlaygroundError, match="6 images at 32x32 need .* GB of memory; choose a smaller image size"):
        imagefolder_dataset(root, cache_dir=tmp_path / "cache")
    assert decodes == []


def test_shapes_cache_holds_exactly_the_generated_data(tmp_path, monkeypatch):
    shapes_dataset.cache_clear()
    fresh = shapes_dataset(300, 50, seed=4)
    cached = shapes_dataset(300, 50, seed=4, cache_dir=tmp_path)
    (path,) = tmp_path.glob("shapes-*.pt")
    assert path.name == f"shapes-v{data.SHAPES_VERSION}-300-50-4.pt"
    shapes_dataset.cache_clear()

    def no_drawing(*args, **kwargs):
        raise AssertionError("drawn again although cached")

    monkeypatch.setattr(data, "_render_shapes", no_drawing)
    loaded = shapes_dataset(300, 50, seed=4, cache_dir=tmp_path)
    for a, b in ((fresh, cached), (fresh, loaded)):
        assert a.classes == b.classes
        for split in ("train", "test"):
            assert torch.equal(getattr(a, split).images, getattr(b, split).images)
            assert torch.equal(getattr(a, split).labels, getattr(b, split).labels)
    with pytest.raises(AssertionError, match="drawn again"):
        shapes_dataset(300, 50, seed=5, cache_dir=tmp_path)  # another seed is another file
    monkeypatch.undo()
    path.write_bytes(b"garbage")
    shapes_dataset.cache_clear()
    rebuilt = shapes_dataset(300, 50, seed=4, cache_dir=tmp_path)
    assert torch.equal(rebuilt.train.images, fresh.train.images) and path.stat().st_size > 1000
    shapes_dataset.cache_clear()


def test_load_dataset_caches_shapes_in_the_data_folder(tmp_path):
    shapes_dataset.cache_clear()
    ds = load_dataset("shapes:200", data_dir=tmp_path, seed=3)
    assert (tmp_path / "cache" / f"shapes-v{data.SHAPES_VERSION}-200-2000-3.pt").exists()
    assert len(ds.train) == 200 and len(ds.test) == 2000
    shapes_dataset.cache_clear()


def test_torchvision_is_imported_for_decoding_only_where_it_pays(tmp_path, monkeypatch):
    files = [str(p) for p in odd_files(tmp_path / "odd")]
    seen = []
    real = images.load_files_for_model
    monkeypatch.setattr(
        data,
        "load_files_for_model",
        lambda paths, size, use_torchvision: seen.append(use_torchvision) or real(paths, size, use_torchvision=use_torchvision),
    )
    assert images.fast_jpeg_decoder() is not None  # imported and cached before torchvision is hidden below
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)  # only what _decode_all sees; nothing is unloaded
    data._decode_all(files, 32, workers=0)
    monkeypatch.setattr(data, "TORCHVISION_DECODE_MIN_FILES", len(files))
    data._decode_all(files, 32, workers=0)
    data._decode_all(files, 32, workers=0, use_torchvision=False)
    assert seen == [False, True, False]


def test_decode_workers_follow_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert data.decode_workers(50_000) == 6
    assert data.decode_workers(100) == 0  # starting processes costs more than decoding a few files
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert data.decode_workers(50_000) == 0


def test_plain_jpeg_header_check():
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buffer, "JPEG")
    plain = buffer.getvalue()
    assert images._plain_jpeg_size(plain) == (40, 30)
    exif = Image.Exif()
    exif[0x0112] = 3
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buffer, "JPEG", exif=exif.tobytes())
    assert images._plain_jpeg_size(buffer.getvalue()) is None
    for bad in (b"", b"\xff\xd8", plain[:20], b"\x89PNG\r\n\x1a\n" + plain, plain[:2] + b"\x00" + plain[3:]):
        assert images._plain_jpeg_size(bad) is None
