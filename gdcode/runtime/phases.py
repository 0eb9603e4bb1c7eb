"""When each rank reached each phase of its life, for ``gdcode bench startup`` and ``summary.json``.

Every rank notes the wall-clock time (``time.time()``, seconds since the epoch, so ranks and the
launcher compare) of: its process's start (from ``/proc``), the end of its imports (the command
parsed), MPI initialised, its run's parts built, set-up done (the barrier before the clock),
and the end of its loop. Workers send theirs with their last message; rank 0 writes them all.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

#: the phases, in the order a rank passes them
PHASES = ("process_start", "imported", "mpi_ready", "built", "ready", "loop_end")

_times: dict[str, float] = dict.fromkeys(PHASES, math.nan)


def mark(phase: str) -> None:
    """Note ``phase`` now (the first time only)."""
    if math.isnan(_times[phase]):
        _times[phase] = time.time()


def process_start() -> float:
    """When this process started (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open("/proc/self/stat") as fh:
            started = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: ticks since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return math.nan


def vector() -> np.ndarray:
    """Every phase's time, in :data:`PHASES` order (NaN for one not reached)."""
    _times["process_start"] = process_start()
    return np.array([_times[p] for p in PHASES], dtype=np.float64)


def table(vectors: dict[int, np.ndarray]) -> dict[str, list[float | None]]:
    """``summary.json``'s ``phases``: per phase, each rank's time (None where unknown)."""
    size = max(vectors) + 1 if vectors else 0
    out: dict[str, list[float | None]] = {}
    for k, phase in enumerate(PHASES):
        out[phase] = [None if r not in vectors or math.isnan(vectors[r][k]) else float(vectors[r][k])
                      for r in range(size)]
    return out


def max_rss_mb() -> float:
    """This process's peak resident memory in MB (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
