"""The training loop: learning, stop/resume, time limit, divergence, faults, precision."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from core.errors import PlaygroundError
from core.export.loop_code import loop_code
from core.serving import runs
from core.training import losses
from core.training.config import TrainConfig
from core.training.loop import resume, train
from core.training.parts import lr_factor


def tiny(**overrides) -> TrainConfig:
    base = dict(data="shapes:600", epochs=2, batch_size=50, log_every=2, precision="fp32")
    return TrainConfig.for_model(overrides.pop("model", "cifar10_quick"), **{**base, **overrides})


def test_a_run_writes_the_run_folder_contract(models_root):
    result = train(tiny(), models_root / "r")
    assert result["status"] == "finished" and result["epochs"] == 2 and result["train_img_per_s"] > 0
    config = json.loads((models_root / "r" / "config.json").read_text())
    assert config["model"] == "cifar10_quick" and config["classes"][0] == "circle" and config["seed"] == 0
    assert config["env"]["torch"] == torch.__version__ and config["env"]["precision"] == "fp32"
    records, _ = runs.read_metrics(models_root / "r")
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "status" and kinds[-1] == "status" and kinds.count("epoch") == 2 and "step" in kinds
    assert records[-1]["status"] == "finished"
    epoch = [r for r in records if r["kind"] == "epoch"][-1]
    assert set(epoch) >= {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "per_class", "confusion"}
    assert sum(map(sum, epoch["confusion"])) == 2000
    ckpt = torch.load(models_root / "r" / "checkpoint.pt", weights_only=True)  # no arbitrary objects inside
    assert ckpt["epoch"] == 2 and ckpt["classes"][0] == "circle" and set(ckpt["normalization"]) == {"mean", "std"}
    info = runs.list_runs(models_root)[0]
    assert info.status == "finished" and info.best_acc == result["val_acc"] and not info.resumable


@pytest.mark.slow
def test_shapes_is_learnable(models_root):
    """The studio's default run (cifar10_quick, shapes, 8 epochs) reaches 90%: the offline demo works."""
    result = train(TrainConfig.for_model("cifar10_quick", data="shapes", epochs=8), models_root / "s")
    assert result["val_acc"] >= 0.90, result


def test_stop_mid_epoch_then_resume_continues_from_that_batch(models_root):
    stop = threading.Event()
    steps = []

    def on_record(r):
        if r["kind"] == "step":
            steps.append(r["step"])
            if r["step"] >= 4:
                stop.set()

    result = train(tiny(epochs=3, loss="nll"), models_root / "r", stop_event=stop, on_record=on_record)
    assert result["status"] == "stopped" and result["epochs"] == 0 and result["val_acc"] is not None
    ckpt = runs.load_checkpoint(models_root / "r")
    assert ckpt["epoch"] == 0 and ckpt["step_in_epoch"] == 4 and ckpt["global_step"] == 4
    info = runs.run_info(models_root / "r")
    assert info.status == "stopped" and info.resumable
    stopped = [r for r in runs.read_metrics(models_root / "r")[0] if r.get("status") == "stopped"][-1]
    assert len(stopped["per_class"]) == 10 and sum(map(sum, stopped["confusion"])) == 2000
    # counted as the progress bar counts: the epoch under way from 1, the steps done in it
    assert "checkpoint saved at epoch 1 of 3, step 4 of 12." in stopped["message"]
    result = resume(models_root / "r")
    assert result["status"] == "finished" and result["epochs"] == 3
    assert runs.run_info(models_root / "r").seconds > stopped["elapsed"]  # the clock continues after a resume
    ckpt = runs.load_checkpoint(models_root / "r")
    assert ckpt["global_step"] == 3 * 12  # 600 images / 50 per batch, no batch trained twice or skipped
    records, _ = runs.read_metrics(models_root / "r")
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    assert runs.read_config(models_root / "r")["loss"] == "nll"  # the chosen loss is part of the run: resumed with it


def test_position_counts_one_way_everywhere():
    assert runs.position(3, 21, 8, 25) == "epoch 4 of 8, step 21 of 25"
    assert runs.position(3, 0, 8, 25) == "epoch 3 of 8, step 25 of 25"  # a stop right at the end of epoch 3
    assert runs.position(0, 0, 8, 25) == "epoch 1 of 8, step 0 of 25"
    assert runs.position(0, 7, 2) == "epoch 1 of 2, step 7"


def test_losses_train_what_they_say():
    logits, labels = torch.randn(16, 5), torch.randint(0, 5, (16,))
    cross_entropy = losses.make("cross_entropy")(logits, labels)
    assert torch.allclose(losses.make("nll")(logits, labels), cross_entropy)  # the same maths in two steps
    assert losses.make("cross_entropy", 0.1)(logits, labels) != cross_entropy
    probs = torch.softmax(logits, 1)
    assert torch.allclose(losses.make("mse")(logits, labels), ((probs - torch.eye(5)[labels]) ** 2).mean())
    for name in losses.LOSSES:  # the code the Train page shows builds the same loss
        built = eval(losses.code(name, 0.0), {"nn": torch.nn, "F": torch.nn.functional})  # our own text, not user input
        assert torch.allclose(built(logits, labels), losses.make(name)(logits, labels))
    with pytest.raises(PlaygroundError, match="Label smoothing"):
        TrainConfig(loss="nll", label_smoothing=0.1).validate()
    with pytest.raises(PlaygroundError, match="Unknown loss"):
        TrainConfig(loss="hinge").validate()


def test_time_limit_stops_with_a_checkpoint(models_root):
    result = train(tiny(epochs=50, time_limit=3.0), models_root / "r")
    assert result["status"] == "stopped" and result["epochs"] < 50
    assert runs.run_info(models_root / "r").message.startswith("Time limit reached")
    assert (models_root / "r" / "checkpoint.pt").exists()


def test_divergence_is_reported_and_the_last_good_checkpoint_kept(models_root, monkeypatch):
    run = models_root / "r"
    train(tiny(epochs=1), run)
    good = (run / "checkpoint.pt").read_bytes()
    config = json.loads((run / "config.json").read_text())
    runs.write_json(run / "config.json", {**config, "epochs": 3})

    class ExplodingLoss(torch.nn.CrossEntropyLoss):
        def forward(self, logits, target):
            return super().forward(logits, target) * float("nan")

    monkeypatch.setattr("torch.nn.CrossEntropyLoss", ExplodingLoss)
    result = resume(run)
    assert result["status"] == "diverged"
    info = runs.run_info(run)
    assert info.status == "diverged" and "learning rate" in info.message and "Lower it" in info.message
    assert (run / "checkpoint.pt").read_bytes() == good


def test_a_huge_learning_rate_diverges(models_root):
    result = train(tiny(optimizer="sgd", lr=1e8, epochs=3), models_root / "r")
    assert result["status"] == "diverged" and result["epochs"] == 0


def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    runs.save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs.os, "replace", full_disk)
    with pytest.raises(PlaygroundError, match="No space left on device.*previous checkpoint is unchanged"):
        runs.save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_simulated_out_of_memory_fails_with_advice(models_root, monkeypatch):
    from core.models.build import build as real_build

    def build_that_ooms(*args, **kwargs):
        model = real_build(*args, **kwargs)

        def forward(x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.forward = forward
        return model

    monkeypatch.setattr("core.training.parts.build", build_that_ooms)
    with pytest.raises(PlaygroundError, match="Out of memory at batch size 50.*smaller batch size"):
        train(tiny(), models_root / "r")
    info = runs.run_info(models_root / "r")
    assert info.status == "failed" and "smaller batch" in info.message


def test_an_unexpected_error_is_recorded_then_raised_with_its_traceback(models_root, monkeypatch):
    def broken_step(*pieces_and_batch):
        raise ValueError("a bug in the step")

    monkeypatch.setattr("core.training.loop.train_step", broken_step)
    with pytest.raises(ValueError, match="a bug in the step"):
        train(tiny(), models_root / "r")
    info = runs.run_info(models_root / "r")
    assert info.status == "failed" and info.message == "ValueError: a bug in the step"


def test_all_parameters_frozen_is_refused(models_root):
    with pytest.raises(PlaygroundError, match="Every parameter is frozen"):
        from core.training.parts import make_optimizer

        model = torch.nn.Linear(2, 2).requires_grad_(False)
        make_optimizer(model, tiny())


def test_a_setup_error_is_recorded_in_the_run_folder(models_root):
    with pytest.raises(PlaygroundError, match="does not exist"):
        train(tiny(data="imagefolder:/nonexistent"), models_root / "r")
    assert runs.run_info(models_root / "r").status == "failed"


def test_custom_layer_spec_trains(models_root):
    spec = [
        {"type": "Conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "AdaptiveAvgPool2d", "output_size": 4},
        {"type": "Flatten"},
        {"type": "Linear"},
    ]
    result = train(tiny(model="custom", layers=spec, epochs=1), models_root / "c")
    assert result["status"] == "finished"


def test_bf16_autocast_stays_close_to_fp32():
    """A few steps in bf16 land near the fp32 weights: the precision `auto` may pick is safe."""
    from core.models.build import build

    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    losses = {}
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = build("cifar10_quick").to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for _ in range(5):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[dtype] = loss.item()
    assert abs(losses[torch.float32] - losses[torch.bfloat16]) < 0.05 * losses[torch.float32]


def test_lr_schedules():
    assert lr_factor("onecycle", 0, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor("onecycle", 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor("onecycle", 100, 100, 0.1) == pytest.approx(0.0)
    assert lr_factor("cosine", 55, 100, 0.1) == pytest.approx(0.5)
    assert lr_factor("step", 90, 100, 0.0) == pytest.approx(0.01)
    assert lr_factor("constant", 70, 100, 0.0) == 1.0


def test_a_short_run_on_real_cifar10_images_learns(models_root, cifar_slice):
    result = train(
        TrainConfig.for_model(
            "cifar10_quick", data=f"imagefolder:{cifar_slice}", epochs=3, precision="fp32", data_dir=str(models_root.parent / "data")
        ),
        models_root / "real",
    )
    assert result["status"] == "finished"
    assert result["val_acc"] > 0.25, result  # chance is 0.10


def test_truncated_metrics_line_is_ignored(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "status", "status": "running"}\n{"kind": "epoch", "epo')
    records, offset = runs.read_metrics(tmp_path)
    assert len(records) == 1 and offset == len('{"kind": "status", "status": "running"}\n')
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('ch": 1, "test_acc": 0.5}\n')
    more, _ = runs.read_metrics(tmp_path, offset)
    assert more == [{"kind": "epoch", "epoch": 1, "test_acc": 0.5}]


def test_for_model_applies_each_presets_recipe_then_the_overrides():
    from core.models.presets import PRESETS, recipe_for

    for name in PRESETS:
        for device in ("cpu", "cuda"):  # a recipe's "gpu" values apply on a CUDA GPU
            config = TrainConfig.for_model(name, device=device)  # a recipe key that is not a TrainConfig field fails here
            recipe = recipe_for(name, device)
            assert "gpu" not in recipe and {k: getattr(config, k) for k in recipe} == recipe, (name, device)
    assert TrainConfig.for_model("speedrun", lr=0.1, epochs=None).lr == 0.1  # an override wins; None keeps the recipe
    assert TrainConfig.for_model("speedrun", epochs=None).epochs == PRESETS["speedrun"].recipe["epochs"]
    assert TrainConfig.for_model("custom", layers=[{"type": "Linear"}]).optimizer == PRESETS["cifar10_quick"].recipe["optimizer"]


def test_bad_config_values_are_user_errors():
    for bad in (dict(optimizer="lbfgs"), dict(lr=-1.0), dict(epochs=0), dict(schedule="warm"), dict(model="nope")):
        with pytest.raises(PlaygroundError):
            TrainConfig(**bad).validate()
    assert TrainConfig.from_dict(TrainConfig(lr=0.3).to_dict()) == TrainConfig(lr=0.3)


@pytest.mark.parametrize("model", ["cifar10_quick", "speedrun", "resnet18"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_loop_code_follows_the_settings(model, optimizer):
    for loss in losses.LOSSES:
        config = TrainConfig.for_model(
            model, data="shapes:600", epochs=4, optimizer=optimizer, lr=0.02, loss=loss, label_smoothing=0.0, augment=loss != "mse"
        )
        code = loop_code(config)
        compile(code, "loop.py", "exec")  # valid Python for every combination
        assert losses.code(loss) in code and "range(4)" in code and "lr=0.02" in code
        assert ("random_crop(images" in code) == config.augment and f"torch.optim.{'SGD' if optimizer == 'sgd' else 'AdamW'}(" in code


@pytest.mark.slow
def test_the_loop_code_runs_and_learns(models_root, capsys):
    exec(loop_code(tiny(epochs=4, loss="nll")), {})  # noqa: S102 - our own text
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("epoch 4 of 4")
    accuracy = float(lines[-1].rsplit(" ", 1)[1].rstrip("%")) / 100
    assert accuracy > 0.15  # ten classes (chance: 10%); the studio's own trainer gets ~23% from this tiny run
