"""Training: how a run learns. The run's schema, `TrainConfig` with its option lists, in a module that imports
nothing of the loop (`config`); the pieces built once per run (`parts`), its records and stop checks (`runlog`),
the loop itself (`loop`) and its command line (`cli`); the GPU fast path and its fallbacks (`fastloop`, `fallback`),
training health (`health`), losses, curves of a run's records (`curves`), the learning-rate finder (`lr_find`),
sweeps (`sweep`) and the augmentation preview (`preview`).
"""
