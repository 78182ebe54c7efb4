"""Export: a run taken out of the studio. The standalone training script and notebook rendered from the
templates in `templates/`, ONNX checked against PyTorch with onnxruntime, and the plain state_dict with its JSON
sidecar (`formats`, and `python -m core.export`); and the Train page's short loop for the form's settings as
runnable code (`loop_code`).
"""
