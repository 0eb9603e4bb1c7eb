"""What the workers of every mode share: their clock, the DONE report, a partition's rows, fault injection
(and the wait of a model before a coded worker takes it).

Every worker (rank ``i + 1``) of the modes other than coded holds partition ``i`` of W
contiguous partitions (:func:`gdcode.data.partition_bounds`, the uncoded layout), so all
modes train on the same rows.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from gdcode.kernels.reference import issparse
from gdcode.runtime import phases
from gdcode.runtime import protocol as pr
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context
from gdcode.sgd import BatchSampler, column_shares

#: rows a worker processes between two polls
BLOCK_ROWS = 2048


class WorkerClock:
    """CPU and wall seconds of a worker's training loop, from when it is made."""

    def __init__(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def usage(self) -> np.ndarray:
        """``(CPU seconds, wall seconds)`` since the start."""
        return np.array([time.process_time() - self.cpu0, time.perf_counter() - self.wall0])


class QueueWait:
    """How long a model waited between rank 0 sending it and the worker taking it, taken off the
    injected pauses the worker serves for that model.

    In the cluster a run emulates each worker has a core of its own and takes a model as it comes,
    so its pause counts from the send. Ranks sharing the cores of one host take it in turns
    instead (48 workers on 2 cores took a model up to 12 ms after it went out, traced on an earlier
    VM of the same model), which put frc and
    approx at 1.039-1.069 of their ideal at W = 48, against 1.008-1.011 with the wait taken off
    (``gdcode bench engine --workers 48``'s settings, three runs each, alternating). That wait is
    the emulation's, so it is taken off the pauses (a pause shorter than the wait is served as
    none, and the rest comes off the model's next pauses). It is measured only when ``enabled``:
    when the job's ranks share a host and no emulated link is between them (the job has
    doorbells), so that a model's send time, rank 0's ``perf_counter`` in its header, is on the
    worker's clock, and the wait is not a link's delay the run studies.

    Parameters
    ----------
    enabled : bool
        Whether to take the wait off (False: every pause is served whole).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.left = 0.0

    def took(self, sent_at: float) -> None:
        """The worker has taken a model rank 0 sent at ``sent_at`` (its ``perf_counter``)."""
        self.left = max(0.0, time.perf_counter() - sent_at) if self.enabled else 0.0

    def serve(self, pause: float) -> float:
        """The part of ``pause`` (seconds) the worker still has to serve."""
        taken = min(self.left, max(pause, 0.0))
        self.left -= taken
        return pause - taken


def send_done(comm: Any, steps: int, usage: WorkerClock | np.ndarray, sent: int, not_sent: int = 0,
              wait: bool = True) -> Any:
    """Tell rank 0 this worker's loop has ended (:data:`~gdcode.runtime.protocol.DONE`).

    ``usage`` is the loop's clock or its ``(CPU, wall)`` seconds; ``sent`` counts the messages
    this worker has sent rank 0 so far (rank 0 waits for all of them); ``not_sent`` counts
    models the worker did not send (allreduce, local). With ``wait`` the send completes
    before the return (without spinning); otherwise the request and its buffer are returned.
    """
    buf = pr.DONE.new()
    seconds = usage.usage() if isinstance(usage, WorkerClock) else usage
    pr.DONE.pack(buf, pr.Kind.DONE, steps, part=not_sent, cpu_seconds=seconds[0], wall_seconds=seconds[1],
                 sent=sent, max_rss_mb=phases.max_rss_mb())
    req = comm.Isend(buf, dest=0, tag=pr.Tag.DONE)
    if wait:
        tp.poll_until(req.Test)
        return None
    return req, buf


def parse_failure(text: str, workers: int) -> tuple[int, int]:
    """``W[:T]`` as (worker 1..W, iteration >= 0; 1 when omitted; 0: while it sets up).

    Raises
    ------
    ValueError
        Naming the form when ``text`` is not one.
    """
    target, sep, iteration = text.strip().partition(":")
    try:
        w, t = int(target), int(iteration) if sep else 1
    except ValueError:
        raise ValueError("write W:T, a worker 1..W and an iteration >= 0 (0: during set-up)") from None
    if not 1 <= w <= workers or t < 0:
        raise ValueError(f"write W:T with a worker 1..{workers} and an iteration >= 0 (0: during set-up)")
    return w, t


def injected_failure(worker: int, workers: int) -> int | None:
    """``GDCODE_FAIL_WORKER=W:T`` makes worker W (1-based) raise at iteration T (fault injection for
    tests; coded mode), or while it sets up when T is 0 (every mode: :func:`fail_in_setup`)."""
    spec = os.environ.get("GDCODE_FAIL_WORKER")
    if not spec:
        return None
    target, iteration = parse_failure(spec, workers)
    return iteration if target == worker + 1 else None


def fail_in_setup(worker: int, workers: int) -> None:
    """Raise if ``GDCODE_FAIL_WORKER`` asks worker ``worker`` (0-based) to fail while it sets up (T = 0)."""
    if injected_failure(worker, workers) == 0:
        raise RuntimeError(f"worker {worker + 1}: failure injected during set-up by GDCODE_FAIL_WORKER")


class LocalRows:
    """A worker's partition (rows ``bounds[i]:bounds[i+1]`` of W) and its minibatches.

    Attributes
    ----------
    X, y
        The partition's rows (dense or CSR).
    sparse : bool
        Whether ``X`` is CSR.
    share : numpy.ndarray or None
        :func:`gdcode.sgd.column_shares` of the partition (sparse only).
    load : float
        The worker's fraction of the partitions (1/W), for ``--delay-scale-with-load``.
    """

    def __init__(self, ctx: Context, batch_size: int) -> None:
        W, me = ctx.options.workers, ctx.worker
        bounds = ctx.problem.partition_bounds()
        lo, hi = int(bounds[me]), int(bounds[me + 1])
        self.X, self.y = ctx.rows(lo, hi)
        self.sparse = issparse(self.X)
        self.n_rows = hi - lo
        self.sampler = BatchSampler(self.n_rows, batch_size, np.random.default_rng([ctx.options.seed, 0xBA7C, me]))
        self.share = column_shares(self.X) if self.sparse else None
        self.load = 1.0 / W

    @property
    def batch_size(self) -> int:
        return self.sampler.size

    def batch(self) -> tuple:
        """The next minibatch ``(X_b, y_b)`` (the whole partition when ``--batch-size`` is 0)."""
        idx = self.sampler.next()
        if idx is None:
            return self.X, self.y
        return self.X[idx], self.y[idx]
