"""The model's mistakes and what it computes inside: per-image evaluation, feature maps, the first
conv's arithmetic, and the test set's embedding (core.evaluate, core.activations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.datasets import load_dataset, load_eval_split, shapes_dataset
from core.insight.activations import Activations, embedding, project, sample_indices
from core.insight.evaluate import evaluate_run, predict_split
from core.insight.predict import Predictor
from core.models.build import build
from core.models.layers import build_from_spec
from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import train

pytestmark = pytest.mark.timeout(300)


def predictor_for(model: torch.nn.Module, classes: list[str], size: int = 32) -> Predictor:
    """An untrained (randomly initialised) model behind the run's own preprocessing: it makes plenty of mistakes."""
    return Predictor._ready(model, classes, {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}, size, size, "cpu", False)


@pytest.fixture(scope="module")
def shapes_predictions():
    torch.manual_seed(0)
    ds = shapes_dataset(n_train=10, n_test=400, seed=3)
    predictor = predictor_for(build("cifar10_quick"), ds.classes)
    return predict_split(predictor, ds.test, ds.classes), predictor, ds


# --------------------------------------------------------------------------- per-image evaluation


def test_mistakes_are_the_misclassified_images_by_loss(shapes_predictions):
    result, predictor, ds = shapes_predictions
    logits = predictor.logits(ds.test.images)
    expected_loss = torch.nn.functional.cross_entropy(logits, ds.test.labels, reduction="none").numpy()
    np.testing.assert_allclose(result.losses, expected_loss, rtol=1e-5, atol=1e-6)
    assert (result.preds == logits.argmax(1).numpy()).all()

    every = result.mistakes()
    assert len(every) == int((result.preds != result.labels).sum()) > 0
    assert all(m["true"] != m["pred"] for m in every)
    losses = [m["loss"] for m in every]
    assert losses == sorted(losses, reverse=True)
    assert result.mistakes(5) == every[:5]
    top = every[0]
    i = top["index"]
    assert top["true"] == ds.classes[int(ds.test.labels[i])] and top["loss"] == pytest.approx(float(expected_loss.max()), rel=1e-5)
    assert top["prob"] == pytest.approx(float(logits[i].softmax(0).max()), abs=1e-6)
    assert "file" not in top  # generated images have no files


def test_most_confused_agrees_with_the_confusion_matrix(shapes_predictions):
    result, _, ds = shapes_predictions
    cm = result.confusion()
    assert cm.sum() == len(ds.test) and (cm.sum(axis=1) == np.bincount(ds.test.labels.numpy(), minlength=10)).all()
    pairs = result.most_confused()
    counts = [p["count"] for p in pairs]
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) == cm.sum() - np.trace(cm) == len(result.mistakes())
    index = {name: k for k, name in enumerate(result.classes)}
    for p in pairs:
        assert p["true"] != p["pred"] and cm[index[p["true"]], index[p["pred"]]] == p["count"]
    # A cell's images are exactly that cell's count, hardest first.
    t, q = index[pairs[0]["true"]], index[pairs[0]["pred"]]
    cell = result.cell(t, q)
    assert len(cell) == cm[t, q] and (result.labels[cell] == t).all() and (result.preds[cell] == q).all()
    assert list(result.losses[cell]) == sorted(result.losses[cell], reverse=True)
    summary = result.summary()
    assert summary["n"] == len(ds.test) and summary["confusion"] == cm.tolist()
    assert summary["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())


def write_shapes_folder(root, per_class_train: int, per_class_test: int | None) -> None:
    """Real PNG files in class folders (train/ and test/, or only class folders)."""
    ds = shapes_dataset(n_train=10 * per_class_train, n_test=10 * (per_class_test or 1), seed=9)
    for split, name in ((ds.train, "train"), (ds.test, "test")):
        if name == "test" and per_class_test is None:
            continue
        base = root / name if per_class_test is not None else root
        for i, (image, label) in enumerate(zip(split.images, split.labels.tolist())):
            folder = base / ds.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{name}-{i}.png")


def test_imagefolder_mistakes_name_their_files(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "MODELS_DIR", tmp_path / "models")
    write_shapes_folder(tmp_path / "set", per_class_train=6, per_class_test=3)
    spec = f"imagefolder:{tmp_path / 'set'}"
    run = tmp_path / "run"
    train(
        TrainConfig.for_model("cifar10_quick", data=spec, epochs=1, batch_size=20, precision="fp32", data_dir=str(tmp_path / "data")), run
    )
    out = evaluate_run(run, spec, data_dir=str(tmp_path / "data"), mistakes=1000)
    assert {"accuracy", "n", "per_class", "confusion", "mistakes", "most_confused"} <= set(out)
    assert out["n"] == 30 and len(out["mistakes"]) == out["n"] - np.trace(out["confusion"])
    for m in out["mistakes"]:
        path = tmp_path.joinpath(m["file"])
        assert path.is_file() and path.parent.name == m["true"] and path.parent.parent.name == "test"
    assert sum(p["count"] for p in out["most_confused"]) == len(out["mistakes"])
    assert "mistakes" not in evaluate_run(run, spec, data_dir=str(tmp_path / "data"))  # only when asked


def test_split_files_follow_the_images_through_the_cache_and_the_seeded_split(tmp_path):
    write_shapes_folder(tmp_path / "flat", per_class_train=5, per_class_test=None)
    (tmp_path / "flat" / "circle" / "broken.png").write_text("not an image")
    for _ in range(2):  # decoded, then from the cache
        ds = load_dataset(f"imagefolder:{tmp_path / 'flat'}", data_dir=tmp_path / "data")
        for split in (ds.train, ds.test):
            assert split.files is not None and len(split.files) == len(split)
            for image, label, file in zip(split.images[:8], split.labels[:8], split.files[:8]):
                again = torch.from_numpy(np.array(Image.open(file).convert("RGB"))).permute(2, 0, 1)
                assert torch.equal(image, again) and Path(file).parent.name == ds.classes[int(label)]
        assert not any("broken" in f for f in ds.train.files + ds.test.files)
    whole, _ = load_eval_split(f"imagefolder:{tmp_path / 'flat'}", data_dir=tmp_path / "data")
    assert len(whole.files) == len(whole) == 50


# --------------------------------------------------------------------------- feature maps and the first conv


@pytest.mark.parametrize("name", ["cifar10_quick", "mycnn", "lenet5", "speedrun", "resnet18"])
def test_feature_maps_match_the_layer_table_and_the_arithmetic_the_activation(name):
    torch.manual_seed(1)
    acts = Activations(predictor_for(build(name), [str(i) for i in range(10)]))
    image = shapes_dataset(n_train=10, n_test=10, seed=2).test.images[3]
    maps = acts.feature_maps(image)
    table = acts.layer_table().layers.set_index("name")
    convs = [n for n, m in acts.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.layer for m in maps] == convs
    for fmap in maps:
        assert table.loc[fmap.layer, "type"] == fmap.kind
        assert fmap.shape == table.loc[fmap.layer, "output_shape"] == " x ".join(map(str, fmap.maps.shape))
        assert sorted(fmap.order.tolist()) == list(range(fmap.maps.shape[0]))
        means = fmap.maps.mean(axis=(1, 2))
        assert means[fmap.order[0]] == means.max()
    c, h, w = maps[0].maps.shape
    for channel, row, col in [(0, 0, 0), (c - 1, h - 1, w - 1), (c // 2, h // 2, 1)]:  # corners cover the padding
        calc = acts.conv_arithmetic(image, channel, row, col)
        assert calc.actual == pytest.approx(float(maps[0].maps[channel, row, col]), abs=1e-5)
        assert calc.value == pytest.approx(calc.actual, abs=1e-4)
        assert calc.channel_sums.sum() + calc.bias == pytest.approx(calc.value, abs=1e-4)
    assert acts.filters().shape == tuple(acts.first_conv()[1].weight.shape)


def test_arithmetic_of_a_strided_conv_reads_the_right_patch():
    torch.manual_seed(2)
    spec = [
        {"type": "Conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "ReLU"},
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 3},
    ]
    acts = Activations(predictor_for(build_from_spec(spec, num_classes=3), ["a", "b", "c"]))
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    calc = acts.conv_arithmetic(image, 2, 5, 0)
    assert calc.input_rows == [9, 10, 11] and calc.input_cols == [-1, 0, 1]
    assert (calc.patch[:, :, 0] == 0).all()  # the left column is padding
    assert calc.value == pytest.approx(calc.actual, abs=1e-5)


# --------------------------------------------------------------------------- embedding


def test_embedding_projects_penultimate_features(shapes_predictions):
    result, predictor, ds = shapes_predictions
    acts = Activations(predictor)
    assert acts.penultimate() == "7"  # cifar10_quick: the 64 features the last Linear reads
    pca = embedding(acts, ds.test.images, "pca")
    assert pca["xy"].shape == (400, 2) and pca["dim"] == 64 and (pca["index"] == np.arange(400)).all()
    tsne = embedding(acts, ds.test.images, "tsne", max_points=120, seed=4)
    assert tsne["xy"].shape == (120, 2) and len(set(tsne["index"].tolist())) == 120
    assert (tsne["index"] == sample_indices(400, 120, seed=4)).all()
    assert np.isfinite(tsne["xy"]).all()
    # Two well separated groups stay separated in both projections.
    rng = np.random.default_rng(0)
    feats = np.vstack([rng.normal(0, 1, (30, 20)), rng.normal(12, 1, (30, 20))]).astype(np.float32)
    for method in ("pca", "tsne"):
        xy = project(feats, method)
        a, b = xy[:30].mean(0), xy[30:].mean(0)
        assert np.linalg.norm(a - b) > 3 * max(xy[:30].std(0).max(), xy[30:].std(0).max())


def test_embedding_figure_marks_exactly_the_misclassified_points(shapes_predictions):
    from studio.inside_view import embedding_figure

    result, _, _ = shapes_predictions
    index = sample_indices(len(result), 150, seed=1)
    xy = np.random.default_rng(0).normal(size=(150, 2)).astype(np.float32)
    fig = embedding_figure(xy, index, result)
    marked = [int(i) for tr in fig.data if tr.marker.symbol == "x" for i in np.asarray(tr.customdata)[:, 0]]
    assert sorted(marked) == sorted(index[result.wrong[index]].tolist())
    shown = [int(i) for tr in fig.data for i in np.asarray(tr.customdata)[:, 0]]
    assert sorted(shown) == index.tolist()
    assert sorted({tr.name for tr in fig.data if tr.showlegend is not False}) == sorted({result.classes[c] for c in result.labels[index]})
