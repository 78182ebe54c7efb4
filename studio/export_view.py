"""The run's downloads: plain state_dict + JSON, training script, notebook, ONNX, whole-model pickle.

One panel, shown under a finished run on the Train page and on the Runs page. Every file is made
only when its button is pressed (Streamlit calls the data function then), so an unopened export
costs nothing; the ONNX exporter's packages are imported only at that moment.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from core.export import formats as export
from core.serving import runs
from core.serving.runs import RunInfo
from studio import workspace

NETRON_URL = "https://netron.app"


def _whole_model_bytes(run_dir: Path) -> bytes:
    from core.insight.predict import Predictor

    return runs.whole_model_bytes(Predictor.from_run(run_dir).model)


def downloads(info: RunInfo, key: str = "run") -> None:
    """Download buttons for a run with a checkpoint, and how to load what they give."""
    run_id, run_dir = info.run_id, info.path
    model = str(info.config.get("model", "model"))
    script_name = export.script_filename(info.config)
    shared = workspace.settings().shared
    st.markdown("##### Take it with you", help="The same files as `python -m core.export RUN_DIR --format ...`.")
    # (label, bytes, file name, mime, icon, key suffix, help): one download button each, in this order
    buttons = [
        (
            "Weights (state_dict .pt)",
            lambda: runs.state_dict_bytes(run_dir),
            f"{run_id}.pt",
            "application/octet-stream",
            ":material/download:",
            "pt",
            "Exactly model.state_dict(): tensors only, loads with torch.load(path, weights_only=True).",
        ),
        (
            "Classes + normalization (.json)",
            lambda: _info_json(run_dir),
            f"{run_id}.json",
            "application/json",
            ":material/download:",
            "json",
            "What the weights need beside them: architecture, class names, mean/std, input size. "
            "The Predict page takes the .pt and this file together.",
        ),
        (
            "Training script (.py)",
            lambda: export.export_script(run_dir),
            script_name,
            "text/x-python",
            ":material/code:",
            "script",
            "This run's recipe as one plain PyTorch script (torch, torchvision, numpy, Pillow only): data, DataLoader, model, "
            f"loss, optimizer, train, test, save. python {script_name} --epochs 5 --data shapes",
        ),
        (
            "Notebook (.ipynb)",
            lambda: export.export_notebook(run_dir),
            Path(script_name).with_suffix(".ipynb").name,
            "application/x-ipynb+json",
            ":material/menu_book:",
            "notebook",
            "The same code as the script, in Jupyter cells, with an explanation before each step.",
        ),
        (
            "ONNX (.onnx)",
            lambda: export.onnx_bytes(run_dir),
            f"{run_id}.onnx",
            "application/octet-stream",
            ":material/account_tree:",
            "onnx",
            "The model for other runtimes (onnxruntime, TensorRT, browsers), any batch size; "
            "checked against PyTorch when it is made (takes a few seconds).",
        ),
    ]
    if not shared:  # a pickle runs code when loaded: a shared server does not hand them out
        buttons.append(
            (
                "Whole model (pickle)",
                lambda: _whole_model_bytes(run_dir),
                f"{run_id}-model.pt",
                "application/octet-stream",
                ":material/download:",
                "pickle",
                "torch.save(model): unsafe to load from others, because loading a pickle can run any code. Share the state_dict instead.",
            )
        )
    with st.container(horizontal=True, vertical_alignment="center"):
        for label, data, file_name, mime, icon, suffix, help_text in buttons:
            st.download_button(
                label, data, file_name=file_name, mime=mime, on_click="ignore", icon=icon, key=f"{key}-{suffix}", help=help_text
            )
    st.caption(f"Load the weights the tutorial's way (way 2) with the training script beside them ({script_name}):")
    st.code("import json, torch\n" + export.load_snippet(run_id, model), language="python")
    st.caption(
        f"ONNX takes normalized images (any batch size) and gives logits; its metadata holds the classes and "
        f"normalization. See its graph in [Netron]({NETRON_URL}) (drop the file on the page)."
        + (
            ""
            if shared
            else " The whole-model pickle (way 1) is for your own use only: the Predict page refuses pickles, since loading "
            "one can run any code."
        )
    )


def _info_json(run_dir: Path) -> str:
    return json.dumps(runs.weights_info(run_dir), indent=2) + "\n"
