"""Hogwild mode: an asynchronous parameter server on rank 0.

Worker (rank ``i + 1``), per step ``t = 1..--iterations``:
  1. if its last push asked for the model, wait for the server's answer (one round trip, the
     server answers as soon as it has applied the push); adopt the newest model that came;
  2. compute an update on a minibatch of its partition at its local model: the SGD step
     ``-eta_t g`` (:mod:`gdcode.sgd`; on CSR rows only the batch's columns, sent as indices
     and values), or with ``--threads T > 1`` the change made by the compiled lock-free
     Hogwild kernel running T threads over the partition;
  3. serve its injected pause (``--delay``) in slices, polling for models and STOP;
  4. push the update with the version of the model it was computed on, without waiting for
     it to be applied, and apply it to its local model; every ``--pull-every`` steps the push
     also asks for the server's model, which the next step starts from. Between pulls a worker
     runs on its own model, at most ``--pull-every`` of its steps away from the server's.

Server (rank 0): applies each update as it arrives (``w += delta``), unless it was computed
on a model more than ``--max-staleness`` versions old (:class:`gdcode.sgd.Staleness`), and
answers pull requests. Every ``--eval-every`` seconds it copies its model and evaluates the
copy on a helper thread, so evaluation is neither on the workers' path nor in ``elapsed``;
the line's ``elapsed`` is when the model reached that version (the last update applied).

Records: ``metrics.jsonl`` has one line per evaluation, ``iteration`` being the server
model's version (updates applied); the first line is the initial model. ``workers.csv`` has
one row per pushed update: ``iteration`` the worker's step, ``arrival`` the seconds since the
start when the server took it, ``status`` ``used`` (applied) or ``ignored`` (dropped as stale).
"""

from __future__ import annotations

import math
import time

import numpy as np

from gdcode.results import RunWriter
from gdcode.runtime import asynccommon as ac
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context, gather_hosts_on_workers, metadata
from gdcode.sgd import Staleness, dense_gradient, sparse_step

#: payload of an update after the header: base version, nnz (-1: dense), then values
UPDATE_META = 2



def update_size(d: int, sparse: bool) -> int:
    """Length of the largest update message."""
    return tp.HEADER + UPDATE_META + (2 * d if sparse else d)


def pack_update(buf: np.ndarray, step: int, seconds: float, pull: bool, base: int, d: int,
                cols: np.ndarray | None, delta: np.ndarray) -> np.ndarray:
    """Write an update into ``buf``; return the slice to send (sparse when that is shorter)."""
    tp.pack(buf, ac.UPDATE, step, seconds, int(pull))
    buf[tp.HEADER] = base
    p = tp.HEADER + UPDATE_META
    if cols is not None and 2 * cols.size < d:
        k = cols.size
        buf[tp.HEADER + 1] = k
        buf[p:p + k] = cols
        buf[p + k:p + 2 * k] = delta
        return buf[:p + 2 * k]
    buf[tp.HEADER + 1] = -1
    if cols is None:
        buf[p:p + d] = delta
    else:
        buf[p:p + d] = 0.0
        buf[p + cols] = delta
    return buf[:p + d]


def apply_update(w: np.ndarray, msg: np.ndarray) -> None:
    """``w += delta`` for an update message (dense or indices and values)."""
    p = tp.HEADER + UPDATE_META
    k = int(msg[tp.HEADER + 1])
    if k < 0:
        w += msg[p:p + w.size]
    else:
        cols = msg[p:p + k].astype(np.intp)
        np.add.at(w, cols, msg[p + k:p + 2 * k])


# ----------------------------------------------------------------------------- server


class Server:
    """Rank 0 of a hogwild run."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.cfg, self.comm = ctx, ctx.options, ctx.comm
        self.W, self.d = ctx.options.workers, ctx.n_params
        import scipy.sparse as sp

        self.sparse = sp.issparse(ctx.source.train_rows(0, 1)[0])

    def run(self) -> int:
        from mpi4py import MPI

        ctx, cfg, comm, W, d = self.ctx, self.cfg, self.comm, self.W, self.d
        writer = RunWriter(ctx.run_dir)
        writer.write_metadata(metadata(ctx, {"delay": ctx.delay.describe(), "mode": "hogwild"}))
        evaluator = ac.Evaluator(ctx, writer, threaded=True)
        w = ctx.w0.copy()
        evaluator.submit(0, 0.0, w.copy())  # the initial model, before the clock starts
        evaluator.flush(wait=True)
        stale = Staleness(cfg.max_staleness, W)
        pushed = np.zeros(W, dtype=np.int64)
        size = update_size(d, self.sparse)
        bufs = [np.empty(size) for _ in range(W)]
        reqs = [comm.Irecv(bufs[i], source=i + 1, tag=ac.TAG_UPDATE) for i in range(W)]
        models = tp.SendPool(tp.HEADER + d)
        stop_msg = tp.pack(np.zeros(tp.HEADER), tp.STOP, 0)
        stop_reqs = []
        stopped = [False] * W
        done = [False] * W
        usage = np.zeros((W, 2))
        rows: list[tuple] = []
        backoff = tp.Backoff()
        tp.barrier(comm)
        cpu0, t0 = time.process_time(), time.perf_counter()
        deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
        status, last_apply, next_eval, grace, evaluated = "ok", 0.0, cfg.eval_every, None, 0

        def stop_all() -> None:
            for i in range(W):
                if not stopped[i]:
                    stopped[i] = True
                    stop_reqs.append(comm.Isend(stop_msg, dest=i + 1, tag=ac.TAG_MODEL))

        while not all(done):
            idx = MPI.Request.Testsome(reqs)
            now = time.perf_counter() - t0
            for s in idx or ():
                msg = bufs[s]
                kind, step, _, pull = tp.header(msg)
                if kind == tp.DONE:
                    done[s] = True
                    usage[s] = msg[tp.HEADER:tp.HEADER + 2]
                    if not stopped[s]:
                        stopped[s] = True
                        stop_reqs.append(comm.Isend(stop_msg, dest=s + 1, tag=ac.TAG_MODEL))
                    continue
                pushed[s] += 1
                if stale.admit(s, int(msg[tp.HEADER])):
                    apply_update(w, msg)
                    last_apply = now
                    rows.append((step, s + 1, now, "used"))
                else:
                    rows.append((step, s + 1, now, "ignored"))
                if pull and not stopped[s]:
                    out = models.get()
                    tp.pack(out, tp.MODEL, stale.version)
                    out[tp.HEADER:] = w
                    models.sent(out, [comm.Isend(out, dest=s + 1, tag=ac.TAG_MODEL)])
                reqs[s] = comm.Irecv(bufs[s], source=s + 1, tag=ac.TAG_UPDATE)
            if idx:
                backoff.reset()
            if len(rows) >= 256:
                writer.append_workers(rows)
                rows = []
            if now >= next_eval and not evaluator.busy() and grace is None and stale.version != evaluated:
                # elapsed: when the model reached this version (evaluation time is not training time)
                evaluator.submit(stale.version, last_apply, w.copy())
                evaluated, next_eval = stale.version, now + cfg.eval_every
            evaluator.flush()
            if grace is None and evaluator.reached(cfg.target_loss):
                stop_all()
                grace = time.monotonic() + ac.SHUTDOWN_GRACE
            if grace is None and deadline is not None and time.monotonic() > deadline:
                status = "timeout"
                stop_all()
                grace = time.monotonic() + ac.SHUTDOWN_GRACE
            if grace is not None and time.monotonic() > grace:
                ac.abort(comm, writer, "hogwild workers did not stop")
            if not idx:
                backoff.sleep()
        wall = time.perf_counter() - t0
        writer.append_workers(rows)
        tp.poll_until(lambda: MPI.Request.Testall(stop_reqs), time.monotonic() + ac.SHUTDOWN_GRACE)
        models.wait_all(time.monotonic() + ac.SHUTDOWN_GRACE)
        evaluator.flush(wait=True)
        if evaluator.last is None or evaluator.last["iteration"] != stale.version:
            evaluator.submit(stale.version, last_apply, w.copy())
        extra = {"worker_updates": stale.applied.tolist(), "worker_pushes": pushed.tolist(),
                 "dropped_stale": stale.dropped.tolist(), "max_staleness_seen": stale.max_seen,
                 "worker_cpu_seconds": usage[:, 0].tolist(), "worker_wall_seconds": usage[:, 1].tolist(),
                 "coordinator_cpu_seconds": time.process_time() - cpu0, "coordinator_wall_seconds": wall}
        return ac.write_summary(ctx, writer, evaluator, status, w, stale.version, last_apply, extra)


def coordinate(ctx: Context) -> int:
    """Run the parameter server; return the process exit code."""
    return Server(ctx).run()


# ----------------------------------------------------------------------------- worker


class _Inbox:
    """Models and STOP from the server, received as they come and adopted only between steps."""

    def __init__(self, comm, d: int) -> None:
        self.comm = comm
        self.buf = np.empty(tp.HEADER + d)
        self.newest = np.empty(d)
        self.version = -1
        self.received = 0
        self.stop = False
        self.req = comm.Irecv(self.buf, source=0, tag=ac.TAG_MODEL)

    def poll(self) -> bool:
        """Receive what has come; True once STOP has."""
        while not self.stop and self.req.Test():
            kind, version, _, _ = tp.header(self.buf)
            if kind == tp.STOP:
                self.stop = True
                break
            self.received += 1
            if version > self.version:
                self.newest[:] = self.buf[tp.HEADER:]
                self.version = version
            self.req = self.comm.Irecv(self.buf, source=0, tag=ac.TAG_MODEL)
        return self.stop


def work(ctx: Context) -> int:
    """Run one hogwild worker; return the process exit code."""
    cfg, comm, me, d = ctx.options, ctx.comm, ctx.worker, ctx.n_params
    gather_hosts_on_workers(ctx)
    rows = ac.LocalRows(ctx, cfg.batch_size)
    schedule = ctx.problem.schedule
    threads = cfg.threads
    model = ctx.model
    w = ctx.w0.copy()
    version = 0
    grad = np.empty(d)
    inbox = _Inbox(comm, d)
    sends = tp.SendPool(update_size(d, rows.sparse))
    tp.barrier(comm)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    steps = requested = 0
    backoff = tp.Backoff()
    for t in range(1, cfg.iterations + 1):
        backoff.reset()
        while not inbox.poll() and inbox.received < requested:  # the pull asked for with the last push
            backoff.sleep()
        if inbox.stop:
            break
        if inbox.version > version:
            w[:] = inbox.newest
            version = inbox.version
        t_start = time.perf_counter()
        lr = schedule(t)
        cols = None
        if threads > 1:
            delta = _kernel_step(model, rows, w, lr, threads, cfg.seed, me, t, ctx.l2)
            if rows.sparse:
                cols = np.flatnonzero(delta)
                delta = delta[cols]
        else:
            Xb, yb = rows.batch()
            if rows.sparse:
                cols, delta, _ = sparse_step(model, Xb, yb, w, ctx.l2, rows.share, lr)
            else:
                dense_gradient(model, Xb, yb, w, ctx.l2, grad, ac.BLOCK_ROWS, inbox.poll)
                delta = -lr * grad
        compute = time.perf_counter() - t_start
        if inbox.stop or tp.pause(ctx.delay.draw(me, t, rows.load, compute), inbox.poll):
            break
        pull = t % cfg.pull_every == 0
        requested += pull
        buf = sends.get()
        msg = pack_update(buf, t, compute, pull, version, d, cols, delta)
        sends.sent(buf, [comm.Isend(msg, dest=0, tag=ac.TAG_UPDATE)])
        if cols is None:
            w += delta
        else:
            w[cols] += delta
        steps = t
    usage = ac.usage_since(cpu0, wall0)
    done = tp.pack(np.empty(tp.HEADER + 2), tp.DONE, steps)
    done[tp.HEADER:] = usage
    sends.sent(done, [comm.Isend(done, dest=0, tag=ac.TAG_UPDATE)])
    backoff.reset()
    while not inbox.poll():
        backoff.sleep()
    sends.wait_all()
    return 0


def _kernel_step(model, rows: ac.LocalRows, w: np.ndarray, lr: float, threads: int, seed: int, me: int,
                 t: int, l2: float) -> np.ndarray:
    """The change the T-thread lock-free Hogwild kernel (:meth:`gdcode.models.Model.hogwild`)
    makes to ``w`` in one step.

    The threads share ``b`` (``--batch-size``, the partition's size when 0) single-row steps
    over the partition, each with step size ``lr / b``: in expectation the minibatch step.
    """
    b = rows.batch_size
    per_thread = max(1, math.ceil(b / threads))
    local = w.copy()
    step_seed = int(np.random.default_rng([seed, 0x4067, me, t]).integers(0, 2**63 - 1))
    model.hogwild(rows.X, rows.y, local, lr / (per_thread * threads), per_thread, step_seed,
                  n_threads=threads, l2=l2)
    local -= w
    return local
