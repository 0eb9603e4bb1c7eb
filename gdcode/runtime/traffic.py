"""Bytes on the wire: every rank counts what it hands MPI to send, by destination and message kind.

:class:`CountingComm` wraps the job's communicator: each ``Isend``/``Issend``/``Send`` adds the
buffer's bytes to a table indexed by (destination rank, kind), the kind read from the message's
header (:class:`~gdcode.runtime.protocol.Kind`) or, for the messages without one, from its tag;
a collective (the all-reduce of ``allreduce``/``local``, gossip's closing count exchange) counts
the local contribution as sent and the result as received, under its own kind. What a rank
received from the others is what they sent it: each worker reports its table to rank 0 as its
last message (:data:`~gdcode.runtime.protocol.Tag.TRAFFIC`), and rank 0 adds them up for
``summary.json``. Rank 0 also counts, per iteration (or evaluation), what it sent and received,
for ``metrics.jsonl``. The bytes are payload bytes: MPI's and the transport's own headers, and the
set-up's pickled gathers, are not counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from gdcode.runtime import protocol as pr

if TYPE_CHECKING:
    from gdcode.runtime.doorbell import Doorbell

#: the kinds counted, in the order of a worker's report
KINDS: tuple[str, ...] = (*(k.name.lower() for k in pr.Kind), "records", "allreduce", "alltoall", "other")
_KIND_INDEX = {name: i for i, name in enumerate(KINDS)}
_BY_VALUE = {int(k): k.name.lower() for k in pr.Kind}
_HEADERLESS = {int(pr.Tag.RECORDS): "records", int(pr.Tag.TRAFFIC): "other"}


def kind_of(buf: Any, tag: int) -> str:
    """The kind a message counts under: its header's kind, or its tag's for a headerless message."""
    if int(tag) in _HEADERLESS:
        return _HEADERLESS[int(tag)]
    if isinstance(buf, np.ndarray) and buf.dtype == np.float64 and buf.size >= pr.HEADER:
        return _BY_VALUE.get(int(buf[0]), "other")
    return "other"


def nbytes(buf: Any) -> int:
    """Bytes of a buffer argument (an array, or mpi4py's ``[array, datatype]`` form)."""
    if isinstance(buf, (list, tuple)):
        buf = buf[0]
    return int(np.asarray(buf).nbytes)


class Traffic:
    """One rank's counts: bytes sent per (destination, kind), and what rank 0 received per kind.

    Parameters
    ----------
    size : int
        The number of ranks.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = np.zeros((size, len(KINDS)), dtype=np.int64)  # [destination, kind]
        self.received = np.zeros(len(KINDS), dtype=np.int64)  # counted by rank 0 as messages arrive
        self.collective_sent = np.zeros(len(KINDS), dtype=np.int64)
        self.collective_received = np.zeros(len(KINDS), dtype=np.int64)
        self._mark_sent = np.zeros(len(KINDS), dtype=np.int64)
        self._mark_received = np.zeros(len(KINDS), dtype=np.int64)

    def count_sent(self, dest: int, kind: str, n: int) -> None:
        self.sent[dest, _KIND_INDEX[kind]] += n

    def count_received(self, kind: str, n: int) -> None:
        self.received[_KIND_INDEX[kind]] += n

    def since_mark(self) -> dict[str, dict[str, int]]:
        """Bytes sent and received by kind since the last call (rank 0's per-iteration counts)."""
        sent = self.sent.sum(axis=0) + self.collective_sent
        received = self.received + self.collective_received
        out = {"sent": _by_kind(sent - self._mark_sent), "received": _by_kind(received - self._mark_received)}
        self._mark_sent, self._mark_received = sent.copy(), received.copy()
        return out

    def report(self) -> np.ndarray:
        """The table a worker sends rank 0: its sends per (destination, kind), then what it contributed
        to and received from collectives, per kind."""
        return np.concatenate([self.sent.reshape(-1), self.collective_sent,
                               self.collective_received]).astype(np.float64)

    def report_size(self) -> int:
        """Length of :meth:`report`."""
        return (self.size + 2) * len(KINDS)


def _by_kind(counts: np.ndarray) -> dict[str, int]:
    return {KINDS[i]: int(c) for i, c in enumerate(counts) if c}


def summarize(tables: dict[int, np.ndarray], size: int) -> dict:
    """``summary.json``'s ``bytes``: per rank, totals and by kind, from every rank's report.

    ``tables`` maps a rank to its :meth:`Traffic.report`; a rank missing (dead, frozen) counts as
    having sent nothing, so what it received is still counted from the others' reports.
    """
    K = len(KINDS)
    sent = np.zeros((size, K), dtype=np.int64)
    received = np.zeros((size, K), dtype=np.int64)
    for rank, table in tables.items():
        matrix = table[:size * K].reshape(size, K).astype(np.int64)
        sent[rank] += matrix.sum(axis=0) + table[size * K:(size + 1) * K].astype(np.int64)
        received += matrix  # what ``rank`` sent each destination, that destination received
        received[rank] += table[(size + 1) * K:].astype(np.int64)
    return {"sent": sent.sum(axis=1).tolist(), "received": received.sum(axis=1).tolist(),
            "by_kind": {"sent": {KINDS[k]: sent[:, k].tolist() for k in range(K) if sent[:, k].any()},
                        "received": {KINDS[k]: received[:, k].tolist() for k in range(K) if received[:, k].any()}},
            "reported": sorted(tables)}


class CountingComm:
    """A communicator that counts the bytes of every send (everything else passes through).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator to wrap.
    traffic : Traffic
        Where to count; shared with the communicators :meth:`Split` makes.
    bell : Doorbell, optional
        The job's doorbell (:mod:`gdcode.runtime.doorbell`): each send rings its destination,
        and sends and collectives are kept in flight there until they complete.
    """

    def __init__(self, comm: Any, traffic: Traffic, ranks: list[int] | None = None,
                 bell: Doorbell | None = None) -> None:
        self._comm = comm
        self.traffic = traffic
        self._ranks = ranks  # this communicator's ranks in the job's (None: the job's own)
        self.bell = bell
        self._deferred: list[int] | None = None  # inside rings_together: the ranks to ring at its end

    def __getattr__(self, name: str) -> Any:
        return getattr(self._comm, name)

    def _dest(self, dest: int) -> int:
        return dest if self._ranks is None else self._ranks[dest]

    def Isend(self, buf: Any, dest: int, tag: int = 0) -> Any:  # noqa: N802 - mpi4py's name
        self.traffic.count_sent(self._dest(dest), kind_of(buf, tag), nbytes(buf))
        return self._rang(self._comm.Isend(buf, dest=dest, tag=tag), dest)

    def Issend(self, buf: Any, dest: int, tag: int = 0) -> Any:  # noqa: N802
        self.traffic.count_sent(self._dest(dest), kind_of(buf, tag), nbytes(buf))
        return self._rang(self._comm.Issend(buf, dest=dest, tag=tag), dest)

    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:  # noqa: N802
        self.traffic.count_sent(self._dest(dest), kind_of(buf, tag), nbytes(buf))
        if self.bell is not None:  # first, and at once even in rings_together: a large Send
            self.bell.sent(None, self._dest(dest))  # completes only once the receiver, awake, polls
        self._comm.Send(buf, dest=dest, tag=tag)

    def Isend_uncounted(self, buf: Any, dest: int, tag: int = 0) -> Any:  # noqa: N802
        """``Isend`` without counting it (a worker's table of counts, sent once it is final)."""
        return self._rang(self._comm.Isend(buf, dest=dest, tag=tag), dest)

    def Iallreduce(self, sendbuf: Any, recvbuf: Any, op: Any) -> Any:  # noqa: N802
        self._collective("allreduce", sendbuf, recvbuf)
        return self._rang(self._comm.Iallreduce(sendbuf, recvbuf, op=op))

    def Ialltoall(self, sendbuf: Any, recvbuf: Any) -> Any:  # noqa: N802
        self._collective("alltoall", sendbuf, recvbuf)
        return self._rang(self._comm.Ialltoall(sendbuf, recvbuf))

    def Ibarrier(self) -> Any:  # noqa: N802
        return self._rang(self._comm.Ibarrier())

    def _rang(self, request: Any, dest: int | None = None) -> Any:
        """Ring ``dest``'s doorbell and keep ``request`` in flight there (without a doorbell: nothing)."""
        if self.bell is None:
            return request
        to = None if dest is None else self._dest(dest)
        if to is not None and self._deferred is not None:
            self._deferred.append(to)
            to = None
        self.bell.sent(request, to)
        return request

    @contextlib.contextmanager
    def rings_together(self) -> Iterator[None]:
        """Ring the destinations of the block's non-blocking sends on this communicator only at
        its end, all at once
        (:meth:`~gdcode.runtime.doorbell.Doorbell.ring_all`): a rank sending to many does not
        lose its core to each receiver it wakes before it has sent to the next."""
        if self.bell is None or self._deferred is not None:
            yield
            return
        self._deferred = []
        try:
            yield
        finally:
            ranks, self._deferred = self._deferred, None
            self.bell.ring_all(ranks)

    def _collective(self, kind: str, sendbuf: Any, recvbuf: Any) -> None:
        self.traffic.collective_sent[_KIND_INDEX[kind]] += nbytes(sendbuf)
        self.traffic.collective_received[_KIND_INDEX[kind]] += nbytes(recvbuf)

    def Split(self, color: int = 0, key: int = 0) -> Any:  # noqa: N802
        sub = self._comm.Split(color, key)
        from mpi4py import MPI

        if sub == MPI.COMM_NULL:
            return sub
        members = sub.allgather(self._dest(self._comm.Get_rank()))
        return CountingComm(sub, self.traffic, members, self.bell)
