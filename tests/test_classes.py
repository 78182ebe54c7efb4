"""Your own classes: class folders, checked pictures, the stratified split with its minimum, the zip round trip,
the small-data recipe and warnings, and the augmentation preview."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import classes
from core.data import datasets as data
from core.data.spec import DataSpec
from core.errors import PlaygroundError
from core.training.config import TrainConfig


def picture(colour=(200, 40, 40), size=(48, 36), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def shades(n: int, base: int = 0) -> list[tuple[str, bytes]]:
    return [(f"pic {i}.png", picture((base + 9 * i, 100, 255 - 9 * i))) for i in range(n)]


@pytest.fixture
def pets(tmp_path):
    path = classes.create_set(tmp_path / "sets", "pets")
    classes.add_class(path, "cat")
    classes.add_class(path, "dog")
    return path


def test_sets_live_in_the_data_folder_or_the_workspace(tmp_path):
    assert classes.sets_root(None, tmp_path) == tmp_path / "classes"
    assert classes.sets_root("k7qm-3xpa", tmp_path) == tmp_path / "workspaces" / "k7qm-3xpa" / "classes"
    root = classes.sets_root(None, tmp_path)
    assert classes.list_sets(root) == []
    classes.create_set(root, "first")
    classes.create_set(root, "second set")
    assert set(classes.list_sets(root)) == {"first", "second set"}
    with pytest.raises(PlaygroundError, match="already a set called 'first'"):
        classes.create_set(root, "first")
    for bad in ("../escape", "a/b", "", ".hidden", "x" * 41):
        with pytest.raises(PlaygroundError, match="Name the image set"):
            classes.create_set(root, bad)
    assert sorted(p.name for p in root.iterdir()) == ["first", "second set"]  # nothing written outside
    classes.delete_set(root, "first")
    assert classes.list_sets(root) == ["second set"]


def test_classes_are_added_renamed_and_removed(pets):
    assert classes.class_names(pets) == ["cat", "dog"]
    for bad, message in [
        ("Cat", "already a class"),
        ("train", "means a data split"),
        ("Test", "means a data split"),
        ("a/b", "Name the class"),
    ]:
        with pytest.raises(PlaygroundError, match=message):
            classes.add_class(pets, bad)
    classes.add_images(pets, "dog", shades(2))
    classes.rename_class(pets, "dog", "puppy")
    assert classes.class_names(pets) == ["cat", "puppy"] and classes.counts(pets) == {"cat": 0, "puppy": 2}
    with pytest.raises(PlaygroundError, match="means a data split"):
        classes.rename_class(pets, "puppy", "val")
    classes.remove_class(pets, "puppy")
    assert classes.class_names(pets) == ["cat"]
    with pytest.raises(PlaygroundError, match="no class called 'puppy'"):
        classes.add_images(pets, "puppy", shades(1))


def test_pictures_are_checked_stored_safely_and_kept_once(pets):
    big = picture((10, 200, 10), size=(1600, 1200), fmt="JPEG")
    added = classes.add_images(
        pets,
        "cat",
        [
            ("../../evil name!.png", picture()),
            ("big.jpg", big),
            ("copy.png", picture()),
            ("notes.jpg", b"these are my notes"),
            ("empty.png", b""),
        ],
    )
    assert len(added.added) == 2 and added.duplicates == ["copy.png"] and len(added.refused) == 2
    assert "notes.jpg" in added.refused[0] and "empty.png" in added.refused[1]
    assert added.summary() == "Added 2 pictures, 1 already there, 2 refused."
    stored = classes.images(pets, "cat")
    assert [p.parent for p in stored] == [pets / "cat"] * 2 and all(p.suffix == ".jpg" for p in stored)
    assert stored[0].name.startswith("evil-name-")  # no path or odd characters from the upload's name
    with Image.open(stored[1]) as img:
        assert max(img.size) == classes.MAX_SIDE and img.size == (640, 480)  # shrunk, aspect kept
    classes.remove_image(pets, "cat", stored[0].name)
    assert classes.counts(pets)["cat"] == 1
    for bad in ("../dog/x.jpg", stored[0].name):  # outside the class, or already gone
        with pytest.raises(PlaygroundError, match="has no picture"):
            classes.remove_image(pets, "cat", bad)


def test_a_zip_of_pictures_goes_into_one_class(pets):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i, (name, payload) in enumerate(shades(3)):
            zf.writestr(f"holiday/day{i}/{name}", payload)
        zf.writestr("readme.txt", "not a picture")
    added = classes.add_images(pets, "dog", [("holiday.zip", buffer.getvalue())])
    assert len(added.added) == 3 and not added.refused
    bad = classes.add_images(pets, "dog", [("broken.zip", b"PK\x03\x04 not really")])
    assert bad.refused and "broken.zip" in bad.refused[0]


@pytest.mark.parametrize("n, expected", [(0, 0), (1, 0), (2, 1), (5, 2), (6, 3), (20, 3), (36, 4), (300, 30)])
def test_test_count_holds_out_a_tenth_but_at_least_three_and_at_most_half(n, expected):
    assert data.test_count(n) == expected


def test_the_split_is_stratified_seeded_and_matches_the_preview(pets, tmp_path):
    classes.add_images(pets, "cat", shades(20))
    classes.add_images(pets, "dog", shades(7, base=1))
    preview = classes.split(pets)
    assert preview == [{"class": "cat", "images": 20, "train": 17, "test": 3}, {"class": "dog", "images": 7, "train": 4, "test": 3}]
    ds = data.imagefolder_dataset(pets, image_size=16, seed=0, cache_dir=tmp_path / "cache")
    assert ds.classes == ["cat", "dog"] and not ds.has_test_split
    assert torch.bincount(ds.test.labels).tolist() == [3, 3] and torch.bincount(ds.train.labels).tolist() == [17, 4]
    again = data.imagefolder_dataset(pets, image_size=16, seed=0, cache_dir=tmp_path / "cache")
    assert torch.equal(ds.test.images, again.test.images)  # the same seed, the same test pictures
    other = data.imagefolder_dataset(pets, image_size=16, seed=1, cache_dir=tmp_path / "cache")
    assert not torch.equal(ds.test.images, other.test.images)
    counts = data.imagefolder_counts(pets, cache_dir=tmp_path / "cache")
    assert counts == {"classes": ["cat", "dog"], "train": [17, 4], "test": [3, 3], "has_test_split": False}


def test_export_zip_round_trips_as_a_dataset(pets, tmp_path):
    classes.add_images(pets, "cat", shades(5))
    classes.add_images(pets, "dog", shades(4, base=2))
    payload = classes.export_zip(pets)
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        names = zf.namelist()
    assert len(names) == 9 and all(n.startswith(("pets/cat/", "pets/dog/")) for n in names)
    archive = tmp_path / "pets.zip"
    archive.write_bytes(payload)
    from_zip = data.imagefolder_dataset(archive, image_size=16, cache_dir=tmp_path / "cache")
    from_folder = data.imagefolder_dataset(pets, image_size=16, cache_dir=tmp_path / "cache2")
    assert from_zip.classes == from_folder.classes == ["cat", "dog"]
    assert torch.equal(from_zip.train.images, from_folder.train.images) and torch.equal(from_zip.test.labels, from_folder.test.labels)
    # ... and comes back as a new set, pictures and all
    copy, added = classes.import_zip(tmp_path / "sets", "pets again", payload, "pets.zip")
    assert classes.counts(copy) == {"cat": 5, "dog": 4} and len(added.added) == 9
    with pytest.raises(PlaygroundError):
        classes.import_zip(tmp_path / "sets", "broken", b"not a zip", "broken.zip")
    assert "broken" not in classes.list_sets(tmp_path / "sets")  # nothing half-made is left


def test_not_ready_until_two_classes_have_two_pictures(pets):
    assert "at least 2 pictures to every class (cat has 0, dog has 0)" in classes.not_ready(pets)
    classes.add_images(pets, "cat", shades(2))
    classes.add_images(pets, "dog", shades(1))
    assert "dog has 1" in classes.not_ready(pets)
    classes.add_images(pets, "dog", shades(2, base=3))
    assert classes.not_ready(pets) is None
    classes.remove_class(pets, "dog")
    assert "at least two classes" in classes.not_ready(pets)


def test_the_small_data_recipe_gives_several_steps_per_epoch():
    """The issue's run: 36 training images, batch 128, one step per epoch, a 4-image test split."""
    recipe = classes.small_data_recipe([18, 18])
    assert recipe["model"] == "mobilenet_v3_small" and recipe["freeze_backbone"] and recipe["weights"] == "DEFAULT"
    assert recipe["batch_size"] == 8 and recipe["steps_per_epoch"] == 4 and recipe["epochs"] == 25
    assert "18 training pictures" in recipe["why"] and "\n" not in recipe["why"]
    assert classes.small_data_recipe([250, 2000])["batch_size"] == 64
    assert classes.small_data_recipe([300, 5000]) is None and classes.small_data_recipe([]) is None
    for n_train in range(1, 5000, 37):
        batch = classes.suggested_batch_size(n_train)
        assert classes.MIN_BATCH <= batch <= 64 and (n_train < 16 or n_train // batch >= 4)
    assert classes.small_data_recipe([6, 7])["steps_per_epoch"] == 3  # the browser test's set: 13 pictures, batch 4


def test_a_tiny_test_split_gets_a_warning_that_says_what_one_image_is_worth():
    assert classes.test_split_warning(4).startswith("4 test images: each one is 25 points of accuracy")
    assert "No test images" in classes.test_split_warning(0)
    assert classes.test_split_warning(classes.MEANINGFUL_TEST_IMAGES) is None
    # a folder with its own test/ split: the advice is to add test pictures, not about a share held out
    own = classes.test_split_warning(5, own_split=True)
    assert own.endswith("Add pictures to the test folder of every class.") and "10%" not in own
    # a run reads what its config.json recorded; a run recorded before that field existed, the rule on its n_test
    assert classes.run_test_split_warning({"dataset": {"n_test": 4, "test_split_warning": None}}) is None
    assert classes.run_test_split_warning({"dataset": {"n_test": 4}}) == classes.test_split_warning(4)
    assert classes.run_test_split_warning({}) is None


def test_describe_names_a_set_by_its_name(tmp_path):
    path = classes.sets_root("ab12-cd34", tmp_path) / "my desk"
    assert DataSpec.parse(classes.spec(path)).name(detail=True) == "my desk (your classes)"
    assert DataSpec.parse("imagefolder:/data/pets.zip").name(detail=True) == "image folder pets"


def test_the_augmentation_preview_is_the_loaders_own(tmp_path, monkeypatch):
    from core.training.preview import augmented_samples

    monkeypatch.setenv("PLAYGROUND_DATA_DIR", str(tmp_path / "data"))
    config = TrainConfig.for_model("cifar10_quick", data="shapes:600", seed=3)
    shown = augmented_samples(config, n=6)
    assert len(shown["stored"]) == len(shown["seen"]) == len(shown["labels"]) == 6
    assert shown["stored"][0].shape == shown["seen"][0].shape == (32, 32, 3) and shown["seen"][0].dtype == np.uint8
    # Shifted by up to 4 pixels and maybe mirrored: each seen image is its stored image moved, with a black border.
    for stored, seen in zip(shown["stored"], shown["seen"]):
        matches = []
        for flip in (False, True):
            source = stored[:, ::-1] if flip else stored
            padded = np.pad(source, ((4, 4), (4, 4), (0, 0)))
            matches += [
                np.abs(padded[dy : dy + 32, dx : dx + 32].astype(int) - seen.astype(int)).max() for dy in range(9) for dx in range(9)
            ]
        assert min(matches) <= 1  # rounding of the normalize / de-normalize round trip
    plain = augmented_samples(TrainConfig.for_model("cifar10_quick", data="shapes:600", seed=3, augment=False), n=6)
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(plain["stored"], plain["seen"]))
    assert [a.tobytes() for a in plain["stored"]] == [a.tobytes() for a in shown["stored"]]  # same images, same order
