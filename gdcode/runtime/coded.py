"""Coded mode: the synchronous gradient-coding family (uncoded, ignore, exact and approximate codes).

Coordinator (rank 0), per iteration ``t``:
  1. send the model ``opt.point()`` tagged ``t`` to every worker (``Isend``, numpy buffers), in
     the code's :meth:`~gdcode.codes.GradientCode.send_order`;
  2. collect replies until ``code.decode(...)`` returns weights -- never waiting for a worker
     the code does not need; a reply tagged with an older iteration is recorded as ``late``
     and discarded;
  3. decode ``sum_i a_i y_i`` (summed in a fixed worker order), divide by n, add ``lambda w``
     and take the step.
The clock stops there; losses (and the gradient error, checkpoints) are computed with the
clock stopped, before the next model goes out, so they never inflate ``elapsed``.

Worker (rank ``i + 1``): for each message ``k`` of its code (one, or two for the partial
schemes), compute ``y_ik = sum_j M_k[i, j] g_j`` over its rows in blocks and serve its share of
the injected pause in short slices, polling for a newer model between blocks and slices; a
newer model cancels the old work at once. The pause comes first unless the delay model reads the
compute time (:attr:`gdcode.delays.DelayModel.uses_compute`): the reply is due at the same time
either way, but a worker cancelled in its pause has not computed for nothing, and when a model
wakes many workers sharing few cores, each one's turn on a core before its pause is shorter
(docs/runtime.md gives the measurements). When the ranks share a host (the job has doorbells),
the pause counts from the model's send, whose time the model's header carries, not from when
the worker took it (:class:`~gdcode.runtime.worker.QueueWait`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gdcode import checkpoint
from gdcode.data import stack_rows, worker_rows
from gdcode.results import RunWriter, read_metrics, read_workers
from gdcode.runtime import progress
from gdcode.runtime import protocol as pr
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context, metadata
from gdcode.runtime.coordinator import Coordinator, WorkersFailed
from gdcode.runtime.worker import QueueWait, WorkerClock, injected_failure, send_done
from gdcode.waiting import AdaptiveDeadline, WaitRule

#: rows a worker processes between two polls for a newer model
BLOCK_ROWS = 2048


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
    cut: float = float("inf")  # seconds from the start to the decode

    def first_arrivals(self, n_workers: int) -> np.ndarray:
        """Each worker's first reply to this iteration (seconds; ``inf`` when none came)."""
        out = np.full(n_workers, np.inf)
        for (w, _), (seconds, _) in self.arrivals.items():
            out[w] = min(out[w], seconds)
        return out

    def status_rows(self, n_workers: int, n_messages: int, dead: dict[int, int] | None = None) -> list[tuple]:
        rows = []
        for w in range(n_workers):
            if dead and w + 1 in dead and self.t >= dead[w + 1]:
                rows.append((self.t, w + 1, None, "dead"))
                continue
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


class CodedCoordinator(Coordinator):
    """Rank 0 of a coded run: sends the model, decodes as soon as the code can, steps."""

    stop_tag = pr.Tag.CONTROL
    threaded_evaluation = False

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.code = ctx.code
        self.M = self.code.n_messages
        self.n = ctx.problem.rows_per_iteration  # the decoded sum is over these rows
        self.d = ctx.n_params
        self.opt = ctx.problem.optimizer()
        self.pending: dict[int, _Iteration] = {}
        self.current: _Iteration | None = None
        self.elapsed = 0.0
        self.first = 1
        self.last = 0
        self.recorded_delays: list[tuple[int, int, float]] = []
        self.weights: np.ndarray | None = None
        self.dead_from: dict[int, int] = {}  # dead worker (1-based) -> first iteration it missed
        if self.code.keeps_stale:  # stale: every partition's last gradient, and the iteration it is from
            self.memory = np.zeros((self.W, self.d))
            self.memory_iteration = np.zeros(self.W, dtype=np.int64)
        if self.code.repeats:  # kbatch: the iteration's gradients are summed as they come
            self.acc = np.zeros(self.d)
            self.acc_rows = 0
            self.contributions = np.zeros(self.W, dtype=np.int64)
            sizes = ctx.problem.batch_sizes()
            assert sizes is not None
            self.batch_rows = sizes
        rule = WaitRule.parse(self.options.wait)
        self.deadlines = AdaptiveDeadline(rule) if rule.adaptive else None
        self.wait_deadline: float | None = None  # --wait: this iteration's, in seconds from its start
        self.responders: list = []
        self.decode_seconds = 0.0

    def metadata_extra(self) -> dict:
        code = self.code
        return {"code": {"name": code.name, "exact": code.exact, "n_partitions": code.n_partitions,
                         "n_messages": self.M, "load": code.load().tolist(),
                         "options": dict(code.options)},
                "delay": self.ctx.delay.describe()}

    def open_run(self) -> None:
        ctx = self.ctx
        if not self.options.resume:
            super().open_run()
            return
        state = checkpoint.load(ctx.run_dir)
        self.opt.load_state(state["optimizer"])
        self.first, self.elapsed = state["iteration"] + 1, state["elapsed"]
        self.last = state["iteration"]
        _truncate_run(ctx.run_dir, state["iteration"])
        self.writer = RunWriter(ctx.run_dir, append=True)
        now = metadata(ctx)
        self.note_ranks(now)  # this job's workers, not the first run's
        meta = checkpoint.read_metadata(ctx.run_dir)
        meta.setdefault("resumed", []).append({"from_iteration": state["iteration"], "command": ctx.command,
                                               "start_time": now["start_time"], "hosts": now["hosts"],
                                               "pids": now["pids"]})
        meta["options"]["iterations"] = self.options.iterations
        self.writer.write_metadata(meta)

    # --- replies -------------------------------------------------------------------------

    def prepare(self) -> None:
        size = pr.GRADIENT.size(self.d)
        self.held: list[int] = []  # streams whose buffer holds a reply to the current iteration
        self.stream_of: dict[int, tuple[int, int]] = {}
        for w in range(self.W):
            for k in range(self.M):
                sid = self.listen(w, pr.reply_tag(k), np.empty(size), self._on_reply)
                self.stream_of[sid] = (w, k)
        self.bufs = {self.stream_of[sid]: self._streams[sid].buf for sid in self.stream_of}
        self.sid_of = {wk: sid for sid, wk in self.stream_of.items()}
        if not self.options.resume:  # the initial model at elapsed 0, as every mode starts its record
            self.evaluator.submit(0, 0.0, self.opt.params)

    def _on_reply(self, w: int, buf: np.ndarray) -> bool:
        """Record one reply; hold its buffer when it answers the current iteration."""
        h = pr.header(buf)
        k = h.part
        now = time.perf_counter()
        current = self.current
        rec = self.pending.get(h.iteration)
        if rec is not None:
            rec.arrivals[(w, k)] = (now - rec.start, rec is current and rec.weights is None)
            rec.closed.add((w, k))
        if self.options.record_delays:
            self.recorded_delays.append((w + 1, h.iteration, h.seconds))
        for it in [it for it in self.pending if it < h.iteration]:
            self.pending[it].closed.add((w, k))
        if self.code.keeps_stale and (current is None or h.iteration < current.t) \
                and h.iteration > self.memory_iteration[w]:  # a late reply is still the newest for its partition
            self.memory[w] = pr.GRADIENT.vector(buf)
            self.memory_iteration[w] = h.iteration
        if current is None or h.iteration != current.t or current.weights is not None:
            return True  # a straggler's reply to an iteration already decoded: post again
        if self.code.repeats:
            return self._accumulate(w, buf)
        self.held.append(self.sid_of[(w, k)])
        self.responders.append((w, k) if self.M > 1 else w)
        if self.weights is None:
            t0 = time.perf_counter()
            if self.wait_deadline is None:
                self.weights = self.code.decode(self.responders)
            elif len(self.responders) == self.W * self.M:  # everyone has replied: no reason to wait on
                self.weights = self.code.decode_now(self.responders)
            self.decode_seconds = time.perf_counter() - t0
        return False

    def _accumulate(self, w: int, buf: np.ndarray) -> bool:
        """kbatch: add one minibatch gradient of the current iteration; decoded once ``k`` have come."""
        self.acc += pr.GRADIENT.vector(buf)
        self.acc_rows += int(self.batch_rows[w])
        self.contributions[w] += 1
        self.responders.append(w)
        self.weights = self.code.decode(self.responders)  # the replies' counts once k have come
        return True  # the buffer is summed already: post again for the worker's next one

    def _deadline_passed(self) -> bool:
        """Under ``--wait quantile|mad``: at the deadline, with at least ``--min-replies`` replies,
        decode with what has come."""
        left = self._deadline_left()
        if left is None or left > 0 or len(self.responders) < self.options.min_replies:
            return False
        t0 = time.perf_counter()
        self.weights = self.code.decode_now(self.responders)
        self.decode_seconds = time.perf_counter() - t0
        return self.weights is not None

    def _deadline_left(self) -> float | None:
        """Seconds from now to the iteration's ``--wait`` deadline (negative once it has passed;
        None: no deadline)."""
        rec = self.current
        if self.wait_deadline is None or rec is None:
            return None
        return rec.start + self.wait_deadline - time.perf_counter()

    def _until_deadline(self) -> float:
        """How long rank 0 may sleep before its ``--wait`` deadline, which no message marks (inf: no
        deadline, or it has passed without enough replies, which then wake it)."""
        left = self._deadline_left()
        return left if left is not None and left > 0 else math.inf

    def _flush_finished(self) -> None:
        """Write the worker rows of every iteration whose streams have all closed (with the clock
        stopped: ``workers.csv`` is not written during an iteration)."""
        for it in sorted(self.pending):
            rec = self.pending[it]
            if len(rec.closed) < self.W * self.M:
                continue
            self.writer.append_workers(rec.status_rows(self.W, self.M, self.dead_from))
            if self.deadlines is not None:
                self.deadlines.observe(rec.first_arrivals(self.W), rec.cut)
            del self.pending[it]

    # --- the loop ------------------------------------------------------------------------

    def loop(self) -> None:
        W, M, opts = self.W, self.M, self.options
        sends = tp.SendPool(pr.MODEL.size(self.d))
        self.sends = sends
        # in the code's send order: one worker of each group of stand-ins first
        boxes = [self.outbox(int(i), pr.Tag.CONTROL, pr.MODEL.size(self.d)) for i in self.code.send_order()]
        decoded = np.empty(self.d)
        line = progress.Progress(opts.iterations, progress.wanted(opts.quiet))
        try:
            for t in range(self.first, opts.iterations + 1):
                point = self.opt.point().copy()  # the step may update params in place
                buf = sends.get()
                pr.MODEL.vector(buf)[:] = point
                start = time.perf_counter()
                pr.MODEL.pack(buf, pr.Kind.MODEL, t, seconds=start)  # the send time (QueueWait)
                with self.comm.rings_together():
                    sends.sent(buf, [r for box in boxes if (r := box.offer(buf)) is not None])
                rec = _Iteration(t, start)
                self.pending[t] = rec
                self.current = rec
                self.responders = []
                self.held = []
                self.weights = None
                self.decode_seconds = 0.0
                self.wait_deadline = self.deadlines.deadline() if self.deadlines is not None else None
                self.wait_until(lambda: self.weights is not None or self._deadline_passed(), self._until_deadline)
                t_combine = time.perf_counter()
                rec.cut = t_combine - start
                weights = np.asarray(self.weights, dtype=float).reshape(M, W)
                rec.weights = weights
                decoded[:] = 0.0
                extra: dict[str, Any] = {}
                if self.code.repeats:
                    decoded[:], rows = self.acc, self.acc_rows
                    extra["contributions"] = self.contributions.tolist()
                    self.acc[:], self.acc_rows, self.contributions[:] = 0.0, 0, 0
                elif self.code.keeps_stale:
                    for sid in self.held:
                        w, k = self.stream_of[sid]
                        if weights[k, w] != 0.0:
                            self.memory[w] = pr.GRADIENT.vector(self._streams[sid].buf)
                            self.memory_iteration[w] = t
                    for w in range(W):  # a fixed order: the same sum whatever the arrival order
                        if self.memory_iteration[w] > 0:
                            decoded += self.memory[w]
                    extra["staleness"] = (t - self.memory_iteration).tolist()
                    rows = self.n
                else:
                    for sid in sorted(self.held):  # a fixed order: the same sum whatever the arrival order
                        w, k = self.stream_of[sid]
                        a = weights[k, w]
                        if a != 0.0:
                            decoded += a * pr.GRADIENT.vector(self._streams[sid].buf)
                    rows = self.n
                grad = decoded / rows + self.ctx.l2 * point
                for sid in self.held:
                    self.repost(sid)
                self.opt.step(grad)
                end = time.perf_counter()
                self.elapsed += end - start
                self.current = None
                # --- clock stopped: evaluation, checkpoint ---
                self._flush_finished()
                extra.update({"responders": len(self.responders),
                              "decode_seconds": self.decode_seconds + end - t_combine})
                if self.deadlines is not None:
                    extra["deadline"] = self.wait_deadline
                if opts.track_gradient_error:
                    exact = self.ctx.model.full_gradient(self.evaluator.Xtr, self.evaluator.ytr, point, self.ctx.l2)
                    extra["gradient_error"] = float(np.linalg.norm(grad - exact) / np.linalg.norm(exact))
                self.evaluator.submit(t, self.elapsed, self.opt.params, **extra)
                record = self.evaluator.last
                assert record is not None
                line.update(t, self.elapsed, record["train_loss"])
                self.last = t
                if opts.checkpoint_every and t % opts.checkpoint_every == 0:
                    checkpoint.save(self.ctx.run_dir, t, self.elapsed, self.opt)
                if opts.target_loss is not None and record["train_loss"] <= opts.target_loss:
                    break
                self.check_deadline()  # also stops a diverged run
        finally:
            self.current = None
            line.close()

    def on_death(self, worker: int) -> None:
        """A dead worker is a straggler for ever: its streams close, and the code must still decode."""
        t = self.current.t if self.current is not None else self.last + 1
        self.dead_from[worker + 1] = t
        for rec in self.pending.values():
            if rec.t >= t:
                rec.closed.update((worker, k) for k in range(self.M))
        live = [(w, k) if self.M > 1 else w for w in range(self.W) if w + 1 not in self.dead
                for k in range(self.M)]
        if self.code.decode(live) is None:
            dead = ", ".join(map(str, sorted(self.dead)))
            raise WorkersFailed(f"worker(s) {dead} died; scheme {self.code.name} cannot decode without them "
                                f"(it tolerates {self.code.straggler_tolerance} straggler(s))")

    def after_drain(self) -> None:
        if self.dead or self.unresponsive:
            return  # a send to a dead or frozen worker never completes
        self.sends.wait_all()

    def result(self) -> tuple[np.ndarray, int, float, dict]:
        for it in sorted(self.pending):  # nothing more comes once the workers have stopped
            self.writer.append_workers(self.pending[it].status_rows(self.W, self.M, self.dead_from))
        self.pending.clear()
        if self.options.record_delays:
            _write_delays(self.options.record_delays, self.recorded_delays)
        return self.opt.params, self.last, self.elapsed, {}


def coordinate(ctx: Context) -> int:
    """Run the coordinator; return the process exit code."""
    return CodedCoordinator(ctx).run()


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
    code = ctx.code
    d = ctx.n_params
    bounds = ctx.problem.partition_bounds()
    mats = code.message_matrices
    minibatch = ctx.problem.batch_sizes() is not None
    # one row set per message: its partitions' rows and one coefficient per row
    messages: list[tuple[int, list, list]] = []
    for k, mat in enumerate(mats):
        if minibatch:  # each partition's rows, sampled per iteration
            held = [(int(j), *ctx.rows(int(bounds[j]), int(bounds[j + 1])), float(mat[me, j]))
                    for j in np.flatnonzero(mat[me])]
            messages.append((k, [], held))
            continue
        ranges, coef = worker_rows(bounds, mat[me])
        if ranges:
            X, y = stack_rows([ctx.rows(lo, hi) for lo, hi in ranges])
        else:
            X, y = np.empty((0, d)), np.empty(0)
        # cut the blocks once: a CSR row slice is a copy (a dense one is a view)
        blocks = [(X[lo:lo + BLOCK_ROWS], y[lo:lo + BLOCK_ROWS], coef[lo:lo + BLOCK_ROWS])
                  for lo in range(0, X.shape[0], BLOCK_ROWS)]
        del X
        messages.append((k, blocks, []))
    load = float(code.load()[me])
    share = np.array([np.count_nonzero(m[me]) for m in mats], dtype=float)
    share = share / share.sum() if share.sum() else np.full(len(mats), 1.0 / len(mats))
    kernel = ctx.model.loss_grad_sum
    pause_first = not ctx.delay.uses_compute

    ctrl = pr.MODEL.new(d)
    ctrl_req = comm.Irecv(ctrl, source=0, tag=pr.Tag.CONTROL)
    sends = tp.SendPool(pr.GRADIENT.size(d))
    backoff = tp.Backoff()
    queued = QueueWait(enabled=tp.doorbell() is not None)
    tp.barrier(comm)
    clock = WorkerClock()
    fail_at = injected_failure(me, ctx.options.workers)
    steps = sent = 0

    while True:
        # wait (without spinning) for the next control message, then skip to the newest
        backoff.reset()
        while not ctrl_req.Test():
            backoff.sleep()
        kind, t, sent_at, _ = pr.header(ctrl)
        while kind != pr.Kind.STOP and comm.Iprobe(source=0, tag=pr.Tag.CONTROL):
            comm.Recv(ctrl, source=0, tag=pr.Tag.CONTROL)
            kind, t, sent_at, _ = pr.header(ctrl)
        if kind == pr.Kind.STOP:
            break
        queued.took(sent_at)
        w = pr.MODEL.vector(ctrl).copy()
        ctrl_req = comm.Irecv(ctrl, source=0, tag=pr.Tag.CONTROL)
        if t == fail_at:
            raise RuntimeError(f"worker {me + 1}: failure injected at iteration {t} by GDCODE_FAIL_WORKER")

        repeat = 0
        while True:  # once, or (kbatch) one minibatch after another until a newer model comes
            for k, blocks, held in messages:
                if pause_first and tp.pause(queued.serve(share[k] * ctx.delay.draw_repeat(me, t, repeat, load)),
                                            ctrl_req.Test):
                    break  # a newer model came in the pause: nothing was computed for this one
                out = sends.get()
                g = pr.GRADIENT.vector(out)
                g[:] = 0.0
                t0 = time.perf_counter()
                cancelled = False
                if held:
                    blocks = minibatch_blocks(ctx.problem, held, t, repeat)
                for Xb, yb, cb in blocks:
                    kernel(Xb, yb, cb, w, g)
                    if ctrl_req.Test():
                        cancelled = True
                        break
                compute = time.perf_counter() - t0
                if not cancelled and not pause_first:
                    # this message's share of the iteration's pause (all of it for one message)
                    c = compute / share[k] if share[k] else 0.0
                    pause = share[k] * ctx.delay.draw_repeat(me, t, repeat, load, c)
                    cancelled = tp.pause(queued.serve(pause), ctrl_req.Test)
                if cancelled:  # ctrl_req has completed (Test stays True): the newer model is in ctrl
                    sends.sent(out, [])
                    break
                pr.pack_header(out, pr.Kind.GRADIENT, t, compute, k)
                sends.sent(out, [comm.Isend(out, dest=0, tag=pr.reply_tag(k))])
                sent += 1
            else:
                if code.repeats and not ctrl_req.Test():
                    repeat += 1
                    continue
            break
        steps = t

    sends.wait_all()
    send_done(comm, steps, clock, sent)
    return 0


def minibatch_blocks(problem, held: list[tuple], iteration: int, repeat: int = 0) -> list[tuple]:
    """Iteration ``iteration``'s minibatch of the partitions a worker holds, in row blocks:
    ``(X, y, coefficients)`` per block (:meth:`gdcode.problem.Problem.batch_rows`; a kbatch
    worker's later minibatches of an iteration come from streams of their own)."""
    blocks = []
    for j, X, y, c in held:
        idx = problem.batch_rows(j, iteration, repeat)
        Xb, yb = X[idx], y[idx]
        cb = np.full(idx.size, c)
        blocks += [(Xb[lo:lo + BLOCK_ROWS], yb[lo:lo + BLOCK_ROWS], cb[lo:lo + BLOCK_ROWS])
                   for lo in range(0, idx.size, BLOCK_ROWS)]
    return blocks
