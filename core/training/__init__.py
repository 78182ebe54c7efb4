"""Training: how a run learns. The run's schema, `TrainConfig` with its option lists and shared command-line
options, in a module that imports nothing of the loop (`config`); the pieces a run builds once, each passed to the
functions that use it (`parts`: where it computes, its data, the learner; `runlog`: its records and stop checks);
the loop itself, to read top to bottom (`loop`), and `python -m core.train` (`cli`); the GPU fast path and its
fallbacks (`fastloop`, `fallback`), training health (`health`), losses, a run's records as curves (`curves`), the
learning-rate finder (`lr_find`), sweeps (`sweep`), the augmentation preview (`preview`) and a run's settings in
words (`describe`).
"""
