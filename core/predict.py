"""`python -m core.predict`: Classify images with a trained run (core/insight/predict.py)."""

import sys

from core.insight.predict import main

if __name__ == "__main__":
    sys.exit(main())
