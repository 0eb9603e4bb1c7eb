"""The progress line rank 0 prints during a run: iteration, share done, time left and training loss.

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
        self._start: float | None = None
        self._first = 0

    def update(self, iteration: int, elapsed: float, loss: float) -> None:
        """Redraw if enough time has passed (always for the last iteration).

        The line shows the share done and the time left, from the wall time since the first
        update (set-up, evaluation and all).
        """
        if not self.enabled:
            return
        now = time.monotonic()
        if self._start is None:
            self._start, self._first = now, iteration
        if now - self._last < INTERVAL and iteration < self.total:
            return
        self._last = now
        done = iteration - self._first
        left = ""
        if done > 0 and iteration < self.total:
            left = f"  left ~{_duration((now - self._start) / done * (self.total - iteration))}"
        text = (f"gdcode: iteration {iteration}/{self.total} ({100 * iteration / self.total:.0f}%)  "
                f"elapsed {elapsed:.2f} s{left}  loss {loss:.6g}")
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """End the line, so that what follows starts on a fresh one."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s`` or ``2 h 10 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
