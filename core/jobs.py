"""`python -m core.jobs`: Dispatch a models folder's queue until it is empty (core/serving/jobs.py)."""

import sys

from core.serving.jobs import main

if __name__ == "__main__":
    sys.exit(main())
