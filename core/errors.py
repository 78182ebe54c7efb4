"""The one exception type for mistakes a user can cause and fix."""


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
