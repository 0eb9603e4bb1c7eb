"""What the modes other than coded share: tags, a worker's rows, paced pauses, the evaluator.

Every worker holds partition ``i`` of W contiguous partitions (:func:`gdcode.data.partition_bounds`,
the uncoded layout), so all modes train on the same rows. Rank 0 evaluates models that
workers send it or that it holds; no worker waits on it.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from gdcode.data import partition_bounds
from gdcode.results import RunWriter
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context
from gdcode.sgd import BatchSampler, column_shares

# tags of the modes other than coded (apart from coded mode's TAG_REPLY + k)
TAG_UPDATE = 41  # worker -> parameter server: updates, then DONE (hogwild)
TAG_MODEL = 42  # parameter server -> worker: models, then STOP (hogwild)
TAG_ASK = 43  # anyone -> worker: a request its responder answers, or STOP (gossip, allreduce, local)
TAG_ANSWER = 44  # worker -> the worker whose request it answers (gossip)
TAG_ROOT = 45  # worker -> rank 0: models to evaluate, DONE, FINAL
TAG_RECORDS = 46  # worker -> rank 0 at the end: its per-step records

# message kinds (header[0]); transport's MODEL, STOP and DONE are reused
UPDATE, ASK_PULL, ASK_ELASTIC, ASK_PUSH, ASK_EVAL, ANSWER, FINAL = 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0

#: rows a worker processes between two polls
BLOCK_ROWS = 2048
#: seconds to wait for the other ranks once the run is over before aborting the job
SHUTDOWN_GRACE = 10.0


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
        import scipy.sparse as sp

        W, me = ctx.options.workers, ctx.worker
        bounds = partition_bounds(ctx.source.n_train, W)
        lo, hi = int(bounds[me]), int(bounds[me + 1])
        self.X, self.y = ctx.rows(lo, hi)
        self.sparse = sp.issparse(self.X)
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


class Evaluator:
    """Rank 0's evaluation of models, written to ``metrics.jsonl`` in submission order.

    With ``threaded`` the losses are computed on a helper thread (the kernels release the
    GIL), so a parameter server keeps applying updates meanwhile; the models are copies
    taken by the caller.
    """

    def __init__(self, ctx: Context, writer: RunWriter, threaded: bool = True) -> None:
        import scipy.stats  # noqa: F401 -- test metrics need it; importing it takes ~1 s, so not on the clock

        self.ctx = ctx
        self.writer = writer
        self.Xtr, self.ytr = ctx.rows(0, ctx.source.n_train)
        self.Xte, self.yte = ctx.test_set()
        self.pool = ThreadPoolExecutor(max_workers=1) if threaded else None
        self.pending: deque[tuple[dict, Future | dict]] = deque()
        self.last: dict | None = None

    def metrics(self, params: np.ndarray) -> dict:
        """``train_loss`` (the objective with its L2 term) and the held-out metrics of ``params``."""
        model = self.ctx.model
        out = {"train_loss": model.objective(self.Xtr, self.ytr, params, self.ctx.l2)}
        out.update(model.test_metrics(self.Xte, self.yte, params))
        return out

    def submit(self, iteration: int, elapsed: float, params: np.ndarray, **extra) -> None:
        """Evaluate ``params`` (absorbing ``iteration`` updates, taken at ``elapsed`` seconds)."""
        head = {"iteration": int(iteration), "elapsed": float(elapsed)}
        if self.pool is None:
            self.pending.append(({**head, **extra}, self.metrics(params)))
        else:
            self.pending.append(({**head, **extra}, self.pool.submit(self.metrics, params)))
        self.flush()

    def busy(self) -> bool:
        """Whether an evaluation is still running."""
        return bool(self.pending)

    def flush(self, wait: bool = False) -> list[dict]:
        """Write every finished evaluation (all of them with ``wait``); return the records written."""
        written = []
        while self.pending:
            head, result = self.pending[0]
            if isinstance(result, Future):
                if not (wait or result.done()):
                    break
                result = result.result()
            self.pending.popleft()
            record = {"iteration": head["iteration"], "elapsed": head["elapsed"], **result,
                      **{k: v for k, v in head.items() if k not in ("iteration", "elapsed")}}
            self.writer.append_metrics(record)
            self.last = record
            written.append(record)
        return written

    def reached(self, target: float | None) -> bool:
        """Whether the last written record's training loss is at or below ``target``."""
        return target is not None and self.last is not None and self.last["train_loss"] <= target

    def close(self) -> None:
        self.flush(wait=True)
        if self.pool is not None:
            self.pool.shutdown()


def send_records(comm, rows: np.ndarray, dest: int = 0) -> object:
    """``Isend`` a float64 table to ``dest`` on :data:`TAG_RECORDS`; returns the request."""
    buf = np.ascontiguousarray(rows, dtype=np.float64).reshape(-1)
    return comm.Isend(buf, dest=dest, tag=TAG_RECORDS), buf


def recv_records(comm, source: int, n_cols: int, deadline: float | None = None) -> np.ndarray:
    """Receive :func:`send_records`'s table from ``source`` without spinning; shape ``(k, n_cols)``."""
    from mpi4py import MPI

    status = MPI.Status()
    tp.poll_until(lambda: comm.Iprobe(source=source, tag=TAG_RECORDS, status=status), deadline)
    buf = np.empty(status.Get_count(MPI.DOUBLE))
    comm.Recv(buf, source=source, tag=TAG_RECORDS)
    return buf.reshape(-1, n_cols)


def usage_since(cpu0: float, wall0: float) -> np.ndarray:
    """``(CPU seconds, wall seconds)`` of this process since ``cpu0, wall0``."""
    return np.array([time.process_time() - cpu0, time.perf_counter() - wall0])


def write_summary(ctx: Context, writer: RunWriter, evaluator: Evaluator, status: str, params: np.ndarray,
                  iterations: int, elapsed: float, extra: dict) -> int:
    """Write ``model.npy`` and ``summary.json``; return the exit code (3 after ``--timeout``)."""
    cfg = ctx.options
    evaluator.close()
    writer.save_model(params)
    summary = {"status": status, "iterations": int(iterations), "elapsed": float(elapsed)}
    summary.update(evaluator.metrics(params))
    if cfg.target_loss is not None:
        summary["target_loss_reached"] = bool(summary["train_loss"] <= cfg.target_loss)
    summary.update(extra)
    writer.write_summary(summary)
    writer.close()
    if status == "timeout":
        print(f"gdcode run: error: --timeout {cfg.timeout:g} s reached (--mode {cfg.mode}); the run directory "
              f"{ctx.run_dir} has every evaluation made", file=sys.stderr)
        return 3
    return 0


def abort(comm, writer: RunWriter | None, what: str) -> None:
    """End the job when other ranks do not finish within :data:`SHUTDOWN_GRACE` seconds."""
    if writer is not None:
        writer.close()
    print(f"gdcode run: error: {what} within {SHUTDOWN_GRACE:g} s; aborting the job", file=sys.stderr)
    comm.Abort(3)
