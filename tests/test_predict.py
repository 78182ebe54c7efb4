"""Prediction: odd uploads, determinism, exports, uploaded weights, whole-model pickles."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
import torchvision
from conftest import HostilePayload
from PIL import Image
from safetensors.torch import save_file

from core.errors import PlaygroundError
from core.insight.predict import Predictor
from core.models.build import build
from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run"
    train(TrainConfig.for_model("cifar10_quick", data="shapes:500", epochs=1, batch_size=50, precision="fp32"), out)
    return out


def png_bytes(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def odd_uploads() -> dict[str, bytes]:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    sixteen = Image.fromarray((np.ones((20, 20)) * 30000).astype(np.uint16))
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    return {
        "rgba.png": png_bytes(rgb.convert("RGBA")),
        "gray.png": png_bytes(rgb.convert("L")),
        "sixteen.png": png_bytes(sixteen),
        "cmyk.jpg": png_bytes(rgb.convert("CMYK"), "JPEG"),
        "rotated.jpg": png_bytes(rgb, "JPEG", exif=exif),
        "tiny.png": png_bytes(Image.new("RGB", (1, 1), "red")),
        "wide.png": png_bytes(Image.new("RGB", (4000, 30), "blue")),
        "large.jpg": png_bytes(Image.new("RGB", (3000, 2000), "green"), "JPEG"),
        "animated.gif": gif.getvalue(),
        "photo.webp": png_bytes(rgb, "WEBP"),
        "photo.bmp": png_bytes(rgb, "BMP"),
        "photo.tiff": png_bytes(rgb, "TIFF"),
    }


def bad_uploads() -> dict[str, bytes]:
    jpeg = png_bytes(Image.new("RGB", (200, 200), "red"), "JPEG")
    return {
        "empty.jpg": b"",
        "text.jpg": b"just some text\n" * 10,
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>',
    }


def test_odd_images_are_predicted_and_bad_ones_refused_one_line(run_dir):
    predictor = Predictor.from_run(run_dir)
    good, bad = odd_uploads(), bad_uploads()
    names = list(good) + list(bad)
    results = predictor.predict(list(good.values()) + list(bad.values()), names=names, k=3)
    assert [r["file"] for r in results] == names
    for r in results[: len(good)]:
        assert "top" in r, r
        assert len(r["top"]) == 3 and 0.0 <= r["top"][0]["prob"] <= 1.0
    for r in results[len(good) :]:
        assert "error" in r and "\n" not in r["error"] and r["file"] in r["error"], r


def test_prediction_is_deterministic_and_sees_the_trained_size(run_dir):
    predictor = Predictor.from_run(run_dir)
    upload = odd_uploads()["large.jpg"]
    seen = predictor.prepare(upload, "large.jpg")
    assert seen.shape == (3, 32, 32) and seen.dtype == torch.uint8
    first = predictor.probabilities(seen[None])
    for _ in range(3):
        assert torch.equal(predictor.probabilities(predictor.prepare(upload)[None]), first)
    assert first.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(predictor.model_view(seen), seen)  # a 32-px model sees the 32-px image as is


def test_model_view_is_at_the_model_input_size(tmp_path):
    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    predictor = Predictor.from_weights(path, "alexnet", input_size=224)
    predictor.image_size = 32  # as a run trained on 32-px CIFAR images and upsampled on the device
    view = predictor.model_view(predictor.prepare(odd_uploads()["photo.bmp"]))
    assert view.shape == (3, 224, 224) and view.dtype == torch.uint8


def test_predictions_match_the_training_evaluation(run_dir):
    """The test split through Predictor scores what the trainer recorded: one preprocessing path."""
    from core.data.datasets import shapes_dataset

    predictor = Predictor.from_run(run_dir)
    test = shapes_dataset(500, 2000, seed=0).test
    probs = predictor.probabilities(test.images)
    accuracy = (probs.argmax(1) == test.labels).float().mean().item()
    records, _ = runs.read_metrics(run_dir)
    assert accuracy == pytest.approx([r for r in records if r["kind"] == "epoch"][-1]["test_acc"], abs=1e-6)


def test_state_dict_export_and_safetensors_upload_predict_the_same(run_dir, tmp_path):
    exported = tmp_path / "export.pt"
    exported.write_bytes(runs.state_dict_bytes(run_dir))
    state = torch.load(exported, weights_only=True)  # exactly model.state_dict()
    info = runs.weights_info(run_dir)  # its JSON sidecar
    from_export = Predictor.from_weights(exported, "cifar10_quick", info=info)
    assert from_export.classes == Predictor.from_run(run_dir).classes  # the sidecar carries the class names
    safetensors_path = tmp_path / "weights.safetensors"
    save_file(state, str(safetensors_path))
    from_st = Predictor.from_weights(safetensors_path, "cifar10_quick", classes=info["classes"], normalization=info["normalization"])
    upload = odd_uploads()["photo.bmp"]
    a = from_export.predict([upload], names=["x.bmp"])[0]["top"]
    b = from_st.predict([upload], names=["x.bmp"])[0]["top"]
    c = Predictor.from_run(run_dir).predict([upload], names=["x.bmp"])[0]["top"]
    assert a == b == c


def test_uploaded_weights_for_the_wrong_architecture_are_explained(run_dir, tmp_path):
    exported = tmp_path / "export.pt"
    exported.write_bytes(runs.state_dict_bytes(run_dir))
    with pytest.raises(PlaygroundError, match="do not fit this model"):
        Predictor.from_weights(exported, "lenet5")


def test_imagenet_weights_get_imagenet_class_names(tmp_path):
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    predictor = Predictor.from_weights(path, "alexnet")
    assert len(predictor.classes) == 1000 and predictor.classes[0] == "tench" and predictor.input_size == 224
    top = predictor.predict([odd_uploads()["photo.bmp"]], names=["x"], k=5)[0]["top"]
    assert len(top) == 5 and all(t["label"] in predictor.classes for t in top)


def test_whole_model_pickles_need_opt_in_and_must_live_in_models(run_dir, tmp_path, monkeypatch):
    root = tmp_path / "models"
    (root / "mine").mkdir(parents=True)
    model = build("cifar10_quick")
    inside = root / "mine" / "model_whole.pt"
    inside.write_bytes(runs.whole_model_bytes(model))
    outside = tmp_path / "downloaded.pt"
    outside.write_bytes(inside.read_bytes())
    with pytest.raises(PlaygroundError, match="opt in"):
        runs.load_whole_model(inside, root=root)
    with pytest.raises(PlaygroundError, match="only loaded from your own models folder"):
        runs.load_whole_model(outside, allow_unsafe_pickle=True, root=root)
    loaded = runs.load_whole_model(inside, allow_unsafe_pickle=True, root=root)
    assert str(loaded) == str(model)
    with pytest.raises(PlaygroundError, match="refused on purpose"):  # the safe loaders never accept it
        Predictor.from_weights(outside, "cifar10_quick")


def test_a_checkpoint_whose_pickle_would_run_code_runs_nothing(tmp_path):
    marker = tmp_path / "created-by-payload"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "cifar10_quick"}')
    with open(run / "checkpoint.pt", "wb") as f:
        pickle.dump({"model": HostilePayload(str(marker))}, f, protocol=2)
    with pytest.raises(PlaygroundError, match="refused for safety"):
        Predictor.from_run(run)
    assert not marker.exists()


@pytest.mark.parametrize("run_id", ["../etc", "a/b", "", "..", "x" * 200, "/abs"])
def test_run_ids_cannot_escape_the_models_folder(run_id, tmp_path):
    with pytest.raises(PlaygroundError, match="not a valid run id"):
        runs.run_path(run_id, tmp_path)
