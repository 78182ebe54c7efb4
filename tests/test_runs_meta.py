"""A run's own name and note (meta.json): set, cleared, listed, and kept apart from config.json."""

from __future__ import annotations

import json

import pytest

from core.data.spec import DataSpec
from core.errors import PlaygroundError
from core.serving import runs

UPLOAD = "imagefolder:/data/uploads/3fa9c2e1d0b4-cats-dogs.zip"


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "20261122-134500-cifar10_quick-3fa9c2e1d0b4-cats-dogs-ab12"
    folder.mkdir()
    runs.write_config(folder, {"model": "cifar10_quick", "data": UPLOAD, "epochs": 3})
    return folder


def test_an_unnamed_run_is_called_by_its_model_and_data_not_its_hash(run_dir):
    info = runs.run_info(run_dir)
    assert info.name == "cifar10_quick on cats-dogs"
    assert "3fa9c2e1d0b4" not in info.name and info.note == ""
    assert DataSpec.parse("shapes:600").name() == "Shapes" and DataSpec.parse("cifar10").name() == "CIFAR-10"
    assert DataSpec.parse("imagefolder:/home/me/flowers/").name() == "flowers"


def test_name_and_note_are_saved_listed_and_cleared(run_dir):
    config_before = (run_dir / runs.CONFIG_FILE).read_bytes()
    runs.write_meta(run_dir, name="  cats vs dogs  ", note="pretrained resnet18, 5 epochs")
    (info,) = runs.list_runs(run_dir.parent)
    assert (info.name, info.note) == ("cats vs dogs", "pretrained resnet18, 5 epochs")
    assert (run_dir / runs.CONFIG_FILE).read_bytes() == config_before  # the record of how it was made is untouched
    runs.write_meta(run_dir, note="only the note changes")
    assert runs.run_info(run_dir).name == "cats vs dogs"
    runs.write_meta(run_dir, name="")  # empty: back to the default name
    assert runs.run_info(run_dir).name == "cifar10_quick on cats-dogs"
    assert json.loads((run_dir / runs.META_FILE).read_text()) == {"note": "only the note changes"}


@pytest.mark.parametrize("name", ["x" * (runs.NAME_MAX + 1), "two\nlines"])
def test_a_bad_name_is_refused_and_the_old_one_kept(run_dir, name):
    runs.write_meta(run_dir, name="kept")
    with pytest.raises(PlaygroundError, match="short name"):
        runs.write_meta(run_dir, name=name)
    assert runs.run_info(run_dir).name == "kept"


def test_a_corrupt_meta_file_loses_only_the_name(run_dir):
    (run_dir / runs.META_FILE).write_text("{not json")
    assert runs.run_info(run_dir).name == "cifar10_quick on cats-dogs"
    with pytest.raises(PlaygroundError, match="not a run folder"):
        runs.write_meta(run_dir.parent / "nope", name="x")
