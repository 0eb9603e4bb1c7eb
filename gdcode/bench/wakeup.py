"""How long this machine takes to wake a sleeping process: a floor under every message's cost.

A synchronous iteration wakes each worker with a model and rank 0 with the replies, so at least
one wake-up each way stands between rank 0 sending and rank 0 stepping. :func:`round_trips`
measures that pair alone: two processes bounce one datagram over a Unix socket pair (the
doorbells' kind of socket, :mod:`gdcode.runtime.doorbell`), each asleep in ``recv`` until it
comes, on two different cores or on one. ``gdcode bench engine`` prints it beside the
coordinator's overhead, measured in the same invocation.

On a KVM guest the round trip across cores depends on the host more than on the guest, and
changes with it: the README ("Coordinator overhead") gives the range one VM showed in a morning.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np

#: the echoing side: sleeps in ``recv``, sends each datagram back, ends on an empty one
_ECHO = """\
import os, socket, sys
fd, cpu = int(sys.argv[1]), int(sys.argv[2])
os.sched_setaffinity(0, {cpu})
s = socket.socket(fileno=fd)
s.send(b"r")
while True:
    b = s.recv(8)
    if not b:
        break
    s.send(b)
"""


def cores() -> list[int]:
    """The CPUs this process may run on (all of them where Linux's affinity calls are missing)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def round_trips(n: int = 1000, same_core: bool = False, warm_up: int = 100,
                timeout: float = 30.0) -> np.ndarray | None:
    """Seconds of ``n`` round trips of a datagram between this process and a sleeping echo process.

    Parameters
    ----------
    n : int
        Round trips timed, after ``warm_up`` untimed ones.
    same_core : bool
        Both processes on this process's first CPU; otherwise on its first two.
    warm_up : int
        Untimed round trips first (the echo process's first ones run cold).
    timeout : float
        Seconds any one datagram may take before :class:`TimeoutError` (the echo process has
        died or not started), and the echo process to end after the last before
        :class:`subprocess.TimeoutExpired`; the echo process is ended either way.

    Returns
    -------
    numpy.ndarray or None
        The ``n`` round trips in seconds, or None where they cannot be measured (not Linux, or
        one CPU when ``same_core`` is false).
    """
    if not sys.platform.startswith("linux"):
        return None
    cpus = cores()
    if not same_core and len(cpus) < 2:
        return None
    here, there = cpus[0], cpus[0] if same_core else cpus[1]
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    before = os.sched_getaffinity(0)
    echo = subprocess.Popen([sys.executable, "-c", _ECHO, str(theirs.fileno()), str(there)],
                            pass_fds=[theirs.fileno()])
    theirs.close()
    try:
        os.sched_setaffinity(0, {here})
        mine.settimeout(timeout)
        mine.recv(8)  # it is up and pinned
        out = np.empty(n)
        clock = time.perf_counter
        for i in range(-warm_up, n):
            t0 = clock()
            mine.send(b"x")
            mine.recv(8)
            if i >= 0:
                out[i] = clock() - t0
        mine.send(b"")
        echo.wait(timeout=timeout)
        return out
    finally:
        os.sched_setaffinity(0, before)
        mine.close()
        if echo.poll() is None:
            echo.kill()
            echo.wait()


def describe(seconds: np.ndarray | None) -> dict | None:
    """The median and the 10th and 90th percentiles of round trips, in seconds (None: none measured)."""
    if seconds is None:
        return None
    p10, median, p90 = np.percentile(seconds, [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90), "n": int(seconds.size)}
