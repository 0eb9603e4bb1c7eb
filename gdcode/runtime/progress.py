"""The progress line rank 0 prints during a run: iteration, elapsed time and training loss.

It is drawn on standard error with a carriage return, at most a few times a second, and only
when the user sees a terminal: ``gdcode run`` tells the job through ``GDCODE_PROGRESS``
(``1`` when its standard error is a terminal; under mpiexec the ranks' own output is a pipe),
a job started by hand may set it itself, and ``--quiet`` turns the line off.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

#: environment variable that says whether the user's standard error is a terminal
ENV = "GDCODE_PROGRESS"
#: seconds between two redraws
INTERVAL = 0.25


def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
    """Whether to draw the line: not ``quiet``, and ``GDCODE_PROGRESS=1`` (or, when it is
    unset, ``stream`` is a terminal)."""
    if quiet:
        return False
    env = os.environ.get(ENV)
    if env is not None:
        return env.strip() == "1"
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """Draws ``iteration t/T  elapsed E s  loss L`` in place; a no-op when disabled."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self._last = -float("inf")
        self._width = 0

    def update(self, iteration: int, elapsed: float, loss: float) -> None:
        """Redraw if enough time has passed (always for the last iteration)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < INTERVAL and iteration < self.total:
            return
        self._last = now
        text = f"gdcode: iteration {iteration}/{self.total}  elapsed {elapsed:.2f} s  loss {loss:.6g}"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """End the line, so that what follows starts on a fresh one."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
