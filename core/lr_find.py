"""`python -m core.lr_find`: Suggest a learning rate for a model and its data (core/training/lr_find.py)."""

import sys

from core.training.lr_find import main

if __name__ == "__main__":
    sys.exit(main())
