"""The synchronous data-parallel baselines: ``--mode allreduce`` and ``--mode local``.

The workers (ranks 1..W) form a sub-communicator and reduce over it with a non-blocking
``Iallreduce`` polled with back-off (a blocking collective spins a core under MPICH). Worker
``i`` holds partition ``i`` of W, the layout of coded mode's uncoded scheme.

``allreduce``: every step each worker computes the gradient sum of a minibatch of its
partition (the whole partition when ``--batch-size`` is 0) at ``opt.point()``, in blocks
of rows as a coded worker does, serves its injected pause, and the sums and row counts are
reduced: ``g = (sum of the gradient sums) / (rows) + lambda w``, and every worker takes the
same optimiser step (``--update``, ``--lr`` and its schedule, as coded mode's coordinator).
Full-batch ``allreduce`` is coded-mode ``uncoded`` GD, computed the same way.

``local``: every worker runs SGD on its own model; every ``--average-every`` steps the
models are averaged with an ``Iallreduce`` (0: only at the end).

Rank 0 evaluates: worker 1 sends it the model after every reduction (non-blocking; models
queue up on rank 0 rather than wait on it), and rank 0 writes one metrics line for each.
``allreduce`` lines are per step (``iteration`` 1, 2, ..., as coded mode); ``local`` lines
are per average, ``iteration`` being the steps the average absorbed (W times the steps),
after a first line for the initial model. STOP from rank 0 (``--timeout``,
``--target-loss``) travels in the reduced buffer, so every worker stops after the same step.

``workers.csv``: one row per worker step, status ``used``; ``arrival`` is, for
``allreduce``, the seconds from the step's start until the worker's contribution was ready
(as coded mode's arrival), and for ``local`` the seconds since the start when the step ended.
"""

from __future__ import annotations

import time

import numpy as np

from gdcode.runtime import protocol as pr
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context
from gdcode.runtime.coordinator import Coordinator
from gdcode.runtime.worker import BLOCK_ROWS, LocalRows, WorkerClock, send_done

#: models worker 1 lets queue for rank 0 before it skips sending one (rank 0 evaluates slower
#: than the workers train); the final model is always sent
MAX_BACKLOG = 256


def _sub_communicator(comm):
    """The workers' communicator (``COMM_NULL`` on rank 0); collective over ``comm``."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    return comm.Split(MPI.UNDEFINED if rank == 0 else 0, rank)


# ----------------------------------------------------------------------------- rank 0


class AllReduceCoordinator(Coordinator):
    """Rank 0 of ``allreduce`` and ``local``: evaluates the models worker 1 sends."""

    stop_tag = pr.Tag.ASK

    def open_run(self) -> None:
        _sub_communicator(self.comm)
        super().open_run()

    def prepare(self) -> None:
        d = self.ctx.n_params
        self.local = self.options.mode == "local"
        self.evaluator.submit(0, 0.0, self.ctx.w0.copy())  # the initial model, before the clock starts
        self.evaluator.flush(wait=True)
        self.last = (0, 0.0, self.ctx.w0.copy())  # iteration, elapsed, model of the newest message
        for i in range(self.W):
            self.listen(i, pr.Tag.ROOT, pr.MODEL.new(d), self._on_model)

    def _on_model(self, s: int, buf: np.ndarray) -> None:
        _, it, elapsed, _ = pr.header(buf)
        self.last = (it, elapsed, pr.MODEL.vector(buf).copy())
        self.evaluator.submit(it, elapsed, self.last[2])

    def on_done(self, worker: int) -> None:
        self.stop(worker)

    def loop(self) -> None:
        while not self.all_done():
            self.idle()
            self.evaluator.flush()
            if self.evaluator.reached(self.options.target_loss):
                return

    def drain_grace(self) -> float | None:
        # STOP acts within a step, except in local mode with averages, where it waits for the next one
        return None if self.local and self.options.average_every else super().drain_grace()

    def after_drain(self) -> None:
        grace = time.monotonic() + 10.0
        records = [pr.recv_records(self.comm, i + 1, 2, grace) for i in range(self.W)]
        self.writer.append_workers([(int(t), i + 1, float(at), "used")
                                    for i, rec in enumerate(records) for t, at in rec])

    def result(self) -> tuple[np.ndarray, int, float, dict]:
        iteration, elapsed, params = self.last
        extra = {"worker_steps": self.worker_steps.tolist(), "models_not_evaluated": self.models_not_sent}
        return params, iteration, elapsed, extra


def coordinate(ctx: Context) -> int:
    """Rank 0: evaluate the models worker 1 sends; return the process exit code."""
    return AllReduceCoordinator(ctx).run()


# ----------------------------------------------------------------------------- workers


class _ModelSender:
    """Worker 1's non-blocking stream of models to rank 0, skipping sends past :data:`MAX_BACKLOG`."""

    def __init__(self, comm, d: int) -> None:
        self.comm = comm
        self.pool = tp.SendPool(pr.MODEL.size(d))
        self.in_flight: list = []
        self.skipped = 0
        self.sent = 0

    def send(self, kind: int, iteration: int, elapsed: float, params: np.ndarray, force: bool = False) -> bool:
        """Send a model unless :data:`MAX_BACKLOG` sends are still in flight (``force``: send anyway)."""
        self.in_flight = [r for r in self.in_flight if not r.Test()]
        if len(self.in_flight) >= MAX_BACKLOG and not force:
            self.skipped += 1
            return False
        buf = self.pool.get()
        pr.MODEL.pack(buf, kind, iteration, elapsed)
        pr.MODEL.vector(buf)[:] = params
        req = self.comm.Isend(buf, dest=0, tag=pr.Tag.ROOT)
        self.pool.sent(buf, [req])
        self.in_flight.append(req)
        self.sent += 1
        return True


class _Worker:
    """What both baselines' workers share: rows, optimiser, STOP, the reduction, the end."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.cfg, self.comm = ctx, ctx.options, ctx.comm
        self.sub = _sub_communicator(ctx.comm)
        self.me, self.d = ctx.worker, ctx.n_params
        self.rows = LocalRows(ctx, self.cfg.batch_size)
        self.opt = ctx.problem.optimizer()
        self.stop_buf = pr.STOP.new()
        self.stop_req = self.comm.Irecv(self.stop_buf, source=0, tag=pr.Tag.ASK)
        self.sender = _ModelSender(self.comm, self.d) if self.me == 0 else None
        self.records: list[tuple[int, float]] = []
        self.acc = np.empty(self.d + 2)
        self.total = np.empty(self.d + 2)

    def stopped(self) -> bool:
        """Whether rank 0 has sent STOP (a completed request keeps testing True)."""
        return bool(self.stop_req.Test())

    def reduce(self) -> np.ndarray:
        """Sum ``self.acc`` over the workers (``Iallreduce`` polled with back-off)."""
        from mpi4py import MPI

        req = self.sub.Iallreduce(self.acc, self.total, op=MPI.SUM)
        tp.poll_until(req.Test)
        return self.total

    def finish(self, steps: int, usage: np.ndarray) -> int:
        """Report DONE (steps, CPU and wall seconds) and the records; wait for STOP."""
        skipped = self.sender.skipped if self.sender is not None else 0
        sent = self.sender.sent if self.sender is not None else 0
        done_req, _done_buf = send_done(self.comm, steps, usage, sent=sent, not_sent=skipped, wait=False)
        req, _keep = pr.send_records(self.comm, np.array(self.records, dtype=float).reshape(-1, 2))
        tp.poll_until(lambda: self.stop_req.Test() and req.Test() and done_req.Test())
        if self.sender is not None:
            self.sender.pool.wait_all()
        self.sub.Free()
        return 0


def work(ctx: Context) -> int:
    """Run one worker of ``allreduce`` or ``local``; return the process exit code."""
    worker = _Worker(ctx)
    return _allreduce(worker) if ctx.options.mode == "allreduce" else _local(worker)


def _allreduce(wk: _Worker) -> int:
    ctx, d, rows = wk.ctx, wk.d, wk.rows
    kernel = ctx.model.loss_grad_sum
    ones = np.ones(min(BLOCK_ROWS, rows.n_rows))
    tp.barrier(wk.comm)
    clock = WorkerClock()
    t0 = clock.wall0
    steps, sent_last = 0, True
    for t in range(1, wk.cfg.iterations + 1):
        start = time.perf_counter()
        point = wk.opt.point()
        Xb, yb = rows.batch()
        g = wk.acc[:d]
        g[:] = 0.0
        for lo in range(0, Xb.shape[0], BLOCK_ROWS):
            hi = min(lo + BLOCK_ROWS, Xb.shape[0])
            kernel(Xb[lo:hi], yb[lo:hi], ones[:hi - lo], point, g)
        compute = time.perf_counter() - start
        tp.pause(ctx.delay.draw(wk.me, t, rows.load, compute), wk.stopped)
        wk.records.append((t, time.perf_counter() - start))
        wk.acc[d] = Xb.shape[0]
        wk.acc[d + 1] = 1.0 if wk.stopped() else 0.0
        total = wk.reduce()
        grad = total[:d] / total[d] + ctx.l2 * point
        wk.opt.step(grad)
        steps = t
        if wk.sender is not None:
            sent_last = wk.sender.send(pr.Kind.MODEL, t, time.perf_counter() - t0, wk.opt.params)
        if total[d + 1] > 0:
            break
    elapsed = time.perf_counter() - t0
    usage = clock.usage()
    if wk.sender is not None and not sent_last:
        wk.sender.send(pr.Kind.MODEL, steps, elapsed, wk.opt.params, force=True)
    return wk.finish(steps, usage)


def _local(wk: _Worker) -> int:
    ctx, cfg, d, rows = wk.ctx, wk.cfg, wk.d, wk.rows
    every = cfg.average_every
    W = cfg.workers
    grad = np.empty(d)
    tp.barrier(wk.comm)
    clock = WorkerClock()
    t0 = clock.wall0
    steps, averaged_at, unsent = 0, 0, None

    def average(final: bool = False) -> bool:
        """Average the models; True when some worker has seen STOP."""
        nonlocal averaged_at, unsent
        wk.acc[:d] = wk.opt.params
        wk.acc[d] = steps
        wk.acc[d + 1] = 1.0 if wk.stopped() else 0.0
        total = wk.reduce()
        wk.opt.params[:] = total[:d] / W
        averaged_at = steps
        if wk.sender is not None:
            at = time.perf_counter() - t0
            sent = wk.sender.send(pr.Kind.MODEL, int(total[d]), at, wk.opt.params, force=final)
            unsent = None if sent else (int(total[d]), at)
        return total[d + 1] > 0

    for t in range(1, cfg.iterations + 1):
        start = time.perf_counter()
        point = wk.opt.point()
        Xb, yb = rows.batch()
        dense_loss(ctx, Xb, yb, point, grad)
        compute = time.perf_counter() - start
        cut = tp.pause(ctx.delay.draw(wk.me, t, rows.load, compute), wk.stopped)
        wk.opt.step(grad)
        steps = t
        wk.records.append((t, time.perf_counter() - t0))
        if every:
            if t % every == 0 and average(final=t == cfg.iterations):
                break
        elif cut or wk.stopped():
            break  # no collective until the closing average: each worker stops on its own
    usage = clock.usage()
    if not every or averaged_at != steps:
        average(final=True)
    elif unsent is not None and wk.sender is not None:  # the last average ended the run but was not sent
        wk.sender.send(pr.Kind.MODEL, *unsent, wk.opt.params, force=True)
    return wk.finish(steps, usage)


def dense_loss(ctx: Context, Xb, yb: np.ndarray, point: np.ndarray, grad: np.ndarray) -> float:
    """The minibatch gradient ``(1/b) sum grad loss_i + lambda w`` into ``grad``; the batch's mean loss."""
    from gdcode.sgd import dense_gradient

    return dense_gradient(ctx.model, Xb, yb, point, ctx.l2, grad, BLOCK_ROWS)
