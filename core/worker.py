"""`python -m core.worker`: The process one queued run trains in (core/serving/worker.py); the queue starts it."""

import sys

from core.serving.worker import main

if __name__ == "__main__":
    sys.exit(main())
