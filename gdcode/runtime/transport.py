"""Waiting that does not spin, reusable send buffers, and paced pauses.

Waits poll with ``Test`` and sleep between polls, backing off from :data:`BACKOFF_START` to
:data:`BACKOFF_CAP`: a blocking ``Recv`` under the MPICH wheel spins a full core while it
waits (measured: 2.97 s of CPU in 3.0 s of waiting, against 0.08 s for a ``Test`` loop that
sleeps), which starves the computing ranks when ranks outnumber cores. When every rank of
the job is on one host, a rank with nothing of its own in flight sleeps instead until a sender
rings its doorbell (:mod:`gdcode.runtime.doorbell`, installed by :func:`use_doorbell`). The
messages themselves are defined in :mod:`gdcode.runtime.protocol`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import numpy as np

from gdcode.runtime.doorbell import RUNG_BURST, RUNG_TIMEOUT, RUNG_TIMEOUT_CAP, Doorbell

BACKOFF_START = 1e-5
BACKOFF_CAP = 5e-4
EAGER_CAP = 1e-4
EAGER_WINDOW = 5e-3
#: the first part of a wait, in which a rank yields its core instead of sleeping (see :class:`Backoff`)
YIELD_WINDOW = 2e-4
#: longest sleep of an injected pause's slice (a newer message is noticed within about this long)
PAUSE_SLICE = 5e-4


_doorbell: Doorbell | None = None


def use_doorbell(bell: Doorbell | None) -> None:
    """Make this process's waits sleep on ``bell`` (None: poll, the default)."""
    global _doorbell
    _doorbell = bell


def doorbell() -> Doorbell | None:
    """The doorbell this process's waits sleep on, if any."""
    return _doorbell


#: the timer slack a rank asks the kernel for (Linux), in nanoseconds
TIMER_SLACK_NS = 1000


def tune_timers() -> bool:
    """Ask Linux to end this process's sleeps within 1 µs of their time (whether it could).

    A process's default timer slack is 50 µs, which rounds every short back-off sleep up:
    measured here, ``time.sleep(1e-5)`` took 77 µs (median) by default and 25 µs with 1 µs of
    slack, and the ranks of a fast iteration mostly wait in such sleeps.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(29, TIMER_SLACK_NS, 0, 0, 0)) == 0  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        return False


class _Rings:
    """What one wait knows of its doorbell: the bytes it took whose messages it has not found
    yet, when the last came, and how long its next sleep until rung may be."""

    def __init__(self) -> None:
        self.unmatched = 0
        self.at = -math.inf  # perf_counter of the last bytes taken
        self.timeout = RUNG_TIMEOUT

    def took(self, n: int) -> None:
        if n:
            self.unmatched += n
            self.at = time.perf_counter()
            self.timeout = RUNG_TIMEOUT

    def came(self, n: int) -> None:
        """``n`` messages have been found: once every byte taken is matched, no burst."""
        self.unmatched = max(0, self.unmatched - n)
        if not self.unmatched:
            self.at = -math.inf

    def bursting(self) -> bool:
        """Whether a byte with no message found yet came in the last :data:`RUNG_BURST` (poll)."""
        return time.perf_counter() - self.at <= RUNG_BURST

    def sleep_until_rung(self, bell: Doorbell, limit: float = math.inf) -> bool:
        """Sleep until rung, or for the timeout (doubling while no byte comes); whether rung."""
        n = bell.wait(min(self.timeout, limit))
        self.took(n)
        if not n:
            self.timeout = min(2.0 * self.timeout, RUNG_TIMEOUT_CAP)
        return bool(n)


def _nap(bell: Doorbell | None, seconds: float, rings: _Rings) -> None:
    """Sleep ``seconds``; with a doorbell, a ring ends the sleep early (its bytes go to ``rings``)."""
    if bell is None:
        time.sleep(seconds)
    else:
        rings.took(bell.wait(seconds))


class Backoff:
    """Sleep between polls, doubling from ``start`` up to ``cap`` seconds.

    While it polls (no doorbell, or the rank's own send in flight: see below), for the first
    :data:`YIELD_WINDOW` seconds after :meth:`reset` it does not sleep at all but
    yields its core (``sched_yield``): a reply or the next model often comes within that time,
    and waking from even a 10 µs sleep costs about as much again (measured with ``gdcode bench
    engine``'s overhead run: 0.23 -> 0.14 ms per iteration at W = 1, 0.58-0.62 -> 0.46-0.51 ms
    at W = 4 on 2 cores; a longer window helped W = 1 more and W = 4 not at all, while every
    waiting rank spends it on the CPU). Then, for the first ``eager_window`` seconds after
    :meth:`reset`, the sleep is capped at ``eager_cap`` instead: the next message usually comes
    soon after a rank's own progress (a model right after a reply, a reply right after a model),
    and a 1 ms sleep there would add up to 1 ms to every iteration. Past the window, a long wait
    (a straggler's pause, the coordinator's evaluation) costs about 2000 cheap wake-ups a second.

    With a doorbell (:func:`use_doorbell`) every sleep also ends at a ring, and with nothing of
    the rank's own in flight it sleeps until rung instead (at most
    :data:`~gdcode.runtime.doorbell.RUNG_TIMEOUT`, doubling to
    :data:`~gdcode.runtime.doorbell.RUNG_TIMEOUT_CAP` while no byte comes); after bytes whose
    messages it has not found (:meth:`came` tells it), it goes on with its back-off's sleeps
    (from ``start`` when the byte ended a sleep until rung, doubling to ``cap``; no yield window
    or eager cap; a ring still ends each sleep) until :data:`~gdcode.runtime.doorbell.RUNG_BURST`
    has passed since the last such byte -- a large message moves on only while its receiver
    polls -- then sleeps until rung again: the byte may have been for a message the rank had
    already found.
    """

    def __init__(self, start: float = BACKOFF_START, cap: float = BACKOFF_CAP,
                 eager_cap: float = EAGER_CAP, eager_window: float = EAGER_WINDOW) -> None:
        self.start, self.cap = start, cap
        self.eager_cap, self.eager_window = eager_cap, eager_window
        self.reset()

    def reset(self) -> None:
        """Start a wait (call it before the wait's first test)."""
        self.current = self.start
        self.since = time.perf_counter()
        self.rings = _Rings()
        if _doorbell is not None:
            _doorbell.drain()

    def came(self, n: int = 1) -> None:
        """``n`` messages this wait was for have come (e.g. replies of several): bytes that woke
        the rank for them buy no :data:`~gdcode.runtime.doorbell.RUNG_BURST`."""
        self.rings.came(n)

    def sleep(self, limit: float = math.inf) -> None:
        """Sleep once, as above, but for at most ``limit`` seconds (the caller's own deadline)."""
        bell = _doorbell
        polling = bell is None or bell.busy()
        if bell is not None and not polling and not self.rings.bursting():
            if self.rings.sleep_until_rung(bell, limit):
                self.current = self.start
            return
        seconds = self.current
        if polling:  # the yield window and the eager cap; a burst after a byte has neither
            waited = time.perf_counter() - self.since
            if waited < YIELD_WINDOW:
                os.sched_yield()
                return
            if waited < self.eager_window:
                seconds = min(seconds, self.eager_cap)
        _nap(bell, min(seconds, limit), self.rings)
        self.current = min(self.current * 2.0, self.cap)


class Timeout(Exception):
    """A wait passed the run's deadline."""


def poll_until(ready: Callable[[], bool], deadline: float | None = None,
               backoff: Backoff | None = None) -> None:
    """Call ``ready()`` until it returns True, sleeping with back-off between calls.

    Raises
    ------
    Timeout
        When ``time.monotonic()`` passes ``deadline``.
    """
    backoff = backoff or Backoff()
    while not ready():
        if deadline is not None and time.monotonic() > deadline:
            raise Timeout
        backoff.sleep()


class SendPool:
    """Reusable send buffers: a buffer is handed out again only once its ``Isend``s completed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._busy: list[tuple[np.ndarray, list]] = []
        self._free: list[np.ndarray] = []

    def get(self) -> np.ndarray:
        from mpi4py import MPI

        still = []
        for buf, reqs in self._busy:
            if MPI.Request.Testall(reqs):
                self._free.append(buf)
            else:
                still.append((buf, reqs))
        self._busy = still
        return self._free.pop() if self._free else np.empty(self.size)

    def sent(self, buf: np.ndarray, reqs: list) -> None:
        """Hand ``buf`` back, busy until ``reqs`` complete."""
        self._busy.append((buf, reqs))

    def wait_all(self, deadline: float | None = None) -> None:
        from mpi4py import MPI

        reqs = [r for _, reqs in self._busy for r in reqs]
        poll_until(lambda: MPI.Request.Testall(reqs), deadline)
        self._free.extend(buf for buf, _ in self._busy)
        self._busy = []


def barrier(comm, deadline: float | None = None, watch: Callable[[], None] | None = None) -> None:
    """A barrier that sleeps while it waits (``Ibarrier`` + polling), unlike a blocking ``Barrier``;
    ``watch()`` is called at every test (it may raise to end the wait)."""
    from gdcode.runtime import phases

    req = comm.Ibarrier()

    def ready() -> bool:
        if watch is not None:
            watch()
        return bool(req.Test())

    poll_until(ready, deadline)
    phases.mark("ready")  # the first barrier of a run is the one that ends its set-up


def pause(seconds: float, poll: Callable[[], bool], slice_seconds: float = PAUSE_SLICE) -> bool:
    """Sleep ``seconds`` in slices of at most ``slice_seconds``, calling ``poll()`` after each.

    With a doorbell (:func:`use_doorbell`) the bytes already there are taken and ``poll()`` is
    called first; then the slices end when the rank is rung, and while nothing of the rank's own
    is in flight and no byte has come in the last :data:`~gdcode.runtime.doorbell.RUNG_BURST`
    they are up to :data:`~gdcode.runtime.doorbell.RUNG_TIMEOUT` long, doubling to
    :data:`~gdcode.runtime.doorbell.RUNG_TIMEOUT_CAP` (else slices as without one, which a ring
    still ends). Returns True as soon as ``poll()`` does (a newer model, a stop), else False.
    """
    if seconds <= 0:
        return False
    end = time.perf_counter() + seconds
    rings = _Rings()
    if _doorbell is not None:
        _doorbell.drain()
        if poll():  # what came before the bytes were taken
            return True
    while True:
        left = end - time.perf_counter()
        if left <= 0:
            return False
        bell = _doorbell
        if bell is not None and not rings.bursting() and not bell.busy():
            rings.sleep_until_rung(bell, left)
        else:  # just rung, its own send in flight, or no doorbell: slices
            _nap(bell, min(slice_seconds, left), rings)
        if poll():
            return True
