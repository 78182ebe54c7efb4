"""The command-line contract of DESIGN.md, run as real subprocesses (and killed like real ones)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import start_trainer
from PIL import Image

from core.serving import runs

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env_extra: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    done = cli(
        "core.train",
        "--model",
        "cifar10_quick",
        "--data",
        "shapes:500",
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--seed",
        "3",
        "--out",
        str(out),
        "--name",
        "shapes baseline",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is exactly one JSON document
    assert set(result) >= {"run_dir", "epochs", "val_acc", "train_img_per_s", "seconds"}
    assert result["run_dir"] == str(out) and result["epochs"] == 2 and 0 <= result["val_acc"] <= 1
    assert "epoch 2:" in done.stderr  # progress goes to stderr
    # 2,000 test images mean something: no caveat
    assert result["test_split_warning"] is None and not any(line.startswith("warning:") for line in done.stderr.splitlines())
    assert runs.run_info(out).name == "shapes baseline"  # --name lands in meta.json, config.json stays the trainer's
    return out


def test_train_then_resume_to_more_epochs_is_a_no_op_when_done(trained_run):
    done = cli("core.train", "--resume", str(trained_run))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epochs"] == 2


def test_evaluate(trained_run):
    done = cli("core.evaluate", str(trained_run), "--data", "shapes:500")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 2000 and set(result["per_class"]) == {
        "circle",
        "ring",
        "square",
        "triangle",
        "star",
        "cross",
        "stripes",
        "checker",
        "dots",
        "crescent",
    }
    config = json.loads((trained_run / "config.json").read_text())
    records, _ = runs.read_metrics(trained_run)
    last_epoch = [r for r in records if r["kind"] == "epoch"][-1]
    assert result["accuracy"] == pytest.approx(last_epoch["test_acc"])  # same preprocessing as in training
    assert config["seed"] == 3


def test_evaluate_lists_the_worst_mistakes_and_most_confused_pairs(trained_run):
    done = cli("core.evaluate", str(trained_run), "--data", "shapes:500", "--mistakes", "5")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    wrong = result["n"] - sum(result["confusion"][i][i] for i in range(len(result["confusion"])))
    assert len(result["mistakes"]) == min(5, wrong)
    assert all(set(m) == {"index", "true", "pred", "prob", "loss"} and m["true"] != m["pred"] for m in result["mistakes"])
    assert [m["loss"] for m in result["mistakes"]] == sorted((m["loss"] for m in result["mistakes"]), reverse=True)
    assert sum(p["count"] for p in result["most_confused"]) == wrong
    assert cli("core.evaluate", str(trained_run), "--data", "shapes:500", "--mistakes", "-1").returncode != 0


def test_predict_gives_topk_per_file_and_errors_per_bad_file(trained_run, tmp_path):
    good = tmp_path / "circle.png"
    Image.new("RGB", (64, 48), "white").save(good)
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    done = cli("core.predict", str(trained_run), str(good), str(bad), str(tmp_path / "missing.png"), "--topk", "3")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["file"] for r in result] == [str(good), str(bad), str(tmp_path / "missing.png")]
    assert len(result[0]["top"]) == 3 and result[0]["top"][0]["prob"] >= result[0]["top"][1]["prob"]
    assert "error" in result[1] and "error" in result[2]
    again = json.loads(cli("core.predict", str(trained_run), str(good)).stdout)
    assert again[0]["top"][0] == result[0]["top"][0]  # deterministic preprocessing


def test_a_tiny_image_folder_says_in_the_progress_and_the_run_records_that_its_test_accuracy_means_little(tmp_path):
    """Issue #18: 20 cats and 20 dogs trained from the command line were tested on 6 images and printed val_acc 0.333
    with no warning; the page warned, the command line and the run records did not."""
    rng = np.random.default_rng(0)
    for cls, hue in (("cat", 40), ("dog", 200)):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for i in range(20):
            pixels = np.clip(rng.normal(hue, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / cls / f"{i:02d}.png")
    out = tmp_path / "run"
    done = cli(
        "core.train",
        *("--model", "cifar10_quick", "--data", f"imagefolder:{tmp_path / 'pets'}", "--epochs", "2", "--batch-size", "8"),
        *("--out", str(out)),
        env_extra={"PLAYGROUND_DATA_DIR": str(tmp_path / "data")},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) >= {"run_dir", "epochs", "val_acc", "train_img_per_s", "seconds"}  # the contract's keys stay
    said = "6 test images: each one is 17 points of accuracy"
    assert result["test_split_warning"].startswith(said)
    lines = done.stderr.strip().splitlines()
    assert lines[-2] == "finished" and lines[-1] == f"warning: {result['test_split_warning']}"  # beside the result
    assert f"warning: {said}" in lines[1] and lines[0] == "running"  # and as training starts
    assert all("(of 6 images)" in line for line in lines if line.startswith("epoch "))
    config = runs.read_config(out)
    assert config["dataset"]["test_split_warning"] == result["test_split_warning"]  # where pages and exports read it
    running = next(r for r in runs.read_metrics(out)[0] if r.get("status") == "running")
    assert running["n_test"] == 6 and running["test_split_warning"] == result["test_split_warning"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["core.train", "--model", "cifar10_quick"], "--model and --data are required"),
        (["core.train", "--model", "nope", "--data", "shapes"], "Unknown model 'nope'"),
        (["core.train", "--model", "cifar10_quick", "--data", "imagefolder:/nope"], "does not exist"),
        (["core.train", "--model", "custom", "--layers", '[{"type": "Linear"}]', "--data", "shapes:100"], "needs a flat input"),
        (["core.train", "--resume", "/nonexistent/run"], "is not a run folder"),
        (["core.train", "--model", "cifar10_quick", "--data", "shapes:100", "--name", "x" * 41], "short name"),
        (["core.evaluate", "/nonexistent/run", "--data", "shapes"], "no checkpoint"),
        (["core.predict", "/nonexistent/run", "x.png"], "no checkpoint"),
    ],
)
def test_user_errors_are_one_line_and_non_zero(args, message, tmp_path):
    done = cli(*args, env_extra={"PLAYGROUND_MODELS_DIR": str(tmp_path)})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and message in lines[-1], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_sigkill_mid_epoch_leaves_a_resumable_run(tmp_path):
    """Kill -9 the trainer mid-epoch: the folder stays readable and --resume loses at most that epoch."""
    out = tmp_path / "killed"
    proc = start_trainer(out, "shapes:1000", epochs=4)
    deadline = time.time() + 240
    while time.time() < deadline:
        records, _ = runs.read_metrics(out)
        epochs = [r for r in records if r["kind"] == "epoch"]
        if epochs and any(r["kind"] == "step" and r["epoch"] == 1 for r in records):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    info = runs.run_info(out)
    assert info.status == "interrupted" and info.resumable and info.epochs_done >= 1
    done = cli("core.train", "--resume", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epochs"] == 4
    records, _ = runs.read_metrics(out)
    numbers = [r["epoch"] for r in records if r["kind"] == "epoch"]
    assert numbers[-1] == 4 and sorted(set(numbers)) == [1, 2, 3, 4]
    assert runs.run_info(out).status == "finished"


def test_sigterm_records_interrupted_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "term"
    proc = start_trainer(out, "shapes:2000", epochs=20)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    info = runs.run_info(out)
    assert info.status == "interrupted" and info.has_checkpoint and info.resumable


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_evaluate_scores_a_run_as_its_training_did_in_either_precision(precision, tmp_path):
    """One test accuracy everywhere: the run's own test pass, `core.evaluate` and the studio's mistakes view agree
    to the image, whether the run trained in bf16 autocast (what `auto` picks on AMX / AVX512-BF16 CPUs) or fp32.
    Both paths are forced here, so every CPU runs both. A barely trained model has near-tied logits: the case
    where bf16 and fp32 scoring disagree."""
    from core.insight.evaluate import evaluate_run, predict_split, run_test_split
    from core.insight.predict import Predictor
    from core.training.config import TrainConfig
    from core.training.loop import train

    config = TrainConfig.for_model("cifar10_quick", data="shapes:500", epochs=2, batch_size=50, seed=3, precision=precision, tta=1)
    result = train(config, tmp_path / "run")
    trained = result["val_acc"]
    assert runs.read_config(tmp_path / "run")["env"]["eval_precision"] == "fp32"  # scored in fp32 on a CPU
    assert evaluate_run(tmp_path / "run", "shapes:500")["accuracy"] == trained
    predictor = Predictor.from_run(tmp_path / "run")
    split, classes = run_test_split(tmp_path / "run", predictor)
    assert predict_split(predictor, split, classes).summary()["accuracy"] == trained
