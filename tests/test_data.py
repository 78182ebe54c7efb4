"""Datasets as tensors: shapes, image folders (and zips), CIFAR-10 offline, batches on the device."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.batches import BatchLoader, random_crop, random_flip
from core.data.datasets import SHAPES_CLASSES, Split, imagefolder_dataset, load_dataset, load_eval_split, shapes_dataset
from core.errors import PlaygroundError


def test_shapes_is_deterministic_by_seed_and_balanced():
    a, b, c = shapes_dataset(500, 100, seed=1), shapes_dataset(500, 100, seed=1), shapes_dataset(500, 100, seed=2)
    assert a.train.images.shape == (500, 3, 32, 32) and a.train.images.dtype == torch.uint8
    assert torch.equal(a.train.images, b.train.images) and not torch.equal(a.train.images, c.train.images)
    assert a.classes == list(SHAPES_CLASSES) and len(a.classes) == 10
    assert torch.bincount(a.train.labels).tolist() == [50] * 10
    # Test images are not copies of training images.
    flat_train = {bytes(x.numpy()) for x in a.train.images}
    assert not any(bytes(x.numpy()) in flat_train for x in a.test.images)


def test_shapes_without_a_test_split():
    ds = shapes_dataset(20, 0, seed=0)
    assert len(ds.train) == 20 and len(ds.test) == 0


def test_random_crop_shifts_each_image_by_at_most_the_padding():
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.int64).view(4, 3, 8, 8).to(torch.uint8)
    gen = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, gen)
    assert out.shape == x.shape
    for img_in, img_out in zip(x, out):
        # Some shift (dy, dx) in [-2, 2] maps the input onto the output where both overlap.
        ok = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(img_in)
                ys, xs = slice(max(0, -dy), 8 - max(0, dy)), slice(max(0, -dx), 8 - max(0, dx))
                yd, xd = slice(max(0, dy), 8 - max(0, -dy)), slice(max(0, dx), 8 - max(0, -dx))
                shifted[:, ys, xs] = img_in[:, yd, xd]
                ok |= torch.equal(shifted, img_out)
        assert ok


def test_random_flip_mirrors_about_half():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 1, 16).repeat(1000, 1, 1, 1)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 15).float().mean()
    assert 0.4 < flipped < 0.6
    assert all(torch.equal(o, x[0]) or torch.equal(o, x[0].flip(-1)) for o in out[:20])


def test_batch_loader_shards_epochs_across_ranks():
    split = Split(torch.zeros(103, 3, 4, 4, dtype=torch.uint8), torch.arange(103))
    shards = [BatchLoader(split, 10, torch.device("cpu"), seed=3, rank=r, world_size=2) for r in range(2)]
    seen = [torch.cat([y for _, y in s.epoch(5)]) for s in shards]
    assert len(shards[0]) == len(shards[1]) == 5  # equal step counts, or DDP would hang
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    again = torch.cat([y for _, y in shards[0].epoch(5)])
    assert torch.equal(seen[0], again)  # the same epoch replays the same batches (exact resume)
    assert not torch.equal(seen[0], torch.cat([y for _, y in shards[0].epoch(6)]))
    resumed = torch.cat([y for _, y in shards[0].epoch(5, start_step=2)])
    assert torch.equal(resumed, seen[0][20:])
    # Evaluation shards (no shuffle, no drop) cover every image exactly once, even when uneven.
    evals = [BatchLoader(split, 10, torch.device("cpu"), shuffle=False, rank=r, world_size=2, drop_last=False) for r in range(2)]
    covered = torch.cat([y for e in evals for _, y in e.epoch(0)])
    assert sorted(covered.tolist()) == list(range(103))


def _write_images(folder, n_per_class=4, classes=("cat", "dog"), size=(20, 12)):
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            colour = (200, 30 * i, 0) if c == 0 else (0, 30 * i, 200)
            Image.new("RGB", size, colour).save(folder / name / f"{i}.png")


def test_imagefolder_with_train_and_test_and_unreadable_files(tmp_path):
    _write_images(tmp_path / "set" / "train")
    _write_images(tmp_path / "set" / "val", n_per_class=2)
    (tmp_path / "set" / "train" / "cat" / "broken.jpg").write_text("not an image")
    ds = imagefolder_dataset(tmp_path / "set", image_size=16, cache_dir=tmp_path / "cache")
    assert ds.classes == ["cat", "dog"] and ds.has_test_split
    assert len(ds.train) == 8 and len(ds.test) == 4 and ds.skipped == 1
    assert ds.train.images.shape[1:] == (3, 16, 16)
    # A second load comes from the decoded cache with identical tensors.
    again = imagefolder_dataset(tmp_path / "set", image_size=16, cache_dir=tmp_path / "cache")
    assert torch.equal(again.train.images, ds.train.images)


def test_imagefolder_of_class_folders_gets_a_seeded_stratified_split(tmp_path):
    _write_images(tmp_path / "flat", n_per_class=10)
    a = imagefolder_dataset(tmp_path / "flat", seed=0, cache_dir=tmp_path / "c")
    b = imagefolder_dataset(tmp_path / "flat", seed=0, cache_dir=tmp_path / "c")
    # 10% of each class, but at least MIN_TEST_PER_CLASS (3): one test image per class would say nothing
    assert not a.has_test_split and len(a.test) == 6 and len(a.train) == 14
    assert torch.bincount(a.test.labels).tolist() == [3, 3]
    assert torch.equal(a.test.images, b.test.images)
    split, classes = load_eval_split(f"imagefolder:{tmp_path / 'flat'}", data_dir=tmp_path)
    assert len(split) == 20  # evaluate scores every image when there is no test folder


def test_imagefolder_zip_with_a_wrapping_folder(tmp_path):
    _write_images(tmp_path / "src" / "pets" / "train")
    _write_images(tmp_path / "src" / "pets" / "test", n_per_class=1)
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (tmp_path / "src").rglob("*.png"):
            zf.write(path, path.relative_to(tmp_path / "src"))
    ds = load_dataset(f"imagefolder:{archive}", image_size=8, data_dir=tmp_path / "data")
    assert ds.classes == ["cat", "dog"] and len(ds.train) == 8 and len(ds.test) == 2


def test_imagefolder_errors_say_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for path, message in [("missing", "does not exist"), ("empty", "no class folders"), ("notes.txt", "neither a folder nor a .zip")]:
        with pytest.raises(PlaygroundError, match=message):
            load_dataset(f"imagefolder:{tmp_path / path}", data_dir=tmp_path / "data")


def test_cifar10_offline_fails_fast_with_a_suggestion(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append(timeout)
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(PlaygroundError, match=r"Could not download CIFAR-10.*use the `shapes` dataset or `imagefolder:PATH`"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert calls and calls[0] is not None and calls[0] <= 60  # a bounded timeout, never a hang
    assert not list(tmp_path.glob("*.part"))


def test_unknown_spec():
    with pytest.raises(PlaygroundError, match="cifar10, shapes, or imagefolder"):
        load_dataset("mnist")


def test_real_cifar10_dev_slice_loads(cifar_slice, tmp_path):
    ds = load_dataset(f"imagefolder:{cifar_slice}", data_dir=tmp_path)
    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and len(ds.classes) == 10
    assert len(ds.train) == 2000 and len(ds.test) == 400 and ds.skipped == 0
    mean, std = ds.channel_stats()
    assert all(0.4 < m < 0.55 for m in mean) and all(0.2 < s < 0.3 for s in std)
    assert np.isclose(ds.train.images.float().mean().item() / 255, np.mean(mean), atol=0.01)
