"""`python -m core.evaluate`: Score a trained run on a dataset (core/insight/evaluate.py)."""

import sys

from core.insight.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
