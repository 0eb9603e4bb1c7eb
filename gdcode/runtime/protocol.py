"""Every message of the runtime: its tag, its kind and its buffer layout.

A hot-path message is one float64 numpy buffer, sent with ``Isend``/``Irecv`` (never a pickle).
It starts with a :data:`HEADER` of four entries, ``(kind, iteration, seconds, part)``, then a
layout's named scalar fields, then at most one vector (a model, a gradient, values). A
:class:`Layout` names those positions and returns views of the same buffer, so a message is
read and written in place::

    buf = MODEL.new(d)                     # header + d parameters
    MODEL.pack(buf, Kind.MODEL, t)         # the header
    MODEL.vector(buf)[:] = w               # the parameters, in place
    kind, t, _, _ = header(received)

Who sends what (rank 0 coordinates, ranks 1..W work):

=========  ====================  =====================================  ================
tag        direction             kinds (layout)                         modes
=========  ====================  =====================================  ================
CONTROL    rank 0 -> worker      MODEL (:data:`MODEL`), STOP            coded, hogwild
DONE       worker -> rank 0      DONE (:data:`DONE`): end of its loop   all
REPLY + k  worker -> rank 0      GRADIENT (:data:`GRADIENT`), message k coded
UPDATE     worker -> rank 0      UPDATE (:data:`UPDATE`)                hogwild
ASK        any -> worker         ASK_* (:data:`ASK`), STOP              gossip, allreduce, local
ANSWER     worker -> worker      ANSWER (:data:`ANSWER`)                gossip
ROOT       worker -> rank 0      ANSWER, FINAL (:data:`REPORT`);        gossip;
                                 MODEL (:data:`MODEL`)                  allreduce, local
RECORDS    worker -> rank 0      a table of per-step records            gossip, allreduce, local
TRAFFIC    worker -> rank 0      its bytes sent (its last message)      all
=========  ====================  =====================================  ================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np


class Tag(IntEnum):
    """MPI tags. A coded reply's message ``k`` uses ``REPLY + k`` (:func:`reply_tag`)."""

    CONTROL = 11
    DONE = 12
    UPDATE = 41
    ASK = 43
    ANSWER = 44
    ROOT = 45
    RECORDS = 46
    TRAFFIC = 47
    ROLL = 48
    REPLY = 100


def reply_tag(message: int) -> int:
    """The tag of message ``message`` of a coded worker's reply."""
    return int(Tag.REPLY) + int(message)


class Kind(IntEnum):
    """What a message is: ``header[0]``."""

    MODEL = 0
    STOP = 1
    GRADIENT = 2
    DONE = 3
    UPDATE = 10
    ASK_PULL = 11
    ASK_ELASTIC = 12
    ASK_PUSH = 13
    ASK_EVAL = 14
    ANSWER = 15
    FINAL = 16


#: entries of the header: kind, iteration, seconds, part
HEADER = 4


class Header(NamedTuple):
    """A message's header: its kind, iteration (or step, version), seconds and part."""

    kind: int
    iteration: int
    seconds: float
    part: int


def header(buf: np.ndarray) -> Header:
    """The header of a received buffer."""
    return Header(int(buf[0]), int(buf[1]), float(buf[2]), int(buf[3]))


def pack_header(buf: np.ndarray, kind: int, iteration: int, seconds: float = 0.0, part: int = 0) -> np.ndarray:
    """Write the header into ``buf`` in place and return ``buf``."""
    buf[0], buf[1], buf[2], buf[3] = kind, iteration, seconds, part
    return buf


@dataclass(frozen=True)
class Layout:
    """A message layout: the header, named scalar ``fields``, then an optional ``vector``.

    Parameters
    ----------
    name : str
        What the message is, for errors and docs.
    fields : tuple of str
        Scalars after the header, in order.
    vector : str, optional
        The name of the trailing vector (its length is given when a buffer is made).
    """

    name: str
    fields: tuple[str, ...] = ()
    vector_name: str | None = None

    @property
    def start(self) -> int:
        """Index of the first vector entry (after the header and the fields)."""
        return HEADER + len(self.fields)

    def size(self, n: int = 0) -> int:
        """Buffer length for a vector of ``n`` entries."""
        return self.start + (n if self.vector_name is not None else 0)

    def new(self, n: int = 0) -> np.ndarray:
        """A new (uninitialised) buffer for a vector of ``n`` entries."""
        return np.empty(self.size(n))

    def index(self, field: str) -> int:
        """Position of ``field`` in the buffer."""
        return HEADER + self.fields.index(field)

    def get(self, buf: np.ndarray, field: str) -> float:
        """The scalar ``field`` of ``buf``."""
        return float(buf[self.index(field)])

    def set(self, buf: np.ndarray, **values: float) -> None:
        """Write scalar fields in place."""
        for field, value in values.items():
            buf[self.index(field)] = value

    def scalars(self, buf: np.ndarray) -> np.ndarray:
        """A view of every scalar field, in order."""
        return buf[HEADER:self.start]

    def vector(self, buf: np.ndarray, n: int | None = None) -> np.ndarray:
        """A view of the vector (its first ``n`` entries, or the rest of the buffer)."""
        return buf[self.start:] if n is None else buf[self.start:self.start + n]

    def pack(self, buf: np.ndarray, kind: int, iteration: int, seconds: float = 0.0, part: int = 0,
             **values: float) -> np.ndarray:
        """Write the header and scalar fields in place; return ``buf``."""
        pack_header(buf, kind, iteration, seconds, part)
        self.set(buf, **values)
        return buf


#: rank 0 -> worker (coded, hogwild): the point to compute at; header iteration t (hogwild: the
#: server model's version), seconds (coded) rank 0's ``perf_counter`` when it sent the model. Also
#: worker 1 -> rank 0 (allreduce, local): a model to evaluate, seconds = elapsed, part = 0.
MODEL = Layout("model", vector_name="params")
#: rank 0 -> worker: stop; no payload.
STOP = Layout("stop")
#: worker -> rank 0 (coded): ``y_ik``; iteration t, seconds = compute seconds, part = message k.
GRADIENT = Layout("gradient", vector_name="grad")
#: worker -> rank 0 (every mode): the end of the training loop; iteration = steps taken,
#: part = models not sent (allreduce, local); the loop's CPU and wall seconds, and how many
#: messages the worker sent rank 0 before this one (rank 0 has them all once it has counted
#: as many: tags differ, so MPI does not order them for it).
#: worker -> rank 0: the end of its loop; ``max_rss_mb`` is the process's peak resident memory
DONE = Layout("done", ("cpu_seconds", "wall_seconds", "sent", "max_rss_mb"))
#: worker -> server (hogwild): an update; iteration = step, seconds = compute, part = 1 to pull
#: the server's model. ``nnz`` < 0: dense ``values`` of length d; else ``nnz`` indices then
#: ``nnz`` values. ``base`` is the model version it was computed on.
UPDATE = Layout("update", ("base", "nnz"), vector_name="values")
#: worker -> worker (gossip): a request (``ASK_PULL`` carries no vector; ``ASK_ELASTIC`` the
#: asker's model; ``ASK_PUSH`` a push-sum share with its ``weight``); iteration = the step.
#: rank 0 -> worker: ``ASK_EVAL`` (no vector), or STOP.
ASK = Layout("ask", ("weight",), vector_name="params")
#: worker -> worker (gossip): the answer to a pull or elastic request.
ANSWER = Layout("answer", ("clock", "loss"), vector_name="params")
#: per-worker counts a gossip worker reports to rank 0
GOSSIP_STATS = ("gossips", "mixed", "timeouts", "late", "answered")
#: worker -> rank 0 (gossip): its model and counts; kind ANSWER (to ``ASK_EVAL``, iteration =
#: the request's tag) or FINAL (after STOP).
REPORT = Layout("report", ("steps", "weight", "cpu_seconds", "wall_seconds", *GOSSIP_STATS), vector_name="params")


def send_records(comm: Any, rows: np.ndarray, dest: int = 0) -> tuple[Any, np.ndarray]:
    """``Isend`` a float64 table to ``dest`` on :attr:`Tag.RECORDS`; the request and the buffer to keep."""
    buf = np.ascontiguousarray(rows, dtype=np.float64).reshape(-1)
    return comm.Isend(buf, dest=dest, tag=Tag.RECORDS), buf


def recv_records(comm: Any, source: int, n_cols: int, deadline: float | None = None) -> np.ndarray:
    """Receive :func:`send_records`'s table from ``source`` without spinning; shape ``(k, n_cols)``."""
    from mpi4py import MPI

    from gdcode.runtime.transport import poll_until

    status = MPI.Status()
    poll_until(lambda: comm.Iprobe(source=source, tag=Tag.RECORDS, status=status), deadline)
    buf = np.empty(status.Get_count(MPI.DOUBLE))
    comm.Recv(buf, source=source, tag=Tag.RECORDS)
    return buf.reshape(-1, n_cols)
