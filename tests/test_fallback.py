"""An optimisation never ends a run (core/fallback.py): every part of the GPU fast path is made to fail here, on
the CPU, and the run must finish as the plain loop would have, with one plain-words notice of what it went on without.

CUDA graphs and fused optimizer steps are CUDA-only, so `fallback.FAST_DEVICES` turns them on for the CPU and
stand-ins for torch.cuda's streams and graphs let the graphed step run its capture and replay on the CPU.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
import torch

from core.errors import PlaygroundError
from core.serving import runs
from core.training import fallback
from core.training.cli import main
from core.training.config import TrainConfig
from core.training.curves import curves_of
from core.training.fastloop import CheckpointWriter
from core.training.health import check
from core.training.loop import train

ROOT = Path(__file__).resolve().parent.parent


def tiny(**overrides) -> TrainConfig:
    """cifar10_quick (AdamW; no batch norm, so a batch done twice leaves no trace) on 600 shapes: 12 steps, fp32."""
    base = dict(data="shapes:600", epochs=1, batch_size=50, log_every=2, precision="fp32", device="cpu", health=False)
    return TrainConfig.for_model("cifar10_quick", **{**base, **overrides})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`reference(name)`: the run folder of a run without failures, trained once for the module's tests."""
    root, made = tmp_path_factory.mktemp("reference"), {}
    configs = {
        "plain": ((), {}),
        "sgd": ((), {"optimizer": "sgd"}),
        "ema": ((), {"ema": 0.99}),
        "fused": (("cuda", "cpu"), {"cuda_graphs": False}),  # fused AdamW steps on the CPU
    }

    def get(name: str):
        if name not in made:
            devices, overrides = configs[name]
            with pytest.MonkeyPatch.context() as m:
                m.setenv("PLAYGROUND_DATA_DIR", str(root / "data"))
                m.setattr(fallback, "FAST_DEVICES", ("cuda", *devices))
                made[name] = (root / name, train(tiny(**overrides), root / name))
        return made[name]

    return get


def notices(run_dir) -> list[dict]:
    return [r for r in runs.read_metrics(run_dir)[0] if r["kind"] == "notice"]


def weights(run_dir, key: str = "model") -> dict[str, torch.Tensor]:
    return runs.load_checkpoint(run_dir)[key]


def assert_same_weights(a, b, key: str = "model") -> None:
    wa, wb = weights(a, key), weights(b, key)
    assert wa.keys() == wb.keys()
    for k in wa:
        # A step skipped or taken twice moves weights by ~lr (3e-3); the tolerance only allows for thread scheduling.
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=1e-5), k


def assert_finished_with_one_notice(run_dir, what: str, result: dict, steps: int = 12) -> dict:
    assert result["status"] == "finished" and result["val_acc"] is not None
    (notice,) = notices(run_dir)
    assert notice["what"] == what and "switched off for this run" in notice["message"]
    assert runs.run_info(run_dir).switched_off == {what: notice["message"]}
    assert runs.load_checkpoint(run_dir)["global_step"] == steps  # every batch trained once
    return notice


@pytest.fixture
def fast_on_cpu(monkeypatch):
    """CUDA graphs and fused optimizer steps tried on the CPU, as on a GPU."""
    monkeypatch.setattr(fallback, "FAST_DEVICES", ("cuda", "cpu"))


class FakeStream:
    def wait_stream(self, other):
        pass


def fake_cuda_graphs(monkeypatch, *, capture_error=None, replay_error=None):
    """torch.cuda's streams and graphs for the CPU: a 'capture' runs the step for real; a replay only fails.

    So these stand-ins can only show a graph failing (what the tests need), never a graph that trains.
    """

    class FakeGraph:
        def replay(self):
            raise replay_error or AssertionError("a stand-in graph cannot train")

    @contextlib.contextmanager
    def graph(g, **kwargs):
        yield  # the body runs: on a GPU it would only be recorded
        if capture_error is not None:
            raise capture_error  # as torch.cuda.graph's exit, where capture errors surface

    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)


# --------------------------------------------------------------------------- CUDA graphs


@pytest.mark.parametrize(
    "where",
    ["construction", "capture", "first replay"],
)
def test_a_failing_cuda_graph_is_switched_off_and_the_run_trains_as_without_it(
    models_root, reference, fast_on_cpu, monkeypatch, capsys, where
):
    plain_dir, plain = reference("fused")
    if where == "construction":

        def no_stream(*args, **kwargs):
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")

        monkeypatch.setattr(torch.cuda, "Stream", no_stream)
    else:
        error = RuntimeError("operation not permitted when stream is capturing")
        fake_cuda_graphs(monkeypatch, **{"capture_error" if where == "capture" else "replay_error": error})
    result = train(tiny(), models_root / "r")
    notice = assert_finished_with_one_notice(models_root / "r", "cuda_graphs", result)
    assert notice["message"].startswith("CUDA graphs were switched off for this run: ")
    assert "(RuntimeError)" in notice["message"] and "It continues with the plain step" in notice["message"]
    assert capsys.readouterr().err.count("CUDA graphs were switched off") == 1  # the command line says it too
    assert_same_weights(models_root / "r", plain_dir)  # the failed batch was trained once, plainly
    assert abs(result["val_acc"] - plain["val_acc"]) <= 0.002


def test_out_of_memory_while_capturing_stays_out_of_memory(models_root, fast_on_cpu, monkeypatch):
    fake_cuda_graphs(monkeypatch, capture_error=torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    with pytest.raises(PlaygroundError, match="Out of memory at batch size 50"):
        train(tiny(), models_root / "r")
    assert runs.run_info(models_root / "r").status == "failed" and not notices(models_root / "r")


# --------------------------------------------------------------------------- torch.compile


class FakeCompiled(torch.nn.Module):
    """What torch.compile returns (the model as `_orig_mod`), failing as asked on its first call."""

    def __init__(self, model, fail):
        super().__init__()
        self._orig_mod = model
        self.fail = fail
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.fail == "forward":
            raise RuntimeError("backend='inductor' raised:\nCppCompileError: C++ compile error")
        out = self._orig_mod(x)
        if self.fail == "backward":  # inductor compiles the backward graph at the first backward

            def fail(grad):
                raise RuntimeError("backend='inductor' raised: InvalidCxxCompiler: No working C++ compiler found")

            out.register_hook(fail)
        return out


@pytest.mark.parametrize("where", ["construction", "forward", "backward"])
def test_a_failing_torch_compile_is_switched_off_and_the_run_trains_as_without_it(models_root, reference, monkeypatch, where):
    plain_dir, plain = reference("plain")
    made = []

    def compile_(model, *args, **kwargs):
        if where == "construction":
            raise RuntimeError("torch.compile is not supported on Python 3.14+")
        made.append(FakeCompiled(model, where))
        return made[-1]

    monkeypatch.setattr(torch, "compile", compile_)
    result = train(tiny(compile=True), models_root / "r")
    notice = assert_finished_with_one_notice(models_root / "r", "compile", result)
    assert notice["message"].startswith("torch.compile was switched off for this run: ")
    assert made == [] if where == "construction" else made[0].calls == 1  # never called again once it failed
    assert_same_weights(models_root / "r", plain_dir)
    assert abs(result["val_acc"] - plain["val_acc"]) <= 0.002


@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_under_ddp_the_compiled_module_is_swapped_inside_the_same_wrapper():
    """torchrun: the eager model goes into the existing DistributedDataParallel (no new wrapper, no collective)."""
    import types

    from torch import distributed as dist
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(FakeCompiled(model, "forward"))
        s = types.SimpleNamespace(graphed=None, step_model=ddp, fallbacks=fallback.Fallbacks())

        def plain(s, x, y):
            loss = nn.functional.cross_entropy(s.step_model(x), y)
            optimizer.zero_grad()
            loss.backward()  # through DDP's reducer
            return loss, None

        x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        for _ in range(2):
            fallback.forward_backward(s, x, y, plain)
            optimizer.step()
    finally:
        dist.destroy_process_group()
    assert s.step_model is ddp and ddp.module is model and model[1].weight.grad.abs().sum() > 0
    assert s.fallbacks.off == {"compile": "backend='inductor' raised: CppCompileError: C++ compile error (RuntimeError)"}


def test_a_compiled_step_that_fails_plainly_too_is_the_runs_own_error(models_root, monkeypatch):
    """The plain path has the last word: a bug the eager model meets as well ends the run, with no notice."""
    from core.models.build import build as real_build

    def buggy_build(*args, **kwargs):
        model = real_build(*args, **kwargs)

        def forward(x):
            raise ValueError("a bug in the model")

        model.forward = forward
        return model

    monkeypatch.setattr("core.training.parts.build", buggy_build)
    monkeypatch.setattr(torch, "compile", lambda model, **kw: FakeCompiled(model, "forward"))
    with pytest.raises(ValueError, match="a bug in the model"):
        train(tiny(compile=True), models_root / "r")
    assert runs.run_info(models_root / "r").message == "ValueError: a bug in the model" and not notices(models_root / "r")


# --------------------------------------------------------------------------- fused optimizer steps


def half_applied():
    """A fused kernel that updates its first tensor, then fails: a step that stopped part-way."""

    def kernel(params, *args, **kwargs):
        with torch.no_grad():
            params[0].add_(1.0)
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    return kernel


@pytest.mark.parametrize("optimizer, kernel", [("sgd", "_fused_sgd_"), ("adamw", "_fused_adamw_")])
def test_a_fused_step_that_fails_part_way_is_undone_and_taken_plainly(models_root, reference, fast_on_cpu, monkeypatch, optimizer, kernel):
    unfused_dir, unfused = reference("sgd" if optimizer == "sgd" else "plain")
    monkeypatch.setattr(torch, kernel, half_applied())
    result = train(tiny(optimizer=optimizer, cuda_graphs=False), models_root / "r")
    notice = assert_finished_with_one_notice(models_root / "r", "fused_optimizer", result)
    assert notice["message"].startswith("The fused optimizer step was switched off for this run: CUDA error: no kernel image")
    assert_same_weights(models_root / "r", unfused_dir)  # not the half step, and not a step twice
    assert abs(result["val_acc"] - unfused["val_acc"]) <= 0.002
    state = runs.load_checkpoint(models_root / "r")["optimizer"]
    assert all(group["fused"] is None for group in state["param_groups"])
    if optimizer == "adamw":  # Adam counts its steps: 12, not 13
        assert {float(s["step"]) for s in state["state"].values()} == {12.0}


def test_a_fused_optimizer_that_cannot_be_made_is_replaced_by_the_plain_one(models_root, reference, fast_on_cpu, monkeypatch):
    from core.training import parts as train_module

    real = train_module.make_optimizer

    def make_optimizer(model, config, *, fused=False):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(model, config)

    monkeypatch.setattr(train_module, "make_optimizer", make_optimizer)
    result = train(tiny(cuda_graphs=False), models_root / "r")
    assert_finished_with_one_notice(models_root / "r", "fused_optimizer", result)
    assert_same_weights(models_root / "r", reference("plain")[0])


# --------------------------------------------------------------------------- the EMA


def test_a_failing_sync_free_ema_is_undone_and_replaced_by_averaged_models_own(models_root, reference, monkeypatch):
    plain_dir, plain = reference("ema")
    real = fallback.ema_update

    def broken(ema, model, decay):
        real(ema, model, decay)  # applied, and then some: only a restored copy gets the EMA right
        with torch.no_grad():
            for p in ema.module.parameters():
                p.add_(1.0)
        raise RuntimeError("_foreach_lerp_: no kernel for this dtype")

    monkeypatch.setattr(fallback, "ema_update", broken)
    result = train(tiny(ema=0.99), models_root / "r")
    assert_finished_with_one_notice(models_root / "r", "fast_ema", result)
    ckpt = runs.load_checkpoint(models_root / "r")
    assert int(ckpt["ema"]["n_averaged"]) == 12  # the failed update was undone, not counted twice
    for k, v in weights(plain_dir).items():  # AveragedModel's update and ours agree to float rounding
        assert torch.allclose(ckpt["model"][k], v, atol=1e-5), k
    assert abs(result["val_acc"] - plain["val_acc"]) <= 0.01


# --------------------------------------------------------------------------- background checkpoint writes


def test_a_background_checkpoint_write_that_fails_is_written_in_the_foreground(models_root, reference, monkeypatch):
    real = runs.save_checkpoint

    def save_checkpoint(path, payload):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("CUDA error: invalid resource handle")  # what a thread of its own met, not the disk
        real(path, payload)

    monkeypatch.setattr(runs, "save_checkpoint", save_checkpoint)
    result = train(tiny(epochs=2), models_root / "r")  # two checkpoints: the second written in the foreground
    notice = assert_finished_with_one_notice(models_root / "r", "background_checkpoints", result, steps=24)
    assert "checkpoints written while training waits" in notice["message"]
    assert runs.load_checkpoint(models_root / "r")["epoch"] == 2


def test_checkpoint_writer_falls_back_in_order_and_keeps_the_disks_own_errors(tmp_path):
    written, told = [], []

    def write(path, payload):
        if payload["n"] == 0 and threading.current_thread() is not threading.main_thread():
            raise RuntimeError("pinned memory: invalid argument")
        written.append((path.name, payload["n"]))

    writer = CheckpointWriter(write, torch.device("cpu"), told.append)
    gate = threading.Event()
    writer._pool.submit(gate.wait)  # hold the thread so that both saves are queued behind the failing one
    writer.save(tmp_path / "c.pt", {"n": 0})
    writer.save(tmp_path / "c.pt", {"n": 1})
    gate.set()
    writer.wait()
    assert written[-1] == ("c.pt", 1) and ("c.pt", 0) not in written  # the file ends with the newest checkpoint
    assert len(told) == 1 and not writer.background
    writer.save(tmp_path / "c.pt", {"n": 2})  # from now on in the foreground: written before save returns
    assert written[-1] == ("c.pt", 2)
    writer.close()

    def full_disk(path, payload):
        raise PlaygroundError("Could not write checkpoint: no space left")

    told.clear()
    failing = CheckpointWriter(full_disk, torch.device("cpu"), told.append)
    failing.save(tmp_path / "c.pt", {"n": 0})
    with pytest.raises(PlaygroundError, match="no space"):
        failing.wait()
    failing.close()

    def broken_everywhere(path, payload):
        raise RuntimeError("disk on fire")

    broken = CheckpointWriter(broken_everywhere, torch.device("cpu"), told.append)
    broken.save(tmp_path / "c.pt", {"n": 0})
    with pytest.raises(RuntimeError, match="disk on fire"):  # the foreground write failed as well: not the thread's fault
        broken.wait()
    broken.close()
    assert told == []

    shut = CheckpointWriter(write, torch.device("cpu"), told.append)
    shut._pool.shutdown()  # "cannot schedule new futures after shutdown"
    shut.save(tmp_path / "d.pt", {"n": 3})
    assert written[-1] == ("d.pt", 3) and len(told) == 1
    shut.close()


# --------------------------------------------------------------------------- what is not an optimisation's failure


def test_out_of_memory_a_nan_loss_and_stop_keep_their_own_handling_on_the_fast_path(models_root, fast_on_cpu, monkeypatch):
    """With a (working) compiled model, fused steps, the sync-free EMA and background checkpoints all on."""
    monkeypatch.setattr(torch, "compile", lambda model, **kw: FakeCompiled(model, None))
    fast = dict(compile=True, cuda_graphs=False, ema=0.9)

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as m:
        m.setattr(torch, "_fused_sgd_", oom)
        with pytest.raises(PlaygroundError, match="Out of memory at batch size 50"):
            train(tiny(optimizer="sgd", **fast), models_root / "oom-step")
    with monkeypatch.context() as m:
        m.setattr(FakeCompiled, "forward", lambda self, x: oom())
        with pytest.raises(PlaygroundError, match="Out of memory at batch size 50"):
            train(tiny(optimizer="sgd", **fast), models_root / "oom-forward")

    assert train(tiny(optimizer="sgd", lr=1e8, **fast), models_root / "nan")["status"] == "diverged"

    stop = threading.Event()
    stopped = train(tiny(**fast), models_root / "stop", stop_event=stop, on_record=lambda r: r["kind"] == "step" and stop.set())
    assert stopped["status"] == "stopped"
    for run in ("oom-step", "oom-forward", "nan", "stop"):
        assert not notices(models_root / run), run


# --------------------------------------------------------------------------- where the notice shows


def test_the_command_line_says_it_once_and_every_reader_takes_the_record(models_root, monkeypatch, capsys):
    def compile_(model, *args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", compile_)
    args = ["--model", "cifar10_quick", "--data", "shapes:600", "--epochs", "1", "--batch-size", "50", "--compile"]
    assert main([*args, "--out", str(models_root / "r")]) == 0
    line = "torch.compile was switched off for this run: Dynamo is not supported on this Python (RuntimeError)."
    assert capsys.readouterr().err.count(line) == 1
    records, _ = runs.read_metrics(models_root / "r")
    assert runs.summarize(records)["switched_off"] == {"compile": next(r["message"] for r in records if r["kind"] == "notice")}
    assert list(curves_of(records).notices) == ["compile"]
    others = [r for r in records if r["kind"] != "notice"]
    assert check(records, num_classes=10) == check(others, num_classes=10)  # the health rules read past it


def test_the_train_page_shows_the_notice_once_by_the_runs_status(models_root, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(torch, "compile", lambda model, **kw: FakeCompiled(model, "forward"))
    train(tiny(compile=True, epochs=1), models_root / "r")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [i.value for i in at.info if "switched off" in i.value]
    assert len(shown) == 1 and shown[0].startswith("torch.compile was switched off for this run: backend='inductor' raised:")
    assert "Finished" in at.success[0].value
