"""The one exception type for mistakes a user can cause and fix, and how every command reports one."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable


class PlaygroundError(Exception):
    """A user-fixable problem: the message says what went wrong and what to do.

    Pages show it with ``st.error``; the command line prints it on one line and
    exits non-zero. Anything else escaping ``core`` is a bug.
    """


class LayerError(PlaygroundError):
    """A layer spec's mistake in one layer: `layer` is its row, from 1, so a page can keep the rows above it."""

    def __init__(self, message: str, layer: int):
        super().__init__(message)
        self.layer = layer


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """A command's `main(argv) -> exit code`, with a user's mistake said as one line, `error: ...`, on stderr and exit
    code 2 instead of a traceback: a PlaygroundError, or a layer spec or config that is not JSON."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except PlaygroundError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except json.JSONDecodeError as exc:
            print(f"error: the layer spec or config is not valid JSON ({exc}).", file=sys.stderr)
        return 2

    return run
