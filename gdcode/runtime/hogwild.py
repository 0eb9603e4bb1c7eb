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

from gdcode.runtime import protocol as pr
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context
from gdcode.runtime.coordinator import Coordinator
from gdcode.runtime.worker import BLOCK_ROWS, LocalRows, WorkerClock, send_done
from gdcode.sgd import Staleness, dense_gradient, sparse_step


def update_size(d: int, sparse: bool) -> int:
    """Length of the largest update message."""
    return pr.UPDATE.size(2 * d if sparse else d)


def pack_update(buf: np.ndarray, step: int, seconds: float, pull: bool, base: int, d: int,
                cols: np.ndarray | None, delta: np.ndarray) -> np.ndarray:
    """Write an update into ``buf``; return the slice to send (sparse when that is shorter)."""
    pr.UPDATE.pack(buf, pr.Kind.UPDATE, step, seconds, int(pull), base=base)
    p = pr.UPDATE.start
    if cols is not None and 2 * cols.size < d:
        k = cols.size
        pr.UPDATE.set(buf, nnz=k)
        buf[p:p + k] = cols
        buf[p + k:p + 2 * k] = delta
        return buf[:p + 2 * k]
    pr.UPDATE.set(buf, nnz=-1)
    if cols is None:
        buf[p:p + d] = delta
    else:
        buf[p:p + d] = 0.0
        buf[p + cols] = delta
    return buf[:p + d]


def apply_update(w: np.ndarray, msg: np.ndarray) -> None:
    """``w += delta`` for an update message (dense or indices and values)."""
    p = pr.UPDATE.start
    k = int(pr.UPDATE.get(msg, "nnz"))
    if k < 0:
        w += msg[p:p + w.size]
    else:
        cols = msg[p:p + k].astype(np.intp)
        np.add.at(w, cols, msg[p + k:p + 2 * k])


# ----------------------------------------------------------------------------- server


class Server(Coordinator):
    """Rank 0 of a hogwild run: applies updates as they come, answers pulls, evaluates on a thread."""

    stop_tag = pr.Tag.CONTROL

    def prepare(self) -> None:
        from gdcode.kernels.reference import issparse

        ctx, W = self.ctx, self.W
        self.d = ctx.n_params
        self.w = ctx.w0.copy()
        self.evaluator.submit(0, 0.0, self.w.copy())  # the initial model, before the clock starts
        self.evaluator.flush(wait=True)
        self.stale = Staleness(self.options.max_staleness, W)
        self.pushed = np.zeros(W, dtype=np.int64)
        self.rows: list[tuple] = []
        self.boxes = [self.outbox(i, pr.Tag.CONTROL, pr.MODEL.size(self.d)) for i in range(W)]
        self.last_apply = 0.0
        self.model_buf = pr.MODEL.new(self.d)
        size = update_size(self.d, issparse(ctx.source.train_rows(0, 1)[0]))
        for i in range(W):
            self.listen(i, pr.Tag.UPDATE, np.empty(size), self._on_update)

    def _on_update(self, s: int, msg: np.ndarray) -> None:
        now = time.perf_counter() - self._wall0
        _, step, _, pull = pr.header(msg)
        self.pushed[s] += 1
        if self.stale.admit(s, int(pr.UPDATE.get(msg, "base"))):
            apply_update(self.w, msg)
            self.last_apply = now
            self.rows.append((step, s + 1, now, "used"))
        else:
            self.rows.append((step, s + 1, now, "ignored"))
        if pull and not self._stopped[s]:
            out = self.model_buf
            pr.MODEL.pack(out, pr.Kind.MODEL, self.stale.version)
            pr.MODEL.vector(out)[:] = self.w
            self.boxes[s].offer(out.copy())  # a worker waits for its pull: at most one is in flight

    def on_done(self, worker: int) -> None:
        self.stop(worker)

    def on_death(self, worker: int) -> None:
        self.rows.append((int(self.pushed[worker]) + 1, worker + 1, time.perf_counter() - self._wall0, "dead"))
        super().on_death(worker)

    def loop(self) -> None:
        opts, evaluator = self.options, self.evaluator
        next_eval, evaluated = opts.eval_every, 0
        while not self.settled():
            self.idle()
            now = time.perf_counter() - self._wall0
            if len(self.rows) >= 256:
                self.writer.append_workers(self.rows)
                self.rows = []
            if now >= next_eval and not evaluator.busy() and self.stale.version != evaluated:
                # elapsed: when the model reached this version (evaluation time is not training time)
                evaluator.submit(self.stale.version, self.last_apply, self.w.copy())
                evaluated, next_eval = self.stale.version, now + opts.eval_every
            evaluator.flush()
            if evaluator.reached(opts.target_loss):
                return

    def result(self) -> tuple[np.ndarray, int, float, dict]:
        self.writer.append_workers(self.rows)
        self.evaluator.flush(wait=True)
        last = self.evaluator.last
        if last is None or last["iteration"] != self.stale.version:
            self.evaluator.submit(self.stale.version, self.last_apply, self.w.copy())
        stale = self.stale
        extra = {"worker_updates": stale.applied.tolist(), "worker_pushes": self.pushed.tolist(),
                 "dropped_stale": stale.dropped.tolist(), "max_staleness_seen": stale.max_seen}
        return self.w, stale.version, self.last_apply, extra


def coordinate(ctx: Context) -> int:
    """Run the parameter server; return the process exit code."""
    return Server(ctx).run()


# ----------------------------------------------------------------------------- worker


class _Inbox:
    """Models and STOP from the server, received as they come and adopted only between steps."""

    def __init__(self, comm, d: int) -> None:
        self.comm = comm
        self.buf = pr.MODEL.new(d)
        self.newest = np.empty(d)
        self.version = -1
        self.received = 0
        self.stop = False
        self.req = comm.Irecv(self.buf, source=0, tag=pr.Tag.CONTROL)

    def poll(self) -> bool:
        """Receive what has come; True once STOP has."""
        while not self.stop and self.req.Test():
            kind, version, _, _ = pr.header(self.buf)
            if kind == pr.Kind.STOP:
                self.stop = True
                break
            self.received += 1
            if version > self.version:
                self.newest[:] = pr.MODEL.vector(self.buf)
                self.version = version
            self.req = self.comm.Irecv(self.buf, source=0, tag=pr.Tag.CONTROL)
        return self.stop


def work(ctx: Context) -> int:
    """Run one hogwild worker; return the process exit code."""
    cfg, comm, me, d = ctx.options, ctx.comm, ctx.worker, ctx.n_params
    rows = LocalRows(ctx, cfg.batch_size)
    schedule = ctx.problem.schedule
    threads = cfg.threads
    model = ctx.model
    w = ctx.w0.copy()
    version = 0
    grad = np.empty(d)
    inbox = _Inbox(comm, d)
    sends = tp.SendPool(update_size(d, rows.sparse))
    tp.barrier(comm)
    clock = WorkerClock()
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
            if rows.sparse and model.sparse_steps:  # not for a model mixing the columns (mlp)
                assert rows.share is not None
                cols, delta, _ = sparse_step(model, Xb, yb, w, ctx.l2, rows.share, lr)
            else:
                dense_gradient(model, Xb, yb, w, ctx.l2, grad, BLOCK_ROWS, inbox.poll)
                delta = -lr * grad
        compute = time.perf_counter() - t_start
        if inbox.stop or tp.pause(ctx.delay.draw(me, t, rows.load, compute), inbox.poll):
            break
        pull = t % cfg.pull_every == 0
        requested += pull
        buf = sends.get()
        msg = pack_update(buf, t, compute, pull, version, d, cols, delta)
        sends.sent(buf, [comm.Isend(msg, dest=0, tag=pr.Tag.UPDATE)])
        if cols is None:
            w += delta
        else:
            w[cols] += delta
        steps = t
    done, _done_buf = send_done(comm, steps, clock, sent=steps, wait=False)  # one update per step
    backoff.reset()
    while not inbox.poll():
        backoff.sleep()
    sends.wait_all()
    tp.poll_until(done.Test)
    return 0


def _kernel_step(model, rows: LocalRows, w: np.ndarray, lr: float, threads: int, seed: int, me: int,
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
