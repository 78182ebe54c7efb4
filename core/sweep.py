"""`python -m core.sweep`: Try several settings at once through the queue (core/training/sweep.py)."""

import sys

from core.training.sweep import main

if __name__ == "__main__":
    sys.exit(main())
