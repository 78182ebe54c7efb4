"""Torch Playground's engine: plain, typed Python with no Streamlit import, so everything the studio does is also a
command and testable. Its packages follow the path a learner takes through the studio:

- `core.data`: what a model learns from. The data spec (`shapes[:N]`, `cifar10`, `imagefolder:PATH`) parsed in one
  place (`DataSpec`), datasets as uint8 tensors decoded once from untrusted files and cached, batches augmented and
  normalized on the training device, and your own classes with the small-data recipe.
- `core.models`: what learns. Presets and their recipes, the layer-spec builder, torchvision's networks with their
  weights, heads and freezing, `build()` (the one way anything makes a model), the layer table, and how test images
  are scored (test-time augmentation), shared by training and prediction.
- `core.training`: how a run learns. The run's schema (`TrainConfig`, in a module of its own), the pieces built once
  per run, the loop and its command line, the GPU fast path and its fallbacks, training health, losses, curves,
  the learning-rate finder, sweeps and the settings in words.
- `core.insight`: what a trained model does. Prediction with the run's own preprocessing, evaluation and mistakes,
  where it looks (Captum), feature maps and embeddings, and the check for pictures unlike its training images.
- `core.export`: the run out of the studio: a script, a notebook, ONNX, a state_dict; and the loop as code.
- `core.serving`: runs as child processes: the run folder, the fair queue, the worker processes, and shared mode's
  workspaces and quotas.
- `core.lessons`: the tutorial's chapters as exercises, each with a task the studio checks.

Beside them: `device` (device choice and precision per machine), `errors` (PlaygroundError) and `files` (atomic
writes and the safe torch.load every stage uses). The commands are
`python -m core.train`, `core.evaluate`, `core.explain`, `core.predict`, `core.lr_find`, `core.sweep`,
`core.jobs`, `core.worker` (small modules here, each calling its package's `main`) and `core.export`.
"""
