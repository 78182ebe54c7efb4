"""`python -m core.explain`: Where a run's model looks in your images (core/insight/explain.py)."""

import sys

from core.insight.explain import main

if __name__ == "__main__":
    sys.exit(main())
