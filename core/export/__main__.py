"""`python -m core.export`: a run as a script, a notebook, ONNX or a state_dict (core/export/formats.py)."""

import sys

from core.export.formats import main

if __name__ == "__main__":
    sys.exit(main())
