"""Processes of this host, read from Linux's ``/proc``: whether one is alive, when it started.

Used by rank 0 to find dead workers, by the launcher to kill a job's processes by pid, and by
the cluster emulation to check its relay.
"""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command's name (state, parent, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int | str) -> str | None:
    """When process ``pid`` started (clock ticks after boot, as ``/proc`` gives it), or None: with
    the pid, it names one process even once the pid has been reused."""
    fields = stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def process_alive(pid: int | None) -> bool:
    """Whether process ``pid`` of this host is alive (a zombie is not; no pid is not)."""
    if not pid:
        return False
    fields = stat_fields(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
