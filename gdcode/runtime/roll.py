"""The roll call: each worker's host and pid, reported to rank 0 as the job's set-up begins.

A worker sends rank 0 its ``(host, pid)`` first thing, before it binds its doorbell or builds
its data (:func:`answer`). Rank 0 keeps them for ``metadata.json`` and, while it waits in the
set-up's collectives, checks that the workers on its host are still alive (:meth:`Roll.check`):
under ``--tolerate-failures`` a worker that dies before the first iteration (an error while it
loads its data, the OOM killer) would otherwise leave rank 0 waiting in a collective for ever,
where without it the job ends with the rank.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from gdcode.procfs import process_alive
from gdcode.runtime import protocol as pr
from gdcode.runtime import transport as tp

#: seconds between two checks of the workers' processes (in the set-up, and by rank 0 in the loop)
DEATH_CHECK_EVERY = 0.05


def me() -> tuple[str, int]:
    """This process's ``(host, pid)``."""
    return socket.gethostname(), os.getpid()


def answer(comm: Any) -> Any:
    """A worker's roll call to rank 0 (the request of its non-blocking send)."""
    return comm.isend(me(), dest=0, tag=pr.Tag.ROLL)


class SetupFailed(Exception):
    """A worker died before the first iteration."""

    def __init__(self, worker: int) -> None:
        super().__init__(f"worker {worker + 1} died during set-up, before the first iteration")
        self.worker = worker


class Roll:
    """Rank 0's record of the workers' roll calls.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The job's communicator (the calls are not counted as traffic).
    n_workers : int
        W: ranks 1..W report.
    """

    def __init__(self, comm: Any, n_workers: int) -> None:
        self.ranks: dict[int, tuple[str, int]] = {0: me()}
        self._pending = {r: comm.irecv(source=r, tag=pr.Tag.ROLL) for r in range(1, n_workers + 1)}
        self._next_check = 0.0

    def check(self) -> None:
        """Take the roll calls that have come; at most every :data:`DEATH_CHECK_EVERY` seconds,
        check the processes of the workers on this host.

        Raises
        ------
        SetupFailed
            For the first worker found dead.
        """
        for r, req in list(self._pending.items()):
            done, value = req.test()
            if done:
                self.ranks[r] = tuple(value)
                del self._pending[r]
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + DEATH_CHECK_EVERY
        host = self.ranks[0][0]
        for r, (h, pid) in sorted(self.ranks.items()):
            if r > 0 and h == host and not process_alive(pid):
                raise SetupFailed(r - 1)

    def wait(self) -> dict[int, tuple[str, int]]:
        """Every rank's ``(host, pid)``, once every worker has reported (checking as it waits).

        Raises
        ------
        SetupFailed
            When a worker on this host dies first.
        """
        tp.poll_until(self._all_in)
        return dict(sorted(self.ranks.items()))

    def _all_in(self) -> bool:
        self.check()
        return not self._pending
