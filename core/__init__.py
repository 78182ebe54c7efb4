"""Torch Playground engine: models, data, training, run folders and prediction.

Plain Python with no Streamlit import, so everything the studio does is also
scriptable (``python -m core.train``) and testable.
"""

from core.errors import PlaygroundError

__all__ = ["PlaygroundError"]
