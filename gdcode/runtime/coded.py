"""Coded mode: the synchronous gradient-coding family (uncoded, ignore, exact and approximate codes).

Coordinator (rank 0), per iteration ``t``:
  1. send the model ``opt.point()`` tagged ``t`` to every worker (``Isend``, numpy buffers);
  2. collect replies until ``code.decode(responders)`` returns weights -- never waiting for a
     worker the code does not need; a reply tagged with an older iteration is recorded as
     ``late`` and discarded;
  3. decode ``sum_i a_i y_i``, divide by n, add ``lambda w`` and take the step.
The clock stops there; the losses are evaluated with the clock stopped, before the next
model goes out, so evaluation never inflates ``elapsed``.

Worker (rank ``i + 1``): compute ``y_i = sum_j B[i, j] g_j`` over its rows in blocks, then serve
its injected pause in short slices, polling for a newer model between blocks and slices; a
newer model cancels the old work at once.
"""

from __future__ import annotations

import time

import numpy as np

from gdcode import codes
from gdcode.config import code_options
from gdcode.data import partition_bounds, stack_rows, worker_rows
from gdcode.results import RunWriter
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context, gather_hosts_on_workers, metadata

#: rows a worker processes between two polls for a newer model
BLOCK_ROWS = 2048
#: longest sleep of a pause slice (a newer model is noticed within about this long)
PAUSE_SLICE = 2e-3


def build_code(ctx: Context) -> codes.GradientCode:
    """The run's code; identical on every rank (its randomness comes from the seed)."""
    cfg = ctx.cfg
    opts = code_options(cfg.as_dict())
    if "partition_sizes" in codes.accepted_options(cfg.scheme):
        opts["partition_sizes"] = _partition_sizes(ctx, codes.get_class(cfg.scheme), opts)
    return codes.build(cfg.scheme, n_workers=cfg.workers, n_stragglers=cfg.stragglers,
                       seed=cfg.seed, **opts)


def _partition_sizes(ctx: Context, cls: type, opts: dict) -> np.ndarray:
    probe = codes.build(cls.name, n_workers=ctx.cfg.workers, n_stragglers=ctx.cfg.stragglers,
                        seed=ctx.cfg.seed, **opts)
    return np.diff(partition_bounds(ctx.source.n_train, probe.n_partitions))


# ----------------------------------------------------------------------------- coordinator


class _Iteration:
    """Book-keeping of one iteration's replies, kept until every worker's status is final."""

    __slots__ = ("t", "start", "arrivals", "status")

    def __init__(self, t: int, start: float) -> None:
        self.t, self.start = t, start
        self.arrivals: dict[int, float] = {}
        self.status: dict[int, str] = {}


def coordinate(ctx: Context) -> int:
    """Run the coordinator; return the process exit code."""
    from mpi4py import MPI

    cfg, comm = ctx.cfg, ctx.comm
    W = cfg.workers
    code = build_code(ctx)
    n = ctx.source.n_train
    d = ctx.n_params
    Xtr, ytr = ctx.rows(0, n)
    Xte, yte = ctx.test_set()

    writer = RunWriter(ctx.run_dir)
    writer.write_metadata(metadata(ctx, {"code": {"name": code.name, "exact": code.exact,
                                                   "n_partitions": code.n_partitions,
                                                   "load": code.load().tolist()}}))
    from gdcode import optim

    schedule = optim.Schedule(cfg.lr)
    opt = optim.make(cfg.update, ctx.w0, schedule)

    size = tp.HEADER + d
    recv_bufs = [np.empty(size) for _ in range(W)]
    recv_reqs = [comm.Irecv(recv_bufs[i], source=i + 1, tag=tp.TAG_REPLY) for i in range(W)]
    sends = tp.SendPool(size)
    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    pending: dict[int, _Iteration] = {}  # iterations with workers whose status is not final
    elapsed = 0.0
    status = "ok"
    t = 0
    decoded = np.empty(d)
    backoff = tp.Backoff()
    cpu0, wall0 = time.process_time(), time.perf_counter()

    def finalize_before(worker: int, t_reply: int) -> None:
        """Replies from one worker arrive in order: a reply to ``t_reply`` means none will come
        for the earlier iterations it left unanswered, which were cancelled."""
        for it in list(pending):
            rec = pending[it]
            if it < t_reply and worker not in rec.status:
                rec.status[worker] = "cancelled"
            if len(rec.status) == W:
                _flush(writer, pending.pop(it))

    try:
        for t in range(1, cfg.iterations + 1):
            point = opt.point()
            buf = sends.get()
            tp.pack(buf, tp.MODEL, t)
            buf[tp.HEADER:] = point
            start = time.perf_counter()
            sends.sent(buf, [comm.Isend(buf, dest=i + 1, tag=tp.TAG_CONTROL) for i in range(W)])
            rec = _Iteration(t, start)
            pending[t] = rec
            responders: list[int] = []
            weights = None
            decode_seconds = 0.0
            backoff.reset()
            while weights is None:
                idx = MPI.Request.Testsome(recv_reqs)
                if not idx:
                    if deadline is not None and time.monotonic() > deadline:
                        raise tp.Timeout
                    backoff.sleep()
                    continue
                now = time.perf_counter()
                for i in idx:
                    _, t_reply, _, _ = tp.header(recv_bufs[i])
                    if t_reply != t:  # a straggler's reply to an iteration already decoded
                        old = pending.get(t_reply)
                        if old is not None:
                            old.arrivals[i] = now - old.start
                            old.status[i] = "late"
                        recv_reqs[i] = comm.Irecv(recv_bufs[i], source=i + 1, tag=tp.TAG_REPLY)
                    else:  # its buffer is re-posted only after the decode has read it
                        rec.arrivals[i] = now - start
                        responders.append(i)
                        if weights is None:
                            t_decode = time.perf_counter()
                            weights = code.decode(responders)
                            decode_seconds = time.perf_counter() - t_decode
                    finalize_before(i, t_reply)
            t_combine = time.perf_counter()
            decoded[:] = 0.0
            for j in sorted(responders):  # a fixed order: the same sum whatever the arrival order
                if weights[j] != 0.0:
                    decoded += weights[j] * recv_bufs[j][tp.HEADER:]
            for j in responders:
                recv_reqs[j] = comm.Irecv(recv_bufs[j], source=j + 1, tag=tp.TAG_REPLY)
            # replies already in hand but not used are "ignored"
            for j in responders:
                rec.status[j] = "used" if weights[j] != 0.0 else "ignored"
            grad = decoded / n + ctx.l2 * point
            opt.step(grad)
            end = time.perf_counter()
            decode_seconds += end - t_combine
            elapsed += end - start
            if len(rec.status) == W:
                _flush(writer, pending.pop(t))
            # --- clock stopped: evaluation ---
            record = {"iteration": t, "elapsed": elapsed,
                      "train_loss": ctx.model.objective(Xtr, ytr, opt.params, ctx.l2)}
            record.update(ctx.model.test_metrics(Xte, yte, opt.params))
            record.update({"responders": len(responders), "decode_seconds": decode_seconds})
            writer.append_metrics(record)
    except tp.Timeout:
        status = "timeout"
        t -= 1

    usage = _shutdown(ctx, sends, recv_reqs, recv_bufs, pending, writer, finalize_before,
                      deadline=time.monotonic() + 10.0)
    writer.save_model(opt.params)
    summary = {"status": status, "iterations": t, "elapsed": elapsed,
               "train_loss": ctx.model.objective(Xtr, ytr, opt.params, ctx.l2)}
    summary.update(ctx.model.test_metrics(Xte, yte, opt.params))
    summary.update({"worker_cpu_seconds": usage[:, 0].tolist(), "worker_wall_seconds": usage[:, 1].tolist(),
                    "coordinator_cpu_seconds": time.process_time() - cpu0,
                    "coordinator_wall_seconds": time.perf_counter() - wall0})
    writer.write_summary(summary)
    writer.close()
    if status == "timeout":
        import sys

        print(f"gdcode run: error: --timeout {cfg.timeout:g} s reached after {t} iterations; "
              f"the run directory {ctx.run_dir} has every finished iteration", file=sys.stderr)
        return 3
    return 0


def _flush(writer: RunWriter, rec: _Iteration) -> None:
    writer.append_workers([(rec.t, w + 1, rec.arrivals.get(w), rec.status[w]) for w in sorted(rec.status)])


def _shutdown(ctx, sends, recv_reqs, recv_bufs, pending, writer, finalize_before, deadline) -> None:
    """Stop the workers, record the replies still in flight as late, and release every request.

    Returns each worker's (CPU seconds, wall seconds) of its training loop, shape (W, 2).
    """
    from mpi4py import MPI

    comm, W = ctx.comm, ctx.cfg.workers
    stop = np.zeros(tp.HEADER + ctx.n_params)
    tp.pack(stop, tp.STOP, 0)
    stop_reqs = [comm.Isend(stop, dest=i + 1, tag=tp.TAG_CONTROL) for i in range(W)]
    done_bufs = [np.empty(2) for _ in range(W)]
    done_reqs = [comm.Irecv(done_bufs[i], source=i + 1, tag=tp.TAG_DONE) for i in range(W)]
    backoff = tp.Backoff()
    clean = True
    while not MPI.Request.Testall(done_reqs):
        idx = MPI.Request.Testsome(recv_reqs)
        if idx:
            now = time.perf_counter()
            for i in idx:
                _, t_reply, _, _ = tp.header(recv_bufs[i])
                old = pending.get(t_reply)
                if old is not None:
                    old.arrivals[i] = now - old.start
                    old.status[i] = "late"
                finalize_before(i, t_reply)
                recv_reqs[i] = comm.Irecv(recv_bufs[i], source=i + 1, tag=tp.TAG_REPLY)
            continue
        if time.monotonic() > deadline:
            clean = False
            break
        backoff.sleep()
    for rec in pending.values():  # no reply came before the workers stopped
        for w in range(W):
            rec.status.setdefault(w, "cancelled")
        _flush(writer, rec)
    pending.clear()
    if not clean:
        writer.close()
        import sys

        print("gdcode run: error: workers did not stop within 10 s; aborting the job", file=sys.stderr)
        comm.Abort(3)
    for r in recv_reqs:
        if r != MPI.REQUEST_NULL:
            r.Cancel()
    MPI.Request.Waitall(recv_reqs)
    MPI.Request.Waitall(stop_reqs)
    sends.wait_all()
    return np.array([b for b in done_bufs])


# ----------------------------------------------------------------------------- worker


def work(ctx: Context) -> int:
    """Run one worker until the coordinator says stop; return the process exit code."""
    comm = ctx.comm
    me = ctx.worker
    code = build_code(ctx)
    gather_hosts_on_workers(ctx)
    bounds = partition_bounds(ctx.source.n_train, code.n_partitions)
    ranges, coef = worker_rows(bounds, code.B[me])
    d = ctx.n_params
    if ranges:
        X, y = stack_rows([ctx.rows(lo, hi) for lo, hi in ranges])
    else:
        X, y = np.empty((0, d)), np.empty(0)
    load = float(code.load()[me])
    blocks = [(lo, min(lo + BLOCK_ROWS, X.shape[0])) for lo in range(0, X.shape[0], BLOCK_ROWS)]
    kernel = ctx.model.loss_grad_sum

    size = tp.HEADER + d
    ctrl = np.empty(size)
    ctrl_req = comm.Irecv(ctrl, source=0, tag=tp.TAG_CONTROL)
    sends = tp.SendPool(size)
    backoff = tp.Backoff()
    cpu0, wall0 = time.process_time(), time.perf_counter()

    while True:
        # wait (without spinning) for the next control message, then skip to the newest
        backoff.reset()
        while not ctrl_req.Test():
            backoff.sleep()
        kind, t, _, _ = tp.header(ctrl)
        while kind != tp.STOP and comm.Iprobe(source=0, tag=tp.TAG_CONTROL):
            comm.Recv(ctrl, source=0, tag=tp.TAG_CONTROL)
            kind, t, _, _ = tp.header(ctrl)
        if kind == tp.STOP:
            break
        w = ctrl[tp.HEADER:].copy()
        ctrl_req = comm.Irecv(ctrl, source=0, tag=tp.TAG_CONTROL)

        out = sends.get()
        g = out[tp.HEADER:]
        g[:] = 0.0
        t0 = time.perf_counter()
        cancelled = False
        for lo, hi in blocks:
            kernel(X[lo:hi], y[lo:hi], coef[lo:hi], w, g)
            if ctrl_req.Test():
                cancelled = True
                break
        compute = time.perf_counter() - t0
        if not cancelled:
            cancelled = _pause(ctx.delay.draw(me, t, load), ctrl_req)
        if cancelled:
            sends.sent(out, [])
            continue  # ctrl_req completed (Test on it stays True): the newer model is in ctrl
        tp.pack(out, tp.GRADIENT, t, compute)
        sends.sent(out, [comm.Isend(out, dest=0, tag=tp.TAG_REPLY)])

    sends.wait_all()
    usage = np.array([time.process_time() - cpu0, time.perf_counter() - wall0])
    comm.Send(usage, dest=0, tag=tp.TAG_DONE)
    return 0


def _pause(seconds: float, ctrl_req) -> bool:
    """Sleep ``seconds`` in slices, polling ``ctrl_req``; True if a newer message cut it short."""
    if seconds <= 0:
        return False
    end = time.perf_counter() + seconds
    while True:
        left = end - time.perf_counter()
        if left <= 0:
            return False
        time.sleep(min(PAUSE_SLICE, left))
        if ctrl_req.Test():
            return True
