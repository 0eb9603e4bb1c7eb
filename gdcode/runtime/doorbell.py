"""Doorbells: the sender of a message wakes its receiver, so that a waiting rank can sleep.

MPI cannot block a rank until a message comes without spinning a core (the MPICH wheel's
shared memory has no blocking wait), so every wait in the runtime polls and sleeps between
polls (:class:`gdcode.runtime.transport.Backoff`). A sleeping rank then notices a message only
when its sleep ends, and many ranks sleeping briefly spend the cores on waking up: 49 ranks on
2 cores (``gdcode bench engine --workers 48``) spent 1.65-1.84 cores polling. A doorbell fixes both
when every rank of a job is on one host: each rank binds a Unix datagram socket in Linux's
abstract namespace, named after the job and its rank; after every send the sender writes one
byte to its receiver's socket, and a waiting rank sleeps in ``select`` on its own socket, which
that byte ends at once.

The byte is only a hint. A wait starts by taking the bytes already there (a message found by a
test leaves its byte behind, which must not end the next wait early), then tests its requests,
and tests them again after every wake-up; it still wakes after :data:`RUNG_TIMEOUT` (doubling to
:data:`RUNG_TIMEOUT_CAP`) if no byte comes; and while something of its own is in flight (a send,
a collective) or once a byte has come in the current wait, it backs off as it would without a
doorbell (each sleep still ending at a byte), since MPI moves a large message or a collective
on only while both sides call it.
A job whose ranks cannot all reach each other (several hosts, or the network namespaces of
``gdcode cluster``) has no doorbell, and every wait polls; so has a job run with
``GDCODE_DOORBELL=0`` in its environment.
"""

from __future__ import annotations

import select
import socket
import sys
from typing import Any

#: first sleep of a rank that waits for a doorbell, doubling up to :data:`RUNG_TIMEOUT_CAP` while
#: no byte comes (a hint lost costs at most that long; a rank asleep wakes up that seldom)
RUNG_TIMEOUT = 5e-3
RUNG_TIMEOUT_CAP = 2e-2


def _name(job: str, rank: int) -> bytes:
    return f"\0gdcode-{job}-{rank}".encode()


class Doorbell:
    """One rank's doorbell, and the names of the other ranks' in the same job.

    Parameters
    ----------
    job : str
        A name shared by the job's ranks and by no other job (rank 0 draws it at random).
    rank, size : int
        This rank and the job's size.

    Raises
    ------
    OSError
        When the socket cannot be made or bound (not Linux, or the name is taken).
    """

    def __init__(self, job: str, rank: int, size: int) -> None:
        self._names = [_name(job, r) for r in range(size)]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.bind(self._names[rank])
        except OSError:
            self.sock.close()
            raise
        self.reachable = [True] * size
        self.reachable[rank] = False  # a rank does not ring itself
        self._in_flight: list[Any] = []

    def close(self) -> None:
        self.sock.close()

    def ring(self, rank: int) -> bool:
        """Wake ``rank`` (job rank) if it waits; whether it can be rung.

        A rank whose name is not bound on this host (another host, another network namespace,
        a rank that has ended) cannot, and is not rung again.
        """
        if not self.reachable[rank]:
            return False
        try:
            self.sock.sendto(b"\0", self._names[rank])
        except BlockingIOError:
            pass  # its queue is full: it has wake-ups enough waiting
        except OSError:
            self.reachable[rank] = False
            return False
        return True

    def sent(self, request: Any, rank: int | None) -> None:
        """A send or collective ``request`` has been started towards ``rank`` (None: to no one)."""
        if request is not None:
            self._in_flight.append(request)
        if rank is not None:
            self.ring(rank)

    def busy(self) -> bool:
        """Whether a send or collective this rank started has not completed (it must poll)."""
        if self._in_flight:
            self._in_flight = [r for r in self._in_flight if not r.Test()]
        return bool(self._in_flight)

    def wait(self, seconds: float) -> bool:
        """Sleep until rung or for ``seconds``; whether rung (every waiting byte is taken)."""
        if not select.select([self.sock], [], [], seconds)[0]:
            return False
        self.drain()
        return True

    def drain(self) -> None:
        """Take every waiting byte: at the start of a wait, bytes of messages already taken."""
        try:
            while True:
                self.sock.recv(64)
        except BlockingIOError:
            pass


def connect(comm: Any) -> Doorbell | None:
    """The job's doorbell for this rank, or None when not every rank can ring every other.

    Collective over ``comm``: rank 0 names the job, every rank binds its socket, rings every
    other rank once to find whether it is reachable, and the ranks agree.
    """
    import os
    import secrets

    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    job = comm.bcast(secrets.token_hex(8) if rank == 0 else None, root=0)
    bell: Doorbell | None = None
    if sys.platform.startswith("linux") and os.environ.get("GDCODE_DOORBELL", "1") != "0":
        try:
            bell = Doorbell(job, rank, size)
        except OSError:
            bell = None
    comm.Barrier()  # every socket is bound before any rank rings
    ok = bell is not None and all(bell.ring(r) for r in range(size) if r != rank)
    if not comm.allreduce(int(ok), op=MPI.MIN):
        if bell is not None:
            bell.close()
        return None
    assert bell is not None
    bell.drain()  # the other ranks' probes
    return bell
