"""The GPU path (core/fastloop.py): per-device recipes, CUDA graphs, no host syncs in the hot loop, checkpoints in
the background, test-time augmentation levels, and `bench.airbench`'s harness.

Tests marked `needs_cuda` skip without a CUDA GPU; the others run everywhere.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from core.errors import PlaygroundError
from core.insight.predict import Predictor
from core.models.scoring import tta_logits
from core.serving import runs
from core.training.config import TrainConfig
from core.training.fastloop import CheckpointWriter, IntervalReads, ema_update
from core.training.loop import Progress, resume, start, train, train_one_epoch
from core.training.runlog import Dist, RunLog

ROOT = Path(__file__).resolve().parent.parent
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# --------------------------------------------------------------------------- everywhere


def test_presets_pick_batch_size_and_lr_per_device():
    cpu, gpu = TrainConfig.for_model("speedrun", device="cpu"), TrainConfig.for_model("speedrun", device="cuda")
    assert cpu.widths is None and cpu.batch_size == 512 and cpu.lr == pytest.approx(0.75)
    assert gpu.widths == [64, 256, 256] and gpu.batch_size == 1024 and gpu.lr == pytest.approx(1.5)  # airbench94's
    assert TrainConfig.for_model("speedrun", device="cuda", batch_size=256, widths=[32, 64, 64]).batch_size == 256  # yours win
    resnet_gpu, resnet_cpu = TrainConfig.for_model("resnet18", device="cuda"), TrainConfig.for_model("resnet18", device="cpu")
    assert resnet_gpu.batch_size >= 512 and resnet_gpu.lr / resnet_gpu.batch_size == pytest.approx(resnet_cpu.lr / resnet_cpu.batch_size)
    assert "gpu" not in TrainConfig.for_model("speedrun").to_dict()
    with pytest.raises(PlaygroundError, match="only the speedrun preset"):
        TrainConfig.for_model("cifar10_quick", widths=[8, 8, 8]).validate()


def test_the_train_form_shows_both_recipes_and_starts_at_the_chosen_devices(models_root):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from studio.train_form import make_config

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    at.selectbox(key="preset_name").set_value("speedrun")
    at.run()
    note = next(c.value for c in at.caption if "CUDA GPU" in c.value)
    assert "batch 1024" in note and "batch 512" in note and "64/256/256" in note
    at.selectbox(key="hp-speedrun-dev").set_value("cuda")
    at.run()
    assert at.select_slider(key="hp-speedrun-gpu-batch").value == 1024
    assert at.number_input(key="hp-speedrun-gpu-lr").value == pytest.approx(1.5)
    config = make_config({"model": "speedrun"}, "shapes", {"epochs": 10, "device": "cpu"})
    assert config.batch_size == 512 and config.widths is None  # the CPU recipe when the form says cpu


def test_a_wide_speedrun_run_predicts_and_evaluates_as_it_trained(models_root):
    from core.insight.evaluate import evaluate_run

    config = TrainConfig.for_model(
        "speedrun", data="shapes:600", epochs=1, batch_size=100, widths=[8, 16, 16], tta=2, device="cpu", precision="fp32"
    )
    result = train(config, models_root / "r")
    predictor = Predictor.from_run(models_root / "r")
    assert predictor.model.head.in_features == 16 and predictor.tta == 2
    records, _ = runs.read_metrics(models_root / "r")
    assert [r["tta"] for r in records if r["kind"] == "epoch"] == [2]  # the final evaluation is the augmented one
    scored = evaluate_run(models_root / "r", "shapes:600")
    assert abs(scored["accuracy"] - result["val_acc"]) <= 2 / scored["n"]


def test_tta_levels_average_the_documented_views():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x.mean(dim=(2, 3))  # "logits": per-channel means

    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(tta_logits(Recorder(), x, 0), x.mean(dim=(2, 3))) and len(seen) == 1
    seen.clear()
    tta_logits(Recorder(), x, 1)
    assert len(seen) == 2 and torch.equal(seen[1], x.flip(-1))
    seen.clear()
    out = tta_logits(Recorder(), x, 2)
    assert len(seen) == 6
    up_left, down_right = seen[2], seen[4]
    assert torch.equal(up_left[..., 1:, 1:], x[..., :-1, :-1]) and torch.equal(down_right[..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(seen[3], up_left.flip(-1)) and torch.equal(seen[5], down_right.flip(-1))
    means = [v.mean(dim=(2, 3)) for v in seen]
    expected = (means[0] + means[1]) / 4 + (means[2] + means[3] + means[4] + means[5]) / 8
    assert torch.allclose(out, expected, atol=1e-6)


def test_sync_free_ema_matches_averaged_model():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ours = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(4):
        model(torch.randn(8, 3, 6, 6))  # moves the BN statistics
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        theirs.update_parameters(model)
        ema_update(ours, model, 0.9)
    for (k, a), b in zip(theirs.state_dict().items(), ours.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_checkpoint_writer_snapshots_writes_in_order_and_reports_failures(tmp_path):
    written = []

    def slow_write(path, payload):
        time.sleep(0.05)
        written.append((payload["n"], payload["w"].tolist(), threading.current_thread() is not threading.main_thread()))

    writer = CheckpointWriter(slow_write, torch.device("cpu"))
    w = torch.zeros(2)
    for n in range(3):
        writer.save(tmp_path / "c.pt", {"n": n, "w": w})
        w.add_(1)  # training goes on: the checkpoint keeps the weights of the moment it was asked for
    writer.wait()
    assert written == [(0, [0.0, 0.0], True), (1, [1.0, 1.0], True), (2, [2.0, 2.0], True)]

    def full_disk(path, payload):
        raise PlaygroundError("Could not write checkpoint: no space left")

    failing = CheckpointWriter(full_disk, torch.device("cpu"))
    failing.save(tmp_path / "c.pt", {"w": w})
    with pytest.raises(PlaygroundError, match="no space"):
        failing.wait()
    failing.close()
    writer.close()


def test_interval_reads_hand_over_in_order_on_cpu():
    reads = IntervalReads(torch.device("cpu"))
    reads.push(torch.tensor([1.0, 2.0]), {"i": 0})
    reads.push(torch.tensor([3.0, 4.0]), {"i": 1})
    got = list(reads.ready())
    assert [(v, m["i"]) for v, m, _ in got] == [([1.0, 2.0], 0), ([3.0, 4.0], 1)] and all(s >= 0 for _, _, s in got)
    assert list(reads.ready()) == []


FAKE_AIRBENCH = """
import torch
logging_columns_list = ["run   ", "epoch", "val_acc", "tta_val_acc", "total_time_seconds"]

def print_training_details(variables, is_final_entry):
    cells = [str(variables.get(c.strip(), "")).rjust(len(c)) for c in logging_columns_list]
    print("".join("|  %s  " % c for c in cells) + "|")

def main(run):
    data = torch.load("cifar10/train.pt")
    test = torch.load("cifar10/test.pt")
    assert data["images"].dtype == torch.uint8 and data["images"].shape[1:] == (32, 32, 3)  # NHWC, as CifarLoader reads it
    assert len(data["classes"]) == 10 and data["labels"].max() == 9
    epoch, tta_val_acc, total_time_seconds = "eval", 0.5, 1.25
    print_training_details(locals(), is_final_entry=True)
    return len(test["labels"]) / 1000
"""


def test_airbench_harness_prepares_its_data_and_reads_its_own_figures(cifar_slice, tmp_path):
    """bench.airbench on a stand-in with airbench's interface (CifarLoader's files, its table, main(run))."""
    script = tmp_path / "airbench_like.py"
    script.write_text(FAKE_AIRBENCH)
    from bench.airbench import load_script, prepare_data, run_script

    sizes = prepare_data(cifar_slice, tmp_path / "work")
    assert sizes == {"n_train": 2000, "n_test": 400}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path / "work")
        result = run_script(script, runs=2)
    assert result["accs"] == [0.4, 0.4] and result["seconds"] == [1.25, 1.25] and result["runs"] == 2
    assert load_script(script).logging_columns_list[-1] == "total_time_seconds"


def test_bench_gpu_refuses_without_cuda_or_script(tmp_path):
    args = [sys.executable, "-m", "bench", "--gpu", "--data", str(tmp_path), "--airbench", str(tmp_path / "missing.py")]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    if torch.cuda.is_available():
        assert "missing.py" in proc.stderr
    else:
        assert "no CUDA GPU" in proc.stderr or "none is visible" in proc.stderr


# --------------------------------------------------------------------------- on a CUDA GPU


def _gpu_setup(models_root: Path, **overrides):
    base = {"data": "shapes:600", "epochs": 4, "batch_size": 100, "widths": [16, 32, 32], "log_every": 2, "device": "cuda"}
    config = TrainConfig.for_model("speedrun", **{**base, **overrides})
    log = RunLog.open(config, models_root / "r", Dist(), resume=False, started=time.perf_counter())
    where, data, learner, records, stop, _, _ = start(config, log, Dist())
    return learner, (learner, data, where, records, stop)


@needs_cuda
def test_the_step_is_a_cuda_graph_recaptured_when_the_trainable_set_changes(models_root):
    learner, pieces = _gpu_setup(models_root)
    progress = Progress()
    for epoch in range(4):  # speedrun freezes its whitening bias at epoch 3
        progress.epoch, progress.step = epoch, 0
        train_one_epoch(*pieces, progress)
    assert learner.graphed is not None and learner.graphed.captures == 2 and not learner.fallbacks.off
    assert learner.model.whiten.bias.grad is None  # frozen: the second graph computes no gradient for it


@needs_cuda
def test_the_hot_loop_never_waits_for_the_gpu(models_root):
    """A whole epoch (steps, log intervals, the stop check, the scheduler) under sync debug mode "error"."""
    _, pieces = _gpu_setup(models_root, ema=0.9)
    progress = Progress()
    train_one_epoch(*pieces, progress)  # warm-up steps and the capture (which synchronizes, once)
    progress.epoch, progress.step = 1, 0
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_one_epoch(*pieces, progress)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@needs_cuda
def test_graphed_and_eager_training_agree(models_root):
    results = {}
    for graphs in (True, False):
        result = train(
            TrainConfig.for_model(
                "speedrun",
                data="shapes:600",
                epochs=4,
                batch_size=100,
                widths=[16, 32, 32],
                device="cuda",
                precision="fp32",
                cuda_graphs=graphs,
            ),
            models_root / f"g{graphs}",
        )
        records, _ = runs.read_metrics(models_root / f"g{graphs}")
        results[graphs] = ([r["train_loss"] for r in records if r["kind"] == "epoch"], result["val_acc"])
    (loss_g, acc_g), (loss_e, acc_e) = results[True], results[False]
    assert loss_g == pytest.approx(loss_e, rel=0.05) and abs(acc_g - acc_e) <= 0.05


@needs_cuda
def test_stop_and_resume_on_the_gpu_train_every_batch_once(models_root):
    stop = threading.Event()

    def on_record(r):
        if r["kind"] == "step" and r["step"] >= 8:
            stop.set()

    config = TrainConfig.for_model("speedrun", data="shapes:600", epochs=3, batch_size=100, widths=[16, 32, 32], log_every=2, device="cuda")
    assert train(config, models_root / "r", stop_event=stop, on_record=on_record)["status"] == "stopped"
    ckpt = torch.load(models_root / "r" / runs.CHECKPOINT_FILE, weights_only=True)  # no map_location: all on the host
    tensors = [t for t in json_leaves(ckpt) if isinstance(t, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)
    assert resume(models_root / "r")["status"] == "finished"
    assert runs.load_checkpoint(models_root / "r")["global_step"] == 3 * 6


def json_leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from json_leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from json_leaves(v)
    else:
        yield obj
