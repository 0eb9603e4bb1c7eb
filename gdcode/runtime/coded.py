"""Coded mode: the synchronous gradient-coding family (uncoded, ignore, exact and approximate codes).

Coordinator (rank 0), per iteration ``t``:
  1. send the model ``opt.point()`` tagged ``t`` to every worker (``Isend``, numpy buffers);
  2. collect replies until ``code.decode(...)`` returns weights -- never waiting for a worker
     the code does not need; a reply tagged with an older iteration is recorded as ``late``
     and discarded;
  3. decode ``sum_i a_i y_i`` (summed in a fixed worker order), divide by n, add ``lambda w``
     and take the step.
The clock stops there; losses (and the gradient error, checkpoints) are computed with the
clock stopped, before the next model goes out, so they never inflate ``elapsed``.

Worker (rank ``i + 1``): for each message ``k`` of its code (one, or two for the partial
schemes), compute ``y_ik = sum_j M_k[i, j] g_j`` over its rows in blocks, then serve its share
of the injected pause in short slices, polling for a newer model between blocks and slices; a
newer model cancels the old work at once.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from gdcode import codes
from gdcode.config import code_options
from gdcode.data import partition_bounds, stack_rows, worker_rows
from gdcode.results import RunWriter, read_metrics, read_workers
from gdcode.runtime import checkpoint, progress
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context, gather_hosts_on_workers, metadata

#: rows a worker processes between two polls for a newer model
BLOCK_ROWS = 2048


def build_code(ctx: Context) -> codes.GradientCode:
    """The run's code; identical on every rank (its randomness comes from the seed)."""
    cfg = ctx.cfg
    opts = code_options(cfg.as_dict())
    code = codes.build(cfg.scheme, n_workers=cfg.workers, n_stragglers=cfg.stragglers, seed=cfg.seed, **opts)
    code.bind_partition_sizes(np.diff(partition_bounds(ctx.source.n_train, code.n_partitions)))
    return code


# ----------------------------------------------------------------------------- coordinator


@dataclass
class _Iteration:
    """Book-keeping of one iteration's replies, kept until every worker's status is final.

    A reply stream is one (worker, message) pair; replies on a stream arrive in order, so a
    reply to a later iteration closes the stream for this one.
    """

    t: int
    start: float
    arrivals: dict = field(default_factory=dict)  # (worker, message) -> (seconds, before decode)
    closed: set = field(default_factory=set)  # streams that will send nothing more for t
    weights: np.ndarray | None = None  # (n_messages, W) once decoded

    def status_rows(self, n_workers: int, n_messages: int) -> list[tuple]:
        rows = []
        for w in range(n_workers):
            got = [(self.arrivals[(w, k)], k) for k in range(n_messages) if (w, k) in self.arrivals]
            before = [(sec, k) for (sec, pre), k in got if pre]
            after = [sec for (sec, pre), _ in got if not pre]
            if before and self.weights is not None and any(self.weights[k, w] != 0.0 for _, k in before):
                rows.append((self.t, w + 1, max(sec for sec, _ in before), "used"))
            elif before:
                rows.append((self.t, w + 1, max(sec for sec, _ in before), "ignored"))
            elif after:
                rows.append((self.t, w + 1, min(after), "late"))
            else:
                rows.append((self.t, w + 1, None, "cancelled"))
        return rows


class Coordinator:
    """Rank 0 of a coded run."""

    def __init__(self, ctx: Context) -> None:
        from gdcode import optim

        self.ctx = ctx
        self.cfg = cfg = ctx.cfg
        self.comm = ctx.comm
        self.W = cfg.workers
        self.code = build_code(ctx)
        self.M = self.code.n_messages
        self.n = ctx.source.n_train
        self.d = ctx.n_params
        self.Xtr, self.ytr = ctx.rows(0, self.n)
        self.Xte, self.yte = ctx.test_set()
        schedule = optim.Schedule(cfg.lr, cfg.lr_schedule, cfg.lr_step_every, cfg.lr_decay)
        kwargs = optim.rule_options(cfg.update, cfg.as_dict())
        self.opt = optim.make(cfg.update, ctx.w0, schedule, **kwargs)
        self.pending: dict[int, _Iteration] = {}
        self.elapsed = 0.0
        self.first = 1
        self.recorded_delays: list[tuple[int, int, float]] = []

    # --- replies -------------------------------------------------------------------------

    def _post(self, stream: int) -> None:
        w = stream // self.M
        self.recv_reqs[stream] = self.comm.Irecv(self.recv_bufs[stream], source=w + 1,
                                                 tag=tp.TAG_REPLY + stream % self.M)

    def _note(self, stream: int, t_reply: int, seconds: float, now: float, current: _Iteration | None) -> None:
        """Record one reply; close its stream for every earlier iteration it skipped."""
        w, k = divmod(stream, self.M)
        rec = self.pending.get(t_reply)
        if rec is not None:
            rec.arrivals[(w, k)] = (now - rec.start, rec is current and rec.weights is None)
            rec.closed.add((w, k))
        if self.cfg.record_delays:
            self.recorded_delays.append((w + 1, t_reply, seconds))
        for it in [it for it in self.pending if it < t_reply]:
            self.pending[it].closed.add((w, k))
        self._flush_finished(current)

    def _flush_finished(self, current: _Iteration | None) -> None:
        for it in sorted(self.pending):
            rec = self.pending[it]
            if rec is current or len(rec.closed) < self.W * self.M:
                continue
            self.writer.append_workers(rec.status_rows(self.W, self.M))
            del self.pending[it]

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        from mpi4py import MPI

        cfg, comm, W, M, d = self.cfg, self.comm, self.W, self.M, self.d
        self._open_run_dir()
        size = tp.HEADER + d
        self.recv_bufs = [np.empty(size) for _ in range(W * M)]
        self.recv_reqs = [MPI.REQUEST_NULL] * (W * M)
        for s in range(W * M):
            self._post(s)
        sends = tp.SendPool(size)
        deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
        decoded = np.empty(d)
        backoff = tp.Backoff()
        self._evaluate(0)  # warm-up (first imports, e.g. scipy.stats), so it does not stall iteration 1
        tp.barrier(comm)  # every worker has its rows: set-up stays off the clock
        cpu0, wall0 = time.process_time(), time.perf_counter()
        status, t, last = "ok", self.first - 1, self.first - 1
        line = progress.Progress(cfg.iterations, progress.wanted(cfg.quiet))
        try:
            for t in range(self.first, cfg.iterations + 1):
                point = self.opt.point().copy()  # the step may update params in place
                buf = sends.get()
                tp.pack(buf, tp.MODEL, t)
                buf[tp.HEADER:] = point
                start = time.perf_counter()
                sends.sent(buf, [comm.Isend(buf, dest=i + 1, tag=tp.TAG_CONTROL) for i in range(W)])
                rec = _Iteration(t, start)
                self.pending[t] = rec
                responders: list = []
                held: list[int] = []  # streams whose buffer holds a reply to t (re-posted after decode)
                weights = None
                decode_seconds = 0.0
                backoff.reset()
                while weights is None:
                    idx = MPI.Request.Testsome(self.recv_reqs)
                    if not idx:
                        if deadline is not None and time.monotonic() > deadline:
                            raise tp.Timeout
                        backoff.sleep()
                        continue
                    now = time.perf_counter()
                    for s in idx:
                        _, t_reply, seconds, _ = tp.header(self.recv_bufs[s])
                        self._note(s, t_reply, seconds, now, rec)
                        if t_reply != t:  # a straggler's reply to an iteration already decoded
                            self._post(s)
                            continue
                        held.append(s)
                        w, k = divmod(s, M)
                        responders.append((w, k) if M > 1 else w)
                        if weights is None:
                            t0 = time.perf_counter()
                            weights = self.code.decode(responders)
                            decode_seconds = time.perf_counter() - t0
                t_combine = time.perf_counter()
                weights = np.asarray(weights, dtype=float).reshape(M, W)
                rec.weights = weights
                decoded[:] = 0.0
                for s in sorted(held):  # a fixed order: the same sum whatever the arrival order
                    a = weights[s % M, s // M]
                    if a != 0.0:
                        decoded += a * self.recv_bufs[s][tp.HEADER:]
                grad = decoded / self.n + self.ctx.l2 * point
                for s in held:
                    self._post(s)
                self.opt.step(grad)
                end = time.perf_counter()
                self.elapsed += end - start
                # --- clock stopped: evaluation, checkpoint ---
                self._flush_finished(None)
                record = self._evaluate(t)
                record.update({"responders": len(responders), "decode_seconds": decode_seconds + end - t_combine})
                if cfg.track_gradient_error:
                    exact = self.ctx.model.full_gradient(self.Xtr, self.ytr, point, self.ctx.l2)
                    record["gradient_error"] = float(np.linalg.norm(grad - exact) / np.linalg.norm(exact))
                self.writer.append_metrics(record)
                line.update(t, self.elapsed, record["train_loss"])
                last = t
                if cfg.checkpoint_every and t % cfg.checkpoint_every == 0:
                    checkpoint.save(self.ctx.run_dir, t, self.elapsed, self.opt)
                if cfg.target_loss is not None and record["train_loss"] <= cfg.target_loss:
                    break
        except tp.Timeout:
            status = "timeout"
        line.close()
        usage = self._shutdown(sends, deadline=time.monotonic() + 10.0)
        return self._finish(status, last, usage, time.process_time() - cpu0, time.perf_counter() - wall0)

    def _evaluate(self, t: int) -> dict:
        model, params = self.ctx.model, self.opt.params
        record = {"iteration": t, "elapsed": self.elapsed,
                  "train_loss": model.objective(self.Xtr, self.ytr, params, self.ctx.l2)}
        record.update(model.test_metrics(self.Xte, self.yte, params))
        return record

    def _open_run_dir(self) -> None:
        ctx, cfg = self.ctx, self.cfg
        extra = {"code": {"name": self.code.name, "exact": self.code.exact, "n_partitions": self.code.n_partitions,
                          "n_messages": self.M, "load": self.code.load().tolist(),
                          "options": {k: v for k, v in self.code.options.items()
                                      if k != "partition_sizes"}},
                 "delay": ctx.delay.describe()}
        if cfg.resume:
            state = checkpoint.load(ctx.run_dir)
            self.opt.load_state(state["optimizer"])
            self.first, self.elapsed = state["iteration"] + 1, state["elapsed"]
            _truncate_run(ctx.run_dir, state["iteration"])
            self.writer = RunWriter(ctx.run_dir, append=True)
            meta = checkpoint.read_metadata(ctx.run_dir)
            meta.setdefault("resumed", []).append({"from_iteration": state["iteration"],
                                                   "command": ["gdcode", *ctx.argv],
                                                   "start_time": metadata(ctx)["start_time"]})
            meta["options"]["iterations"] = cfg.iterations
            self.writer.write_metadata(meta)
        else:
            self.writer = RunWriter(ctx.run_dir)
            self.writer.write_metadata(metadata(ctx, extra))

    def _finish(self, status: str, last: int, usage: np.ndarray, cpu: float, wall: float) -> int:
        ctx, cfg, w = self.ctx, self.cfg, self.opt.params
        self.writer.save_model(w)
        summary = {"status": status, "iterations": last, "elapsed": self.elapsed,
                   "train_loss": ctx.model.objective(self.Xtr, self.ytr, w, ctx.l2)}
        summary.update(ctx.model.test_metrics(self.Xte, self.yte, w))
        if cfg.target_loss is not None:
            summary["target_loss_reached"] = bool(summary["train_loss"] <= cfg.target_loss)
        summary.update({"worker_cpu_seconds": usage[:, 0].tolist(), "worker_wall_seconds": usage[:, 1].tolist(),
                        "coordinator_cpu_seconds": cpu, "coordinator_wall_seconds": wall})
        self.writer.write_summary(summary)
        self.writer.close()
        if cfg.record_delays:
            _write_delays(cfg.record_delays, self.recorded_delays)
        if status == "timeout":
            print(f"gdcode run: error: --timeout {cfg.timeout:g} s reached after {last} iterations; "
                  f"the run directory {ctx.run_dir} has every finished iteration", file=sys.stderr)
            return 3
        return 0

    def _shutdown(self, sends: tp.SendPool, deadline: float) -> np.ndarray:
        """Stop the workers, record replies still in flight as late, and release every request.

        Returns each worker's (CPU seconds, wall seconds) of its training loop, shape (W, 2).
        """
        from mpi4py import MPI

        comm, W = self.comm, self.W
        stop = np.zeros(tp.HEADER + self.d)
        tp.pack(stop, tp.STOP, 0)
        stop_reqs = [comm.Isend(stop, dest=i + 1, tag=tp.TAG_CONTROL) for i in range(W)]
        done_bufs = [np.empty(2) for _ in range(W)]
        done_reqs = [comm.Irecv(done_bufs[i], source=i + 1, tag=tp.TAG_DONE) for i in range(W)]
        backoff = tp.Backoff()
        clean = True
        while not MPI.Request.Testall(done_reqs):
            idx = MPI.Request.Testsome(self.recv_reqs)
            if idx:
                now = time.perf_counter()
                for s in idx:
                    _, t_reply, seconds, _ = tp.header(self.recv_bufs[s])
                    self._note(s, t_reply, seconds, now, None)
                    self._post(s)
                continue
            if time.monotonic() > deadline:
                clean = False
                break
            backoff.sleep()
        for it in sorted(self.pending):  # nothing more comes once the workers have stopped
            self.writer.append_workers(self.pending[it].status_rows(self.W, self.M))
        self.pending.clear()
        if not clean:
            self.writer.close()
            print("gdcode run: error: workers did not stop within 10 s; aborting the job", file=sys.stderr)
            comm.Abort(3)
        for r in self.recv_reqs:
            if r != MPI.REQUEST_NULL:
                r.Cancel()
        MPI.Request.Waitall(self.recv_reqs)
        MPI.Request.Waitall(stop_reqs)
        sends.wait_all()
        return np.array(done_bufs)


def coordinate(ctx: Context) -> int:
    """Run the coordinator; return the process exit code."""
    return Coordinator(ctx).run()


def _truncate_run(run_dir, iteration: int) -> None:
    """Drop metrics and worker rows past ``iteration`` (a run killed after its last checkpoint)."""
    metrics = [m for m in read_metrics(run_dir / "metrics.jsonl") if m["iteration"] <= iteration]
    workers = [r for r in read_workers(run_dir / "workers.csv") if r["iteration"] <= iteration] \
        if (run_dir / "workers.csv").exists() else []
    writer = RunWriter(run_dir)  # starts both files afresh
    for m in metrics:
        writer.append_metrics(m)
    writer.append_workers([(r["iteration"], r["worker"], r["arrival"], r["status"]) for r in workers])
    writer.close()


def _write_delays(path: str, rows: list[tuple[int, int, float]]) -> None:
    """``--record-delays``: the measured compute seconds, as a ``trace:FILE`` for replay."""
    total: dict[tuple[int, int], float] = {}
    for w, t, sec in rows:
        total[(w, t)] = total.get((w, t), 0.0) + sec
    with open(path, "w") as fh:
        fh.write("worker,iteration,seconds\n")
        for (w, t), sec in sorted(total.items()):
            fh.write(f"{w},{t},{sec:.9f}\n")


# ----------------------------------------------------------------------------- worker


def work(ctx: Context) -> int:
    """Run one worker until the coordinator says stop; return the process exit code."""
    comm = ctx.comm
    me = ctx.worker
    code = build_code(ctx)
    gather_hosts_on_workers(ctx)
    d = ctx.n_params
    bounds = partition_bounds(ctx.source.n_train, code.n_partitions)
    mats = code.message_matrices
    # one row set per message: its partitions' rows and one coefficient per row
    messages = []
    for k, mat in enumerate(mats):
        ranges, coef = worker_rows(bounds, mat[me])
        if ranges:
            X, y = stack_rows([ctx.rows(lo, hi) for lo, hi in ranges])
        else:
            X, y = np.empty((0, d)), np.empty(0)
        # cut the blocks once: a CSR row slice is a copy (a dense one is a view)
        blocks = [(X[lo:lo + BLOCK_ROWS], y[lo:lo + BLOCK_ROWS], coef[lo:lo + BLOCK_ROWS])
                  for lo in range(0, X.shape[0], BLOCK_ROWS)]
        del X
        messages.append((k, blocks))
    load = float(code.load()[me])
    share = np.array([np.count_nonzero(m[me]) for m in mats], dtype=float)
    share = share / share.sum() if share.sum() else np.full(len(mats), 1.0 / len(mats))
    kernel = ctx.model.loss_grad_sum

    size = tp.HEADER + d
    ctrl = np.empty(size)
    ctrl_req = comm.Irecv(ctrl, source=0, tag=tp.TAG_CONTROL)
    sends = tp.SendPool(size)
    backoff = tp.Backoff()
    tp.barrier(comm)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fail_at = _injected_failure(me)

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
        if t == fail_at:
            raise RuntimeError(f"worker {me + 1}: failure injected at iteration {t} by GDCODE_FAIL_WORKER")

        for k, blocks in messages:
            out = sends.get()
            g = out[tp.HEADER:]
            g[:] = 0.0
            t0 = time.perf_counter()
            cancelled = False
            for Xb, yb, cb in blocks:
                kernel(Xb, yb, cb, w, g)
                if ctrl_req.Test():
                    cancelled = True
                    break
            compute = time.perf_counter() - t0
            if not cancelled:
                # this message's share of the iteration's pause (all of it for one message)
                pause = share[k] * ctx.delay.draw(me, t, load, compute=compute / share[k] if share[k] else 0.0)
                cancelled = tp.pause(pause, ctrl_req.Test)
            if cancelled:  # ctrl_req has completed (Test stays True): the newer model is in ctrl
                sends.sent(out, [])
                break
            tp.pack(out, tp.GRADIENT, t, compute, k)
            sends.sent(out, [comm.Isend(out, dest=0, tag=tp.TAG_REPLY + k)])

    sends.wait_all()
    usage = np.array([time.process_time() - cpu0, time.perf_counter() - wall0])
    comm.Send(usage, dest=0, tag=tp.TAG_DONE)
    return 0


def _injected_failure(me: int) -> int | None:
    """``GDCODE_FAIL_WORKER=W:T`` makes worker W raise at iteration T (fault injection for tests)."""
    import os

    spec = os.environ.get("GDCODE_FAIL_WORKER")
    if not spec:
        return None
    worker, _, iteration = spec.partition(":")
    return int(iteration or 1) if int(worker) == me + 1 else None
