"""SIGTERM and SIGHUP inside the job: noted, so that rank 0 ends the run cleanly.

What ``timeout``, a closed terminal and batch schedulers send is a request to stop. Rank 0
notes it (:func:`install`); its waits raise :class:`Terminated` at the next poll, and it stops
the workers, drains them and writes ``summary.json`` with status ``terminated``. The ``gdcode
run`` launcher forwards these signals to rank 0 (its pid is in ``metadata.json``).
"""

from __future__ import annotations

import signal
from types import FrameType

#: the signals that end a run cleanly
HANDLED = (signal.SIGTERM, signal.SIGHUP)

_received: int | None = None


class Terminated(Exception):
    """The run was asked to stop by a signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _note(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is None:
        _received = signum


def install() -> None:
    """Note SIGTERM and SIGHUP instead of dying at once (rank 0 calls it once)."""
    for sig in HANDLED:
        signal.signal(sig, _note)


def received() -> int | None:
    """The first handled signal received, or None."""
    return _received


def check() -> None:
    """Raise :class:`Terminated` once a handled signal has come."""
    if _received is not None:
        raise Terminated(_received)


def exit_code(signum: int) -> int:
    """The shell's code of a process ended by ``signum``: 128 + its number."""
    return 128 + int(signum)
