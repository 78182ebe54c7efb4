"""Shared mode on the pages (Streamlit's AppTest): a workspace per browser, only your own runs,
the operator's view, server paths off, and a queued run's place in line on the Train page."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.serving import runs
from core.serving.shared import WORKSPACE_PATTERN
from core.training.config import TrainConfig
from core.training.loop import train

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
TOKEN = "operator-token-for-tests"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A shared studio with one finished run of workspace 'alice-1' and one from before shared mode."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs, "MODELS_DIR", root)
        mp.setenv("PLAYGROUND_MODELS_DIR", str(root))
        mp.setenv("PLAYGROUND_SHARED", "1")
        mp.setenv("PLAYGROUND_WARM_WORKER", "0")
        mp.setenv("PLAYGROUND_OPERATOR_TOKEN", TOKEN)
        config = TrainConfig.for_model("cifar10_quick", data="shapes:200", epochs=1, batch_size=50, precision="fp32")
        alice = root / "20260101-000000-alice"
        alice.mkdir()
        with open(alice / runs.METRICS_FILE, "w") as f:  # what the queue writes when alice-1 presses Start
            f.write(
                json.dumps({"kind": "status", "status": "queued", "workspace": "alice-1", "queued_at": time.time(), "time": time.time()})
                + "\n"
            )
        train(config, alice)
        train(config, root / "20260101-000001-before")
        yield {"root": root, "alice": alice, "before": root / "20260101-000001-before"}


def open_page(page: str, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    if page != "pages/home.py":
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def run_choices(at: AppTest) -> set[str]:
    return set(at.dataframe[0].value["run id"])  # the Runs page's table of the runs this session sees


def sidebar_text(at: AppTest) -> str:
    return " ".join(m.value for m in at.sidebar.markdown) + " ".join(c.value for c in at.sidebar.caption)


def test_a_new_browser_gets_a_workspace_code_it_can_come_back_with(shared):
    at = open_page("pages/home.py")
    code = at.query_params["ws"][0] if isinstance(at.query_params["ws"], list) else at.query_params["ws"]
    assert WORKSPACE_PATTERN.match(code)
    assert code in sidebar_text(at) and "Bookmark this page" in sidebar_text(at)
    again = open_page("pages/home.py", ws=code)  # a reload: the address keeps the code
    assert code in sidebar_text(again)


def test_a_workspace_lists_only_its_own_runs(shared):
    alice = open_page("pages/runs.py", ws="alice-1")
    assert run_choices(alice) == {shared["alice"].name}
    assert "1 of 30 runs" in sidebar_text(alice)
    bob = open_page("pages/runs.py", ws="bob-22")
    assert any("No runs yet" in i.value for i in bob.info)
    bob_train = open_page("pages/train.py", ws="bob-22")
    assert not bob_train.get("selectbox") or all(shared["alice"].name not in str(s.options) for s in bob_train.selectbox)


def test_the_operator_sees_every_workspace(shared):
    at = open_page("pages/runs.py", operator=TOKEN)
    assert "operator" not in at.query_params  # the token leaves the address bar at once
    assert run_choices(at) == {shared["alice"].name, shared["before"].name}
    assert any("operator view" in h.value for h in at.subheader)
    assert "Operator" in sidebar_text(at)
    wrong = open_page("pages/runs.py", operator="guess", ws="bob-22")
    assert any("No runs yet" in i.value for i in wrong.info)


def test_server_paths_and_pickles_are_off(shared):
    at = open_page("pages/train.py", ws="alice-1")
    assert "folder" not in at.segmented_control(key="data_kind").options
    assert [b.label for b in at.get("download_button") if "Whole model" in b.label] == []
    assert any("state_dict" in b.label for b in at.get("download_button"))  # the safe export stays
    at.segmented_control(key="model_kind").set_value("pretrained").run()
    weights = next(s for s in at.selectbox if s.label == "Start from weights")
    assert "file" not in weights.options


def test_a_queued_run_shows_its_place_and_leaves_the_queue_on_stop(shared):
    busy = shared["root"] / "20260101-000002-busy"  # someone else's run holds the CPU (this process, alive)
    busy.mkdir()
    runs.write_json(busy / runs.CONFIG_FILE, {**TrainConfig().to_dict(), "run_id": busy.name, "env": {"device": "cpu"}})
    with open(busy / runs.METRICS_FILE, "w") as f:
        f.write(
            json.dumps(
                {
                    "kind": "status",
                    "status": "running",
                    "pid": os.getpid(),
                    "host": os.uname().nodename,
                    "workspace": "dave-44",
                    "time": time.time(),
                }
            )
            + "\n"
        )
    try:
        at = open_page("pages/train.py", ws="carol-3")
        at.number_input(key="hp-cifar10_quick-epochs").set_value(1).run()
        next(b for b in at.button if b.label == "Start training").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        (mine,) = runs.list_runs(shared["root"], "carol-3")
        assert mine.status == "queued"
        assert any("Waiting in the queue" in i.value and "next" in i.value for i in at.info), [i.value for i in at.info]
        next(b for b in at.button if b.label.startswith("Stop (leave the queue)")).click().run()
        assert runs.run_info(mine.path).status == "stopped"
        assert any("Removed from the queue" in w.value for w in at.warning)
    finally:
        with open(busy / runs.METRICS_FILE, "a") as f:
            f.write(json.dumps({"kind": "status", "status": "finished", "time": time.time()}) + "\n")
