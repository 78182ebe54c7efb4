"""`python -m core.train`: Train an image classifier into a run folder (core/training/). torchrun and the queue's workers start this module."""

import sys

from core.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
