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

from gdcode import optim
from gdcode.results import RunWriter
from gdcode.runtime import asynccommon as ac
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context, gather_hosts_on_workers, metadata

#: models worker 1 lets queue for rank 0 before it skips sending one (rank 0 evaluates slower
#: than the workers train); the final model is always sent
MAX_BACKLOG = 256


def _sub_communicator(comm):
    """The workers' communicator (``COMM_NULL`` on rank 0); collective over ``comm``."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    return comm.Split(MPI.UNDEFINED if rank == 0 else 0, rank)


def _optimizer(ctx: Context) -> optim.Optimizer:
    """The update rule exactly as coded mode's coordinator builds it."""
    cfg = ctx.cfg
    schedule = optim.Schedule(cfg.lr, cfg.lr_schedule, cfg.lr_step_every, cfg.lr_decay)
    kwargs = optim.rule_options(cfg.update, cfg.as_dict())
    return optim.make(cfg.update, ctx.w0, schedule, **kwargs)


# ----------------------------------------------------------------------------- rank 0


def coordinate(ctx: Context) -> int:
    """Rank 0: evaluate the models worker 1 sends; return the process exit code."""
    from mpi4py import MPI

    cfg, comm, W, d = ctx.cfg, ctx.comm, ctx.cfg.workers, ctx.n_params
    local = cfg.mode == "local"
    _sub_communicator(comm)
    writer = RunWriter(ctx.run_dir)
    writer.write_metadata(metadata(ctx, {"delay": ctx.delay.describe(), "mode": cfg.mode}))
    evaluator = ac.Evaluator(ctx, writer, threaded=True)
    if local:
        evaluator.submit(0, 0.0, ctx.w0.copy())
        evaluator.flush(wait=True)  # done before the clock starts
    bufs = [np.empty(tp.HEADER + 2 + d) for _ in range(W)]
    reqs = [comm.Irecv(bufs[i], source=i + 1, tag=ac.TAG_ROOT) for i in range(W)]
    stop_msg = tp.pack(np.zeros(tp.HEADER), tp.STOP, 0)
    stop_reqs, stopped, done = [], [False] * W, [False] * W
    usage = np.zeros((W, 2))
    steps = np.zeros(W, dtype=np.int64)
    last = (0, 0.0, ctx.w0.copy())  # iteration, elapsed, model of the newest message
    backoff = tp.Backoff()
    tp.barrier(comm)
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    status, grace, not_evaluated = "ok", None, 0

    def stop(i: int) -> None:
        if not stopped[i]:
            stopped[i] = True
            stop_reqs.append(comm.Isend(stop_msg, dest=i + 1, tag=ac.TAG_ASK))

    while not all(done):
        idx = MPI.Request.Testsome(reqs)
        for s in idx or ():
            kind, it, elapsed, part = tp.header(bufs[s])
            if kind == tp.DONE:
                done[s] = True
                not_evaluated += part  # models worker 1 did not send (rank 0 was behind)
                steps[s] = it
                usage[s] = bufs[s][tp.HEADER:tp.HEADER + 2]
                stop(s)
                continue
            last = (it, elapsed, bufs[s][tp.HEADER + 2:].copy())
            evaluator.submit(it, elapsed, last[2])
            reqs[s] = comm.Irecv(bufs[s], source=s + 1, tag=ac.TAG_ROOT)
        evaluator.flush()
        if grace is None and (evaluator.reached(cfg.target_loss)
                              or (deadline is not None and time.monotonic() > deadline)):
            if not evaluator.reached(cfg.target_loss):
                status = "timeout"
            for i in range(W):
                stop(i)
            # STOP acts within a step, except in local mode with averages, where it waits for the next one
            if not (local and cfg.average_every):
                grace = time.monotonic() + ac.SHUTDOWN_GRACE
            else:
                grace = float("inf")
        if grace is not None and time.monotonic() > grace:
            ac.abort(comm, writer, f"{cfg.mode} workers did not stop")
        if idx:
            backoff.reset()
        else:
            backoff.sleep()
    wall = time.perf_counter() - t0
    tp.poll_until(lambda: MPI.Request.Testall(stop_reqs), time.monotonic() + ac.SHUTDOWN_GRACE)
    records = [ac.recv_records(comm, i + 1, 2, time.monotonic() + ac.SHUTDOWN_GRACE) for i in range(W)]
    writer.append_workers([(int(t), i + 1, float(at), "used") for i, rec in enumerate(records) for t, at in rec])
    iteration, elapsed, params = last
    extra = {"worker_steps": steps.tolist(), "models_not_evaluated": not_evaluated,
             "worker_cpu_seconds": usage[:, 0].tolist(), "worker_wall_seconds": usage[:, 1].tolist(),
             "coordinator_cpu_seconds": time.process_time() - cpu0, "coordinator_wall_seconds": wall}
    return ac.write_summary(ctx, writer, evaluator, status, params, iteration, elapsed, extra)


# ----------------------------------------------------------------------------- workers


class _ModelSender:
    """Worker 1's non-blocking stream of models to rank 0, skipping sends past :data:`MAX_BACKLOG`."""

    def __init__(self, comm, d: int) -> None:
        self.comm = comm
        self.pool = tp.SendPool(tp.HEADER + 2 + d)
        self.in_flight: list = []
        self.skipped = 0

    def send(self, kind: float, iteration: int, elapsed: float, params: np.ndarray, force: bool = False) -> bool:
        """Send a model unless :data:`MAX_BACKLOG` sends are still in flight (``force``: send anyway)."""
        self.in_flight = [r for r in self.in_flight if not r.Test()]
        if len(self.in_flight) >= MAX_BACKLOG and not force:
            self.skipped += 1
            return False
        buf = self.pool.get()
        tp.pack(buf, kind, iteration, elapsed)
        buf[tp.HEADER:tp.HEADER + 2] = 0.0
        buf[tp.HEADER + 2:] = params
        req = self.comm.Isend(buf, dest=0, tag=ac.TAG_ROOT)
        self.pool.sent(buf, [req])
        self.in_flight.append(req)
        return True


class _Worker:
    """What both baselines' workers share: rows, optimiser, STOP, the reduction, the end."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.cfg, self.comm = ctx, ctx.cfg, ctx.comm
        self.sub = _sub_communicator(ctx.comm)
        gather_hosts_on_workers(ctx)
        self.me, self.d = ctx.worker, ctx.n_params
        self.rows = ac.LocalRows(ctx, self.cfg.batch_size)
        self.opt = _optimizer(ctx)
        self.stop_buf = np.empty(tp.HEADER)
        self.stop_req = self.comm.Irecv(self.stop_buf, source=0, tag=ac.TAG_ASK)
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
        done = tp.pack(np.empty(tp.HEADER + 2), tp.DONE, steps, 0.0, skipped)
        done[tp.HEADER:] = usage
        done_req = self.comm.Isend(done, dest=0, tag=ac.TAG_ROOT)
        req, _keep = ac.send_records(self.comm, np.array(self.records, dtype=float).reshape(-1, 2))
        tp.poll_until(lambda: self.stop_req.Test() and req.Test() and done_req.Test())
        if self.sender is not None:
            self.sender.pool.wait_all()
        self.sub.Free()
        return 0


def work(ctx: Context) -> int:
    """Run one worker of ``allreduce`` or ``local``; return the process exit code."""
    worker = _Worker(ctx)
    return _allreduce(worker) if ctx.cfg.mode == "allreduce" else _local(worker)


def _allreduce(wk: _Worker) -> int:
    ctx, d, rows = wk.ctx, wk.d, wk.rows
    kernel = ctx.model.loss_grad_sum
    ones = np.ones(min(ac.BLOCK_ROWS, rows.n_rows))
    tp.barrier(wk.comm)
    cpu0, t0 = time.process_time(), time.perf_counter()
    steps, sent_last = 0, True
    for t in range(1, wk.cfg.iterations + 1):
        start = time.perf_counter()
        point = wk.opt.point()
        Xb, yb = rows.batch()
        g = wk.acc[:d]
        g[:] = 0.0
        for lo in range(0, Xb.shape[0], ac.BLOCK_ROWS):
            hi = min(lo + ac.BLOCK_ROWS, Xb.shape[0])
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
            sent_last = wk.sender.send(tp.MODEL, t, time.perf_counter() - t0, wk.opt.params)
        if total[d + 1] > 0:
            break
    elapsed = time.perf_counter() - t0
    usage = ac.usage_since(cpu0, t0)
    if wk.sender is not None and not sent_last:
        wk.sender.send(tp.MODEL, steps, elapsed, wk.opt.params, force=True)
    return wk.finish(steps, usage)


def _local(wk: _Worker) -> int:
    ctx, cfg, d, rows = wk.ctx, wk.cfg, wk.d, wk.rows
    every = cfg.average_every
    W = cfg.workers
    grad = np.empty(d)
    tp.barrier(wk.comm)
    cpu0, t0 = time.process_time(), time.perf_counter()
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
            sent = wk.sender.send(tp.MODEL, int(total[d]), at, wk.opt.params, force=final)
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
    usage = ac.usage_since(cpu0, t0)
    if not every or averaged_at != steps:
        average(final=True)
    elif unsent is not None:  # the last average ended the run but was not sent
        wk.sender.send(tp.MODEL, *unsent, wk.opt.params, force=True)
    return wk.finish(steps, usage)


def dense_loss(ctx: Context, Xb, yb: np.ndarray, point: np.ndarray, grad: np.ndarray) -> float:
    """The minibatch gradient ``(1/b) sum grad loss_i + lambda w`` into ``grad``; the batch's mean loss."""
    from gdcode.sgd import dense_gradient

    return dense_gradient(ctx.model, Xb, yb, point, ctx.l2, grad, ac.BLOCK_ROWS)
