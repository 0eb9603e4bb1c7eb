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
:data:`RUNG_TIMEOUT_CAP`) if no byte comes; while something of its own is in flight (a send, a
collective), and for :data:`RUNG_BURST` after a byte that did not end its wait, it backs off as
it would without a doorbell (each sleep still ending at a byte), since MPI moves a large message
or a collective on only while both sides call it.
A job whose ranks cannot all reach each other (several hosts, or the network namespaces of
``gdcode cluster``) has no doorbell, and every wait polls; so has a job run with
``GDCODE_DOORBELL=0`` in its environment.
"""

from __future__ import annotations

import ctypes
import functools
import select
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: first sleep of a rank that waits for a doorbell, doubling up to :data:`RUNG_TIMEOUT_CAP` while
#: no byte comes (a hint lost costs at most that long; a rank asleep wakes up that seldom)
RUNG_TIMEOUT = 5e-3
RUNG_TIMEOUT_CAP = 2e-2
#: how long a rank polls (in short sleeps a byte still ends) after a byte that did not end its wait,
#: before it sleeps until rung again: a large message moves on only while the receiver polls
#: (24 MB took 1.5-2 ms), and a byte may come for a message the rank has already taken
RUNG_BURST = 5e-3
#: in-flight requests a rank keeps before it drops the completed ones without waiting (then twice
#: as many as are still in flight, so that a rank with many sends really in flight does not test
#: them all at every send)
_PRUNE_AT = 64


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
        self._prune_at = _PRUNE_AT

    def close(self) -> None:
        self.sock.close()

    @functools.cached_property
    def _datagrams(self) -> _Datagrams | None:
        """A message header per rank for :meth:`ring_all` (built at its first call, about 0.3 ms
        for 49 ranks: only the ranks that ring many at once need it)."""
        return _Datagrams.build(self.sock, self._names)

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

    def ring_all(self, ranks: Sequence[int]) -> None:
        """Ring every rank of ``ranks``, in that order, in one system call where Linux has one.

        Each ring may wake a rank, and a rank woken takes the core from its waker: rank 0 ringing
        48 workers each right after its send was preempted between sends, which took it 3-8 ms
        (traced, 2 cores); sending all, then waking all in one ``sendmmsg``, 1-2.7 ms.
        """
        ranks = [r for r in ranks if self.reachable[r]]
        batch = self._datagrams if len(ranks) > 1 else None
        if batch is not None:
            batch.load(ranks)
        i = 0
        while i < len(ranks):
            if batch is not None:
                i += batch.send(i)
            if i < len(ranks):  # a byte the batch could not send (or no batch): alone, its error seen
                self.ring(ranks[i])
                i += 1

    def sent(self, request: Any, rank: int | None) -> None:
        """A send or collective ``request`` has been started towards ``rank`` (None: to no one)."""
        if request is not None:
            self._in_flight.append(request)
            if len(self._in_flight) > self._prune_at:  # a rank that sends without ever waiting
                self._in_flight = [r for r in self._in_flight if not r.Test()]
                self._prune_at = max(_PRUNE_AT, 2 * len(self._in_flight))
        if rank is not None:
            self.ring(rank)

    def busy(self) -> bool:
        """Whether a send or collective this rank started has not completed (it must poll)."""
        if self._in_flight:
            self._in_flight = [r for r in self._in_flight if not r.Test()]
        return bool(self._in_flight)

    def wait(self, seconds: float) -> int:
        """Sleep until rung or for ``seconds``; how many bytes came (0: not rung; all are taken)."""
        if not select.select([self.sock], [], [], seconds)[0]:
            return 0
        return self.drain()

    def drain(self) -> int:
        """Take every waiting byte (at the start of a wait: bytes of messages already taken); how many."""
        taken = 0
        try:
            while True:
                taken += len(self.sock.recv(64))
        except BlockingIOError:
            return taken


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_IoVec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]



class _Datagrams:
    """One byte to each of several abstract Unix addresses, by one ``sendmmsg`` (Linux).

    A message header per address is built once; :meth:`load` copies the headers of one batch
    into a second array, which :meth:`send` hands to the kernel.
    """

    _sendmmsg: Any = None

    def __init__(self, fd: int, names: list[bytes]) -> None:
        import numpy as np

        self.fd = fd
        self._byte = ctypes.create_string_buffer(b"\0", 1)
        self._iov = _IoVec(ctypes.cast(self._byte, ctypes.c_void_p), 1)
        # sockaddr_un: the family, then the name (abstract: a leading NUL, and no terminator)
        self._addresses = [ctypes.create_string_buffer(struct.pack("H", socket.AF_UNIX) + n, 2 + len(n))
                           for n in names]
        self._messages = (_MMsgHdr * len(names))()
        for m, address in zip(self._messages, self._addresses, strict=True):
            m.hdr.name = ctypes.cast(address, ctypes.c_void_p)
            m.hdr.namelen = len(address.raw)
            m.hdr.iov = ctypes.pointer(self._iov)
            m.hdr.iovlen = 1
        self._batch = (_MMsgHdr * len(names))()
        self._count = 0
        header = ctypes.sizeof(_MMsgHdr)
        self._rows = np.frombuffer(memoryview(self._messages).cast("B"), dtype=np.uint8).reshape(-1, header)
        self._batch_rows = np.frombuffer(memoryview(self._batch).cast("B"), dtype=np.uint8).reshape(-1, header)

    def load(self, indices: Sequence[int]) -> None:
        """Make the batch the addresses ``indices`` (positions in the names given), in that order."""
        self._batch_rows[:len(indices)] = self._rows[list(indices)]
        self._count = len(indices)

    @classmethod
    def build(cls, sock: socket.socket, names: list[bytes]) -> _Datagrams | None:
        """The batch, or None where there is no ``sendmmsg`` (then the caller rings one by one)."""
        if cls._sendmmsg is None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fn = libc.sendmmsg
            except (OSError, AttributeError):
                return None
            fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
            fn.restype = ctypes.c_int
            cls._sendmmsg = fn
        return cls(sock.fileno(), names)

    def send(self, start: int = 0) -> int:
        """Send the bytes from the ``start``-th on, in order; how many went (the first that failed,
        and those after it, did not)."""
        first = ctypes.addressof(self._batch) + start * ctypes.sizeof(_MMsgHdr)
        return max(0, int(self._sendmmsg(self.fd, first, self._count - start, socket.MSG_DONTWAIT)))


def connect(comm: Any, watch: Callable[[], None] | None = None) -> Doorbell | None:
    """The job's doorbell for this rank, or None when not every rank can ring every other.

    Collective over ``comm``: rank 0 names the job, every rank binds its socket, rings every
    other rank once to find whether it is reachable, and the ranks agree. Its collectives are
    non-blocking ones the rank tests between short sleeps (:func:`_await`): a blocking
    collective under the MPICH wheel spins a core while it waits for the other ranks. ``watch()``
    is called at every test (it may raise: a rank that died will never join).
    """
    import os
    import secrets

    import numpy as np
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    token = np.frombuffer(secrets.token_bytes(8), dtype=np.uint8).copy() if rank == 0 else np.empty(8, np.uint8)
    _await(comm.Ibcast(token, root=0), watch)
    bell: Doorbell | None = None
    if sys.platform.startswith("linux") and os.environ.get("GDCODE_DOORBELL", "1") != "0":
        try:
            bell = Doorbell(token.tobytes().hex(), rank, size)
        except OSError:
            bell = None
    _await(comm.Ibarrier(), watch)  # every socket is bound before any rank rings
    ok = bell is not None and all(bell.ring(r) for r in range(size) if r != rank)
    agreed = np.empty(1, dtype=np.int64)
    _await(comm.Iallreduce(np.array([int(ok)], dtype=np.int64), agreed, op=MPI.MIN), watch)
    if not agreed[0]:
        if bell is not None:
            bell.close()
        return None
    assert bell is not None
    bell.drain()  # the other ranks' probes
    return bell


def _await(request: Any, watch: Callable[[], None] | None = None) -> None:
    """Test ``request`` until it completes, sleeping 0.1 ms between tests and calling ``watch()``
    (if any) at each: the set-up's collectives, before there is a doorbell
    (:mod:`gdcode.runtime.transport`'s waits, which use one, import this module)."""
    import time

    while not request.Test():
        if watch is not None:
            watch()
        time.sleep(1e-4)
