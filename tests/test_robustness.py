"""Hostile and concurrent use: random layer specs, parallel runs, restarts, run listing while writing."""

from __future__ import annotations

import json
import time

import pytest
import torch
from conftest import start_trainer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import PlaygroundError
from core.models.layers import LAYER_OPTIONS, build_from_spec
from core.serving import runs
from core.serving.jobs import JobRegistry
from core.training.config import TrainConfig

# Mostly plausible values (so many specs build and run), sometimes garbage (so errors are explored too).
PLAUSIBLE = {
    "out_channels": st.integers(1, 8),
    "kernel_size": st.integers(1, 5),
    "stride": st.integers(1, 3),
    "padding": st.integers(0, 2),
    "dilation": st.integers(1, 2),
    "bias": st.booleans(),
    "output_size": st.integers(1, 4),
    "p": st.floats(0, 0.9),
    "out_features": st.integers(1, 16),
}
GARBAGE = st.one_of(
    st.integers(-3, 0),
    st.none(),
    st.floats(-1, 2),
    st.just(float("nan")),
    st.text(max_size=3),
    st.just("num_classes"),
    st.lists(st.integers(0, 3), max_size=2),
    st.integers(50, 10**6),
)


@st.composite
def layer(draw):
    kinds = sorted(LAYER_OPTIONS)
    kind = draw(st.sampled_from(kinds + kinds + ["Conv3d", 7, None]))
    if not isinstance(kind, str) or kind not in LAYER_OPTIONS:
        return {"type": kind}
    entry = {"type": kind}
    if kind == "Conv2d":
        entry["out_channels"] = draw(PLAUSIBLE["out_channels"])
    for key in draw(st.lists(st.sampled_from(list(LAYER_OPTIONS[kind]) + ["bogus"]), max_size=3, unique=True)):
        plausible = PLAUSIBLE.get(key)
        entry[key] = draw(GARBAGE if plausible is None or draw(st.integers(0, 9)) == 0 else plausible)
    return entry


@st.composite
def spec(draw):
    body = draw(st.lists(layer(), max_size=5))
    if draw(st.integers(0, 9)) < 7:  # most real stacks end in Flatten + Linear
        body += [{"type": "Flatten"}, {"type": "Linear"}]
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=spec(), side=st.integers(1, 40), channels=st.integers(1, 4), classes=st.integers(1, 12))
def test_any_spec_gives_a_model_or_a_clear_spec_error(spec, side, channels, classes):
    try:
        model = build_from_spec(spec, num_classes=classes, input_shape=(channels, side, side))
    except PlaygroundError as exc:
        message = str(exc)
        assert message and "\n" not in message
        return
    out = model(torch.zeros(2, channels, side, side))
    assert out.shape == (2, classes)


def tiny_config(**kw) -> TrainConfig:
    return TrainConfig.for_model("cifar10_quick", data="shapes:400", epochs=kw.pop("epochs", 2), batch_size=50, precision="fp32", **kw)


def wait_until_done(registry: JobRegistry, run_dir, timeout: float = 240) -> runs.RunInfo:
    deadline = time.time() + timeout
    while time.time() < deadline:
        registry.poll()
        info = runs.run_info(run_dir)
        if info.status not in ("queued", "running"):
            return info
        time.sleep(0.3)
    raise AssertionError(f"{run_dir} still running after {timeout}s")


def test_two_sessions_starting_at_once_get_separate_uncorrupted_runs(models_root):
    registry_a, registry_b = JobRegistry(models_root), JobRegistry(models_root)  # two app sessions
    try:
        first = registry_a.start(tiny_config())
        second = registry_b.start(tiny_config(seed=1))  # never refused: it waits its turn (one run per CPU)
        assert first != second and first.parent == second.parent == models_root
        # While they train, listing never shows them as broken, and never both training at once.
        seen = set()
        while True:
            statuses = {r.run_id: r.status for r in runs.list_runs(models_root)}
            seen |= set(statuses.values())
            assert list(statuses.values()).count("running") <= 1, statuses
            if all(s not in ("queued", "running") for s in statuses.values()):
                break
            time.sleep(0.2)
        assert seen <= {"queued", "running", "finished"}, seen
        for run_dir in (first, second):
            info = wait_until_done(registry_a, run_dir)
            assert info.status == "finished", (info.status, info.message, (run_dir / "train.log").read_text()[-2000:])
            for line in (run_dir / "metrics.jsonl").read_text().splitlines():
                json.loads(line)  # every line is whole JSON: no interleaved writes
            assert len([r for r in info.records if r["kind"] == "epoch"]) == 2
    finally:
        registry_a.close()
        registry_b.close()


def test_stop_from_the_app_then_resume(models_root, request):
    registry = JobRegistry(models_root)
    request.addfinalizer(registry.close)
    run_dir = registry.start(tiny_config(epochs=40))
    deadline = time.time() + 120
    while time.time() < deadline and not any(r["kind"] == "step" for r in runs.read_metrics(run_dir)[0]):
        time.sleep(0.2)
    registry.stop(run_dir)
    info = wait_until_done(registry, run_dir)
    assert info.status == "stopped" and info.resumable
    registry.resume(run_dir)
    time.sleep(0.5)
    assert runs.run_info(run_dir).status in ("queued", "running")
    registry.stop(run_dir)
    assert wait_until_done(registry, run_dir).status == "stopped"


def test_an_app_restart_marks_dead_runs_interrupted(models_root):
    """A run whose process died (app restart, kill) is listed as interrupted and resumable, not as running."""
    run_dir = models_root / "orphan"
    proc = start_trainer(run_dir, "shapes:400", epochs=50)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoint.pt").exists():
        time.sleep(0.2)
    assert runs.run_info(run_dir).status == "running"
    proc.kill()
    proc.wait()
    info = runs.list_runs(models_root)[0]  # what a freshly started app sees
    assert info.status == "interrupted" and info.resumable and "resume" in info.message.lower()


def test_delete_refuses_paths_outside_the_models_folder(models_root, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    with pytest.raises(PlaygroundError, match="not a run folder inside"):
        runs.delete_run(outside, root=models_root)
    assert outside.exists()
