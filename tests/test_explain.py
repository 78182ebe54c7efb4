"""Where the model looks (core.explain) and whether a picture resembles the training data (core.ood).

The maps must mean something, so the slow tests train a small model that has really learned the
shapes and run the two sanity checks of Adebayo et al. (2018) on it: the map changes with the
class it explains, and a re-initialised model gives a clearly different map.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from core.data.datasets import SHAPES_CLASSES, _shape_masks, shapes_dataset
from core.data.images import load_for_model, prepare_image
from core.errors import PlaygroundError
from core.insight import ood
from core.insight.explain import METHODS, Explainer, Explanation, gradcam_layer, overlay
from core.insight.predict import Predictor
from core.models.build import build
from core.serving import runs
from core.training.config import TrainConfig
from core.training.loop import train

ROOT = Path(__file__).resolve().parent.parent
NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


def render(
    label: int,
    width: int,
    height: int,
    cx: float,
    cy: float,
    r: float,
    theta: float = 0.4,
    fg=(235, 190, 40),
    bg=(30, 60, 120),
    noise: float = 6.0,
    seed: int = 0,
) -> tuple[Image.Image, np.ndarray]:
    """One shape drawn with core.data's own masks at a known place, and its mask (True on the shape)."""
    ss = 2  # drawn at 2x and averaged down, like the dataset
    x, y = np.meshgrid((np.arange(width * ss) + 0.5) / ss - cx, (np.arange(height * ss) + 0.5) / ss - cy)
    u, v = x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)
    alpha = _shape_masks(label, u, v, np.asarray(float(r))).reshape(height, ss, width, ss).mean(axis=(1, 3))
    img = alpha[..., None] * np.array(fg) + (1 - alpha[..., None]) * np.array(bg)
    img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)), alpha > 0.5


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def untrained(name: str, size: int = 32, **kwargs) -> Predictor:
    torch.manual_seed(0)
    model = build(name, len(SHAPES_CLASSES), input_size=size, **kwargs)
    return Predictor._ready(model, list(SHAPES_CLASSES), NORM, 32, size, "cpu", False)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0  # an empty map shares no ranking with anything
    return float(spearmanr(a.ravel(), b.ravel())[0])


# --------------------------------------------------------------------------- every model, no training


CUSTOM = [
    {"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
    {"type": "BatchNorm2d"},
    {"type": "ReLU"},
    {"type": "MaxPool2d"},
    {"type": "Flatten"},
    {"type": "Linear"},
]


@pytest.mark.parametrize(
    "name, size, layer",
    [
        ("cifar10_quick", 32, "4"),
        ("mycnn", 32, "relu"),
        ("lenet5", 32, "4"),
        ("resnet18", 32, "layer4"),
        ("speedrun", 32, "groups"),
        ("vgg16", 64, "features.29"),
        ("alexnet", 64, "features.11"),
        ("custom", 32, "2"),
    ],
)
def test_every_model_gets_a_gradcam_layer_and_maps_from_every_method(name, size, layer):
    predictor = untrained(CUSTOM if name == "custom" else name, size)
    if name == "speedrun":
        assert predictor.model.whiten.weight.requires_grad is False  # frozen, and channels_last (build_speedrun)
    explainer = Explainer(predictor)
    assert explainer.layer()[0] == layer
    image = load_for_model(png(render(3, 48, 40, 24, 20, 10)[0]), 32)
    for method in METHODS if size == 32 else ["gradcam"]:
        e = explainer.explain_prepared(image, method)
        assert e.heat.shape == (size, size) and e.heat.dtype == np.float32, method
        assert 0 <= e.heat.min() and e.heat.max() <= 1 and np.isfinite(e.heat).all(), method
        assert e.label == SHAPES_CLASSES[e.target] and e.target == int(e.probs.argmax())


def test_frozen_backbones_and_channels_last_weights_still_explain():
    predictor = untrained("resnet18", freeze=True)
    predictor.model.to(memory_format=torch.channels_last)
    assert not any(p.requires_grad for n, p in predictor.model.named_parameters() if not n.startswith("fc."))
    explainer = Explainer(predictor)
    for method in METHODS:
        e = explainer.explain(png(render(0, 32, 32, 16, 16, 9)[0]), method=method, target="ring")
        assert e.label == "ring" and e.heat.any(), method
    # Gradients are taken w.r.t. the input and activations only: no weight ever gets a .grad.
    assert all(p.grad is None for p in [*predictor.model.parameters(), *explainer.model.parameters()])


def test_a_model_without_convolutions_says_what_to_use_instead():
    predictor = untrained([{"type": "Flatten"}, {"type": "Linear", "out_features": 32}, {"type": "ReLU"}, {"type": "Linear"}])
    with pytest.raises(PlaygroundError, match="saliency"):
        gradcam_layer(predictor.model, 32)
    assert Explainer(predictor).explain_prepared(torch.zeros(3, 32, 32, dtype=torch.uint8) + 9, "saliency").heat.shape == (32, 32)


def test_targets_by_name_or_index_and_a_clear_error_otherwise():
    explainer = Explainer(untrained("cifar10_quick"))
    image = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    assert explainer.explain_prepared(image, target="star").target == SHAPES_CLASSES.index("star")
    assert explainer.explain_prepared(image, target="7").label == SHAPES_CLASSES[7]
    for bad in ("giraffe", "10", "-1"):
        with pytest.raises(PlaygroundError, match="not one of this run's classes"):
            explainer.explain_prepared(image, target=bad)
    with pytest.raises(PlaygroundError, match="Unknown method"):
        explainer.explain_prepared(image, method="lime")


# --------------------------------------------------------------------------- geometry


def test_the_map_lands_on_the_pixels_the_model_saw():
    """A wide image is centre-cropped for the model: the map covers that square only, unstretched."""
    full = Explanation("gradcam", 0, "circle", torch.zeros(10), np.ones((32, 32), np.float32), (8, 8))
    on = full.on_image(96, 64)
    assert on.shape == (64, 96) and on.dtype == np.float32
    assert on[:, :16].max() == 0 and on[:, 80:].max() == 0 and on[:, 16:80].min() > 0.999
    tall = full.on_image(40, 101)
    assert tall.shape == (101, 40) and tall[:30].max() == 0 and tall[70:].max() == 0 and tall[31:70].min() > 0.999

    # Round trip: a map that is hot exactly where the prepared image shows the shape lands on the shape
    # in the original, off-centre and at another scale.
    img, mask = render(2, 150, 90, cx=95, cy=40, r=16)
    prepared = prepare_image(img, 32).float().mean(0)  # yellow shape on blue: bright where the shape is
    heat = ((prepared - prepared.min()) / (prepared.max() - prepared.min())).numpy().astype(np.float32)
    back = Explanation("gradcam", 0, "square", torch.zeros(10), heat, (32, 32)).on_image(150, 90) > 0.5
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.8, iou


def test_overlay_colours_the_map_and_dims_what_the_model_never_sees():
    img = Image.new("RGB", (90, 60), (120, 120, 120))
    heat = np.zeros((60, 90), np.float32)
    heat[20:40, 40:60] = 1.0
    out = np.asarray(overlay(img, heat)).astype(int)
    assert out.shape == (60, 90, 3)
    assert tuple(out[5, 45]) == (120, 120, 120)  # inside the square, no evidence: untouched
    assert out[30, 50, 0] > out[30, 50, 2] + 60  # hot: red
    assert out[5, 5].max() < 70  # outside the centre square: dimmed


# --------------------------------------------------------------------------- a model that has learned


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> Path:
    """cifar10_quick trained on shapes until it really tells them apart (about 85% on its test split)."""
    out = tmp_path_factory.mktemp("explain") / "run"
    result = train(TrainConfig.for_model("cifar10_quick", data="shapes:4000", epochs=5, batch_size=64, precision="fp32"), out)
    assert result["val_acc"] > 0.7, result  # the sanity checks below need a model that has learned
    return out


def confident_shapes(predictor: Predictor, n: int = 24) -> list[torch.Tensor]:
    test = shapes_dataset(n_train=10, n_test=200, seed=21).test
    probs = predictor.probabilities(test.images)
    good = ((probs.argmax(1) == test.labels) & (probs.max(1).values > 0.8)).nonzero().flatten()[:n]
    assert len(good) >= n // 2
    return [test.images[i] for i in good]


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_sanity_the_map_depends_on_the_class_and_on_the_learned_weights(learned, method):
    """Saliency (the gradient's magnitude) is known to change little with the class, and the page says so;
    Grad-CAM and integrated gradients must answer "why this class"."""
    predictor = Predictor.from_run(learned)
    explainer = Explainer(predictor)
    torch.manual_seed(123)
    reinitialised = Explainer(dataclasses.replace(predictor, model=build("cifar10_quick", 10).eval()))
    noise = torch.Generator().manual_seed(0)
    other_class, randomised, self_consistency = [], [], []
    for image in confident_shapes(predictor):
        e = explainer.explain_prepared(image, method)
        unlikely = int(e.probs.argmin())
        other_class.append(rank_correlation(e.heat, explainer.explain_prepared(image, method, target=unlikely).heat))
        randomised.append(rank_correlation(e.heat, reinitialised.explain_prepared(image, method, target=e.target).heat))
        jittered = (image.float() + torch.randn(image.shape, generator=noise) * 2).clamp(0, 255).to(torch.uint8)
        self_consistency.append(rank_correlation(e.heat, explainer.explain_prepared(jittered, method, target=e.target).heat))
    stable, by_class, by_weights = (float(np.median(v)) for v in (self_consistency, other_class, randomised))
    print(
        f"{method}: rank correlation with itself under pixel noise {stable:.2f}, with the least likely class's map "
        f"{by_class:.2f}, with a re-initialised model's map {by_weights:.2f}"
    )
    assert stable > 0.8
    assert by_weights < 0.5 and by_weights < stable - 0.3  # Adebayo et al.'s model-randomisation check
    if method == "saliency":
        assert by_class < stable
    else:
        assert by_class < 0.5 and by_class < stable - 0.3


@pytest.mark.slow
def test_gradcam_falls_on_the_shape_rather_than_the_background(learned):
    """Shapes drawn where we know they are: for those the model gets right, most of the map is on the shape."""
    explainer = Explainer(Predictor.from_run(learned))
    rng = np.random.default_rng(4)
    on_shape, density = [], []
    for i in range(100):
        label, r = i % 10, rng.uniform(6.4, 13.4)  # the dataset's sizes
        cx, cy = rng.uniform(r, 32 - r), rng.uniform(r, 32 - r)
        img, _ = render(
            label,
            32,
            32,
            cx,
            cy,
            r,
            theta=rng.uniform(0, 6.3),
            fg=tuple(rng.uniform(0, 255, 3)),
            bg=tuple(rng.uniform(0, 255, 3)),
            noise=rng.uniform(2, 14),
            seed=i,
        )
        e = explainer.explain_prepared(prepare_image(img, 32), "gradcam", target=label)
        if int(e.probs.argmax()) != label or float(e.probs.max()) < 0.8 or e.empty:
            continue
        # The shape's disk and its outline (2 px, half a cell of the 8 x 8 layer the map comes from) vs the rest.
        yy, xx = np.mgrid[0:32, 0:32] + 0.5
        shape = (xx - cx) ** 2 + (yy - cy) ** 2 <= (r + 2) ** 2
        mass = e.heat[shape].sum() / e.heat.sum()
        on_shape.append(mass)
        density.append((mass / shape.mean()) / ((1 - mass) / (1 - shape.mean())))
    print(
        f"Grad-CAM mass on the shape {np.mean(on_shape):.2f}; per pixel {np.median(density):.1f}x denser than on "
        f"the background ({len(on_shape)} shapes the model gets right)"
    )
    assert len(on_shape) >= 15
    assert np.mean(on_shape) > 0.5 and np.median(density) > 1.4


@pytest.mark.slow
def test_photos_are_flagged_for_a_shapes_model_and_shapes_are_not(learned, cifar_slice):
    predictor = Predictor.from_run(learned)
    photos = torch.stack([load_for_model(f, 32) for f in sorted((cifar_slice / "test").rglob("*.jpg"))])
    shapes = shapes_dataset(n_train=10, n_test=500, seed=99).test.images  # a stream the model never saw
    _, on_photos = predictor.classify(photos)
    _, on_shapes = predictor.classify(shapes)
    flagged = np.mean([n["ood"]["unusual"] for n in on_photos])
    passed = 1 - np.mean([n["ood"]["unusual"] for n in on_shapes])
    print(f"unusual: {flagged:.1%} of {len(photos)} CIFAR-10 photos; not unusual: {passed:.1%} of {len(shapes)} shapes")
    assert flagged >= 0.9 and passed >= 0.9
    assert all("unlike the images the model was trained on" in n["warning"] for n in on_photos if n["ood"]["unusual"])


@pytest.mark.slow
def test_the_check_is_cached_per_checkpoint_and_refitted_after_resume(learned, monkeypatch):
    cache = learned / ood.OOD_FILE
    Predictor.from_run(learned).ood_check()
    assert cache.exists()
    fits = []
    real_fit = ood.fit_for_run
    monkeypatch.setattr(ood, "fit_for_run", lambda *a: fits.append(1) or real_fit(*a))
    again = Predictor.from_run(learned).ood_check()
    assert again.reference is not None and fits == []  # read from the run folder
    checkpoint = learned / runs.CHECKPOINT_FILE
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as a resumed run rewrites it
    assert Predictor.from_run(learned).ood_check().reference is not None and fits == [1]


def test_predictions_carry_the_check_and_uploads_without_data_only_the_confidence_rule():
    predictor = untrained("cifar10_quick")  # no run folder: nothing to compare with
    result = predictor.predict([png(render(0, 40, 40, 20, 20, 10)[0])], names=["c.png"], k=3)[0]
    assert set(result) == {"file", "top", "ood", "warning"} and result["ood"] is None
    assert predictor.ood_check().unavailable
    if result["top"][0]["prob"] < ood.LOW_CONFIDENCE:  # an untrained model is unsure and says so
        assert "unsure" in result["warning"]


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explain-cli") / "run"
    train(TrainConfig.for_model("cifar10_quick", data="shapes:300", epochs=1, batch_size=50, precision="fp32"), out)
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.explain", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_cli_writes_an_overlay_and_a_map_at_each_images_own_size(quick_run, tmp_path):
    wide, tall = tmp_path / "a" / "shape.png", tmp_path / "b" / "shape.jpg"
    wide.parent.mkdir()
    tall.parent.mkdir()
    render(4, 120, 60, 60, 30, 20)[0].save(wide)
    render(8, 50, 90, 25, 45, 18)[0].save(tall, quality=92)
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    out = tmp_path / "maps"
    done = cli(str(quick_run), str(wide), str(bad), str(tall), "--target", "dots", "--out", str(out), "--no-ood")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["file"] for r in results] == [str(wide), str(bad), str(tall)]
    assert "error" in results[1] and "notes.png" in results[1]["error"]
    for r, (h, w) in zip([results[0], results[2]], [(60, 120), (90, 50)]):
        assert set(r) >= {"file", "top", "method", "target", "heatmap"} and r["method"] == "gradcam" and r["target"] == "dots"
        heat = np.load(r["map"])
        assert heat.shape == (h, w) and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
        assert Image.open(r["heatmap"]).size == (w, h)
    assert results[0]["heatmap"] != results[2]["heatmap"]  # same stem, two files
    assert Path(results[0]["heatmap"]).name == "shape.gradcam.png"
    saliency = json.loads(cli(str(quick_run), str(wide), "--method", "saliency", "--target", "3", "--out", str(out)).stdout)
    assert saliency[0]["target"] == SHAPES_CLASSES[3] and saliency[0]["heatmap"].endswith("shape.saliency.png")
    assert "ood" in saliency[0] and "warning" in saliency[0]


def test_cli_refuses_a_target_the_run_does_not_have(quick_run, tmp_path):
    image = tmp_path / "x.png"
    render(0, 32, 32, 16, 16, 8)[0].save(image)
    done = cli(str(quick_run), str(image), "--target", "giraffe", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "giraffe" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_gets_the_check_fitted_once_and_a_damaged_cache_is_refitted(quick_run):
    (quick_run / ood.OOD_FILE).unlink(missing_ok=True)
    result = Predictor.from_run(quick_run).predict([png(render(5, 40, 40, 20, 20, 11)[0])], names=["x.png"])[0]
    assert 0 <= result["ood"]["score"] <= 1 and 0 < result["ood"]["threshold"] <= 1
    assert isinstance(result["ood"]["unusual"], bool) and (quick_run / ood.OOD_FILE).exists()
    (quick_run / ood.OOD_FILE).write_bytes(b"half a file")
    again = Predictor.from_run(quick_run).predict([png(render(5, 40, 40, 20, 20, 11)[0])], names=["x.png"])[0]
    # Refitted on the same data; how many held-out images calibrate it depends on the machine's speed.
    assert again["ood"]["score"] == pytest.approx(result["ood"]["score"], abs=0.03)
    assert ood.Reference.load(quick_run / ood.OOD_FILE).info["n_bank"] == "300"  # the cache was written again


# --------------------------------------------------------------------------- the Predict page


def predict_page(quick_run, tmp_path, monkeypatch):
    """The Predict page (AppTest) with the trained shapes run as the only run."""
    import shutil

    from streamlit.testing.v1 import AppTest

    root = tmp_path / "models"
    shutil.copytree(quick_run, root / "quick")
    monkeypatch.setattr(runs, "MODELS_DIR", root)
    monkeypatch.setenv("PLAYGROUND_MODELS_DIR", str(root))
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/predict.py")
    at.run()
    return at


def test_predict_page_overlay_toggle_class_picker_and_method(quick_run, tmp_path, monkeypatch):
    at = predict_page(quick_run, tmp_path, monkeypatch)
    at.file_uploader(key="images").set_value([("circle.png", png(render(0, 64, 48, 30, 24, 14)[0]), "image/png")]).run()
    assert not at.exception, [e.value for e in at.exception]

    def captions() -> list[str]:
        return [c for image in at.get("image") for c in image.captions]

    assert not any("where it looks" in c for c in captions())
    at.toggle(key="look-0-circle.png").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    predicted = at.selectbox(key="why-0-circle.png").value
    assert f"where it looks for “{predicted}”" in captions()
    # What the colours mean, or (a barely trained model) that nothing in the picture speaks for the class.
    assert any("Red and yellow" in c.value for c in at.caption) or any("speaks for" in i.value for i in at.info)
    other = next(c for c in SHAPES_CLASSES if c != predicted)
    at.selectbox(key="why-0-circle.png").set_value(other)
    at.segmented_control(key="method-0-circle.png").set_value("integrated_gradients").run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"where it looks for “{other}”" in captions()
    assert any("Integrated gradients" in c.value for c in at.caption) or any("speaks for" in i.value for i in at.info)


def test_predict_page_decodes_and_classifies_each_upload_once(quick_run, tmp_path, monkeypatch):
    """The thumbnail, the answer, what the model sees and the overlay share one decoded picture and one forward pass
    of each upload; a rerun (the overlay switched on, its class changed) decodes and classifies nothing again."""
    at = predict_page(quick_run, tmp_path, monkeypatch)
    Predictor.from_run(runs.MODELS_DIR / "quick").ood_check()  # fitted and cached in the run folder, not counted below
    uploads = [
        ("circle.png", png(render(0, 64, 48, 30, 24, 14)[0]), "image/png"),
        ("static.png", png(Image.fromarray(np.full((40, 50, 3), 90, np.uint8))), "image/png"),
    ]
    decoded, classified = [], []
    real_open, real_logits = Image.open, Predictor.logits

    def counting_open(fp, *args, **kwargs):
        if getattr(fp, "getvalue", lambda: None)() in [payload for _, payload, _ in uploads]:  # not Streamlit's own images
            decoded.append(1)
        return real_open(fp, *args, **kwargs)

    def counting_logits(self, batch):
        classified.append(len(batch))
        return real_logits(self, batch)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(Predictor, "logits", counting_logits)
    at.file_uploader(key="images").set_value(uploads).run()
    assert not at.exception, [e.value for e in at.exception]
    assert (len(decoded), sum(classified)) == (2, 2)  # the old page: 6 decodes (answer, thumbnail, model's view)
    at.toggle(key="look-0-circle.png").set_value(True).run()
    at.selectbox(key="why-0-circle.png").set_value(next(c for c in SHAPES_CLASSES if c != at.selectbox(key="why-0-circle.png").value)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("where it looks for" in c for image in at.get("image") for c in image.captions)
    assert (len(decoded), sum(classified)) == (2, 2)


def test_predict_page_warns_about_an_unusual_picture_and_says_why_softmax_still_answers(quick_run, tmp_path, monkeypatch):
    at = predict_page(quick_run, tmp_path, monkeypatch)
    static = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))  # TV static
    at.file_uploader(key="images").set_value([("static.png", png(static), "image/png")]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("unlike the images the model was trained on" in w.value for w in at.warning), [w.value for w in at.warning]
    assert any("no real answer" in m.value for m in at.markdown)  # the headline does not present the guess as an answer
    (note,) = [e for e in at.expander if "name a class" in e.label]
    assert "softmax" in " ".join(m.value for m in note.markdown) and "100%" in " ".join(m.value for m in note.markdown)
