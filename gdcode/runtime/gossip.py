"""Gossip mode: decentralised SGD with pairwise, elastic or push-sum averaging.

There is no global collective inside the training loop. Each worker (rank ``i + 1``) runs
``--iterations`` SGD steps on minibatches of its partition with its own optimiser, and
between blocks of rows, in the slices of its injected pause and while it waits, it runs a
*polling responder*: an ``Irecv`` on :attr:`~gdcode.runtime.protocol.Tag.ASK` that it
tests, answering what came (docs/runtime.md: one-sided MPI would not progress while the
target computes). Requests that change the model (elastic exchanges, push-sum messages)
are applied as they are answered, also while a step computes: the gradient is taken at a
copy of the model made when the step began, and the step applies it to the model as it is
then (as in Hogwild, a step may land on a model that moved meanwhile). A worker that pauses
(a straggler) thus keeps mixing at the pace of its peers' requests.

Mixing (:mod:`gdcode.mixing` has the rules):

* ``pairwise``: before a step, with probability ``--gossip-prob`` (or every
  ``--gossip-period`` steps), ask a peer for its model, clock and last loss; the answer
  travels while the step computes; after the step, wait at most ``--peer-timeout`` seconds
  for it and mix ``x <- f x_peer + (1 - f) x``. A late answer is discarded. The peer comes
  from :class:`gdcode.mixing.PeerSelector` (``--peer-selection``).
* ``elastic``: after a step, send the model to a uniformly chosen peer, which answers with
  its own and applies ``alpha (x_peer - x_own)``; this worker applies the mirror term when
  the answer comes. Every exchange is applied on both sides, so the models' sum is kept.
* ``push-sum``: after a step, halve the weight and push ``(x, w/2)`` to a uniformly chosen
  peer, which merges it when its responder receives it.

Rank 0 evaluates: every ``--eval-every`` seconds it asks every worker for its model and step
count (the responder answers) and evaluates their average (weighted by the push-sum weights
for push-sum) on a helper thread; no worker waits on it. When every worker has finished, rank
0 sends STOP; the workers then swap counts of the requests they sent (an ``Ialltoall``
outside the training loop), answer every request still in flight and collect every answer
they await, and send their final models, whose average is ``model.npy``.

Records: ``metrics.jsonl`` has one line per evaluation, ``iteration`` being the total number
of steps the workers had taken (the updates the average absorbed); the first line is the
initial model, the last the final average. ``workers.csv`` has one row per worker step:
``iteration`` the step, ``arrival`` the seconds since the start when the step (with its
mixing) finished, ``status`` ``used``. Per-worker gossip counts are in ``summary.json``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gdcode import mixing as mix
from gdcode.runtime import protocol as pr
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context
from gdcode.runtime.coordinator import FROZEN_AFTER, Coordinator
from gdcode.runtime.worker import BLOCK_ROWS, LocalRows, WorkerClock, send_done

#: per-worker counts reported in summary.json
STATS = pr.GOSSIP_STATS


@dataclass
class _Outgoing:
    """A request this worker sent and whose answer it awaits."""

    kind: str  # "pull" or "elastic"
    buf: np.ndarray
    req: Any
    sent_at: float
    x_sent: np.ndarray | None = None


class Worker:
    """One gossip worker."""

    def __init__(self, ctx: Context) -> None:
        from mpi4py import MPI

        self.ctx, self.cfg, self.comm = ctx, ctx.options, ctx.comm
        cfg = self.cfg
        self.me, self.d, self.size = ctx.worker, ctx.n_params, ctx.comm.Get_size()
        self.rows = LocalRows(ctx, cfg.batch_size)
        self.opt = ctx.problem.optimizer()
        self.rng = np.random.default_rng([cfg.seed, 0x6055, self.me])
        selection = cfg.peer_selection if cfg.mixing == "pairwise" else "uniform"
        self.selector = mix.PeerSelector(cfg.workers, self.me, selection, self.rng)
        self.push = mix.PushSum(self.opt.params, 1.0)
        self.clock = 0.0
        self.loss = math.nan
        self.steps = 0
        self.stats = dict.fromkeys(STATS, 0)
        self.stop = False
        self.events = 0
        self.to_root = 0  # messages sent to rank 0 (answers to its evaluation requests)
        self.wanted: int | None = None
        self.out: dict[int, _Outgoing] = {}
        self.pushes: dict[int, Any] = {}  # peer -> the request of the last push to it
        self.sent_asks = np.zeros(self.size, dtype=np.int64)
        self.got_asks = np.zeros(self.size, dtype=np.int64)
        self.ask_buf = pr.ASK.new(self.d)
        self.ask_status = MPI.Status()
        self.ask_req = self._post_ask()
        self.sends = tp.SendPool(max(pr.REPORT.size(self.d), pr.ANSWER.size(self.d), pr.ASK.size(self.d)))
        self.records: list[tuple[int, float]] = []

    @property
    def x(self) -> np.ndarray:
        return self.opt.params

    def _post_ask(self):
        from mpi4py import MPI

        return self.comm.Irecv(self.ask_buf, source=MPI.ANY_SOURCE, tag=pr.Tag.ASK)

    # --- the responder -------------------------------------------------------------------

    def poll(self) -> bool:
        """Answer every request that has come, collect answers to ours; True once STOP has come.

        ``self.events`` counts what came, so a waiting loop knows whether to back off.
        """
        while self.ask_req.Test(self.ask_status):
            src = self.ask_status.Get_source()
            self.got_asks[src] += 1
            self.events += 1
            self._answer(src)
            self.ask_req = self._post_ask()
        for j in [j for j in self.out if j != self.wanted]:
            r = self.out[j]
            if r.req.Test():
                del self.out[j]
                self.events += 1
                if r.kind == "elastic" and r.x_sent is not None:
                    self._elastic(r.x_sent, pr.ANSWER.vector(r.buf))
                else:
                    self.stats["late"] += 1
        return self.stop

    def _answer(self, src: int) -> None:
        kind, tag, _, _ = pr.header(self.ask_buf)
        if kind == pr.Kind.STOP:
            self.stop = True
            return
        d = self.d
        buf = self.sends.get()
        if kind == pr.Kind.ASK_EVAL:
            msg = self._report(buf, pr.Kind.ANSWER, tag)
            self.sends.sent(buf, [self.comm.Isend(msg, dest=0, tag=pr.Tag.ROOT)])
            self.to_root += 1
            return
        self.stats["answered"] += 1
        if kind == pr.Kind.ASK_PUSH:
            self.sends.sent(buf, [])
            self.push.x = self.x
            self.push.receive(pr.ASK.vector(self.ask_buf, d), pr.ASK.get(self.ask_buf, "weight"))
            self.stats["mixed"] += 1
            return
        msg = buf[:pr.ANSWER.size(d)]
        pr.ANSWER.pack(msg, pr.Kind.ANSWER, tag, clock=self.clock, loss=self.loss)
        pr.ANSWER.vector(msg)[:] = self.x
        self.sends.sent(buf, [self.comm.Isend(msg, dest=src, tag=pr.Tag.ANSWER)])
        if kind == pr.Kind.ASK_ELASTIC:
            self._elastic(pr.ANSWER.vector(msg), pr.ASK.vector(self.ask_buf, d))

    def _report(self, buf: np.ndarray, kind: int, tag: int, usage=(0.0, 0.0)) -> np.ndarray:
        msg = buf[:pr.REPORT.size(self.d)]
        pr.REPORT.pack(msg, kind, tag, steps=self.steps, weight=self.push.weight, cpu_seconds=usage[0],
                       wall_seconds=usage[1], **self.stats)
        pr.REPORT.vector(msg)[:] = self.x
        return msg

    def _elastic(self, x_sent: np.ndarray, x_peer: np.ndarray) -> None:
        """One elastic exchange's term, at once: each is a contraction towards the peer, so many
        exchanges in a row (a slow worker answering fast ones) never overshoot."""
        mix.elastic_apply(self.x, x_sent, x_peer, self.cfg.alpha)
        self.stats["mixed"] += 1

    # --- requests to peers ---------------------------------------------------------------

    def _ask(self, j: int, kind: int, t: int, weight: float = 0.0, x: np.ndarray | None = None) -> Any:
        buf = self.sends.get()
        n = pr.ASK.start
        pr.ASK.pack(buf, kind, t, weight=weight)
        if x is not None:
            pr.ASK.vector(buf, self.d)[:] = x
            n = pr.ASK.size(self.d)
        req = self.comm.Issend(buf[:n], dest=j + 1, tag=pr.Tag.ASK)
        self.sends.sent(buf, [req])
        self.sent_asks[j + 1] += 1
        return req

    def _request(self, j: int, kind: str, t: int) -> bool:
        """Send a pull or elastic request to peer ``j`` unless one is still unanswered."""
        if j in self.out:
            return False
        x_sent = self.x.copy() if kind == "elastic" else None
        self._ask(j, pr.Kind.ASK_ELASTIC if kind == "elastic" else pr.Kind.ASK_PULL, t, x=x_sent)
        abuf = pr.ANSWER.new(self.d)
        req = self.comm.Irecv(abuf, source=j + 1, tag=pr.Tag.ANSWER)
        self.out[j] = _Outgoing(kind, abuf, req, time.perf_counter(), x_sent)
        return True

    # --- the loop ------------------------------------------------------------------------

    def step(self, t: int, grad: np.ndarray) -> bool:
        """Step ``t`` with its gossip; False when STOP cut it short."""
        cfg, ctx = self.cfg, self.ctx
        self.poll()
        if cfg.gossip_period:
            gossip = t % cfg.gossip_period == 0
        else:
            gossip = bool(self.rng.random() < cfg.gossip_prob)
        if gossip and cfg.mixing == "pairwise":
            j = self.selector.pick()
            self._request(j, "pull", t)
            self.wanted = j
            self.stats["gossips"] += 1
        t_start = time.perf_counter()
        point = self.opt.point().copy()  # the responder may mix the model while the gradient is computed
        Xb, yb = self.rows.batch()
        loss = _gradient(ctx, Xb, yb, point, grad, self.poll)
        compute = time.perf_counter() - t_start
        if self.stop or tp.pause(ctx.delay.draw(self.me, t, self.rows.load, compute), self.poll):
            self.wanted = None  # its answer, if any, is collected (and discarded) by poll()
            return False
        self.opt.step(grad)
        self.clock += Xb.shape[0]
        self.loss = loss + 0.5 * ctx.l2 * float(point @ point)
        self.steps = t
        if self.wanted is not None:
            self._finish_pull(self.wanted)
        self.poll()
        if gossip and cfg.mixing == "elastic":
            if self._request(self.selector.pick(), "elastic", t):
                self.stats["gossips"] += 1
        elif gossip and cfg.mixing == "push-sum":
            j = self.selector.pick()
            last = self.pushes.get(j)
            if last is None or last.Test():  # at most one push in flight to a peer (a frozen one holds it)
                self.push.x = self.x
                x_half, w_half = self.push.send()
                self.pushes[j] = self._ask(j, pr.Kind.ASK_PUSH, t, weight=w_half, x=x_half)
                self.stats["gossips"] += 1
        return True

    def _finish_pull(self, j: int) -> None:
        """Wait up to ``--peer-timeout`` for peer ``j``'s answer and mix it in."""
        r = self.out[j]
        limit = r.sent_at + self.cfg.peer_timeout
        backoff = tp.Backoff()
        answered = r.req.Test()
        while not answered and not self.poll() and time.perf_counter() < limit:
            backoff.sleep()
            answered = r.req.Test()
        self.wanted = None
        if not answered and self.stop:
            return
        if not answered:
            self.selector.timeout(j)
            self.stats["timeouts"] += 1
            return
        del self.out[j]
        self.selector.success(j)
        self.stats["mixed"] += 1
        clock_peer, loss_peer = pr.ANSWER.get(r.buf, "clock"), pr.ANSWER.get(r.buf, "loss")
        f = mix.interpolation_factor(self.cfg.interpolation, self.cfg.alpha, self.clock, clock_peer,
                                     self.loss, loss_peer)
        mix.pairwise_mix(self.x, pr.ANSWER.vector(r.buf), f)

    def run(self) -> int:
        from mpi4py import MPI

        comm = self.comm
        grad = np.empty(self.d)
        tp.barrier(comm)
        clock = WorkerClock()
        for t in range(1, self.cfg.iterations + 1):
            if self.stop or not self.step(t, grad):
                break
            self.records.append((t, time.perf_counter() - clock.wall0))
        usage = clock.usage()
        done, _done_buf = send_done(comm, self.steps, usage, sent=self.to_root, wait=False)
        backoff = tp.Backoff()
        self._idle_until(lambda: self.stop, backoff)
        # every request in flight is answered and every answer collected before the final model
        expected = np.zeros(self.size, dtype=np.int64)
        sent = self.sent_asks.copy()
        counts = comm.Ialltoall([sent, MPI.INT64_T], [expected, MPI.INT64_T])
        self._idle_until(counts.Test, backoff)
        self._idle_until(lambda: not self.out and bool(np.all(self.got_asks >= expected)), backoff)
        self.ask_req.Cancel()
        self.ask_req.Wait()
        buf = self.sends.get()
        msg = self._report(buf, pr.Kind.FINAL, self.steps, usage)
        self.sends.sent(buf, [comm.Isend(msg, dest=0, tag=pr.Tag.ROOT)])
        req, _keep = pr.send_records(comm, np.array(self.records, dtype=float).reshape(-1, 2))
        tp.poll_until(lambda: req.Test() and done.Test())
        self.sends.wait_all()
        return 0

    def _idle_until(self, done, backoff: tp.Backoff) -> None:
        """Answer requests until ``done()``, sleeping between polls."""
        backoff.reset()
        while not done():
            before = self.events
            self.poll()
            if self.events != before:
                backoff.reset()
            else:
                backoff.sleep()


def _gradient(ctx: Context, Xb, yb: np.ndarray, point: np.ndarray, grad: np.ndarray, poll) -> float:
    from gdcode.sgd import dense_gradient

    return dense_gradient(ctx.model, Xb, yb, point, ctx.l2, grad, BLOCK_ROWS, poll)


def work(ctx: Context) -> int:
    """Run one gossip worker; return the process exit code."""
    return Worker(ctx).run()


# ----------------------------------------------------------------------------- rank 0


class GossipCoordinator(Coordinator):
    """Rank 0 of a gossip run: the evaluator of the workers' average, and the one who says stop."""

    stop_tag = pr.Tag.ASK

    def metadata_extra(self) -> dict:
        return {**super().metadata_extra(), "mixing": self.options.mixing}

    def prepare(self) -> None:
        d, W = self.ctx.n_params, self.W
        self.evaluator.submit(0, 0.0, self.ctx.w0.copy())
        self.evaluator.flush(wait=True)  # done before the clock starts
        self.push_sum = self.options.mixing == "push-sum"
        self.asks = tp.SendPool(pr.ASK.start)
        self.sent_asks = np.zeros(W + 1, dtype=np.int64)
        self.final: dict[int, np.ndarray] = {}
        self.answers: dict[int, np.ndarray] = {}
        self.round_no, self.round_at, self.open_round = 0, 0.0, False
        self.round_started, self.longest_round = 0.0, 0.0
        self.asked: list[int] = []
        self.last_avg = (0, self.ctx.w0)
        self.counts = None
        for i in range(W):
            self.listen(i, pr.Tag.ROOT, pr.REPORT.new(d), self._on_report)

    def _on_report(self, s: int, buf: np.ndarray) -> bool:
        kind, tag, _, _ = pr.header(buf)
        if kind == pr.Kind.ANSWER and self.open_round and tag == self.round_no:
            self.answers[s] = buf.copy()
        elif kind == pr.Kind.FINAL:
            self.final[s] = buf.copy()
            return False  # nothing more comes from this worker on ROOT
        return True

    def _ask_all(self, kind: int, tag: int, workers: list[int] | None = None) -> None:
        with self.comm.rings_together():  # woken workers would take rank 0's core between sends
            for i in range(self.W) if workers is None else workers:
                buf = self.asks.get()
                pr.pack_header(buf, kind, tag)
                pr.ASK.set(buf, weight=0.0)
                self.asks.sent(buf, [self.comm.Isend(buf, dest=i + 1, tag=pr.Tag.ASK)])
                self.sent_asks[i + 1] += 1

    def _responsive(self) -> list[int]:
        return [i for i in range(self.W) if i + 1 not in self.unresponsive]

    def _start_round(self, now: float) -> None:
        """Ask every responsive worker for its model (at most one request in flight to each)."""
        self.round_no += 1
        self.round_at, self.open_round = now, True
        self.round_started = time.monotonic()
        self.asked = self._responsive()
        self._ask_all(pr.Kind.ASK_EVAL, self.round_no, self.asked)

    def _close_round(self) -> bool:
        """Evaluate the round once every asked worker has answered; a worker that has not answered
        within :data:`~gdcode.runtime.coordinator.FROZEN_AFTER` seconds and three times the longest
        round so far is listed as unresponsive and the round is evaluated without it (the line's
        ``workers`` says how many models the average holds). Whether a round was closed."""
        if not self.open_round:
            return False
        took = time.monotonic() - self.round_started
        if len(self.answers) < len(self.asked):
            if took <= max(FROZEN_AFTER, 3.0 * self.longest_round):
                return False
            missing = {i + 1 for i in self.asked if i not in self.answers}
            self.unresponsive = sorted(set(self.unresponsive) | missing)
        else:
            self.longest_round = max(self.longest_round, took)
        if self.answers:
            steps, avg = _average(self.answers, self.push_sum)
            extra = {} if len(self.answers) == self.W else {"workers": len(self.answers)}
            self.evaluator.submit(steps, self.round_at, avg, **extra)
            self.last_avg = (steps, avg)
        self.answers, self.open_round = {}, False
        return True

    def loop(self) -> None:
        opts, evaluator = self.options, self.evaluator
        next_eval = opts.eval_every
        while True:
            self.idle()
            now = time.perf_counter() - self._wall0
            self._close_round()
            evaluator.flush()
            if evaluator.reached(opts.target_loss):
                return
            if all(self.done[i] for i in self._responsive()):
                if not self.unresponsive:
                    return
                # the final model without the silent workers: one more round among the others
                self._start_round(now)
                self.wait_until(self._close_round)
                evaluator.flush(wait=True)
                return
            if now >= next_eval and not self.open_round and not evaluator.busy():
                self._start_round(now)
                next_eval = now + opts.eval_every

    def stop_workers(self) -> None:
        """STOP through every worker's responder, then swap request counts (every ask is answered)."""
        from mpi4py import MPI

        if self.counts is not None:
            return
        self._ask_all(pr.Kind.STOP, 0)
        self._count_bufs = (self.sent_asks.copy(), np.zeros(self.W + 1, np.int64))  # alive until counts completes
        self.counts = self.comm.Ialltoall([self._count_bufs[0], MPI.INT64_T], [self._count_bufs[1], MPI.INT64_T])

    def all_done(self) -> bool:
        return (super().all_done() and len(self.final) == self.W and self.counts is not None
                and bool(self.counts.Test()))

    def drain_grace(self) -> float | None:
        # the workers' closing count exchange is collective: with a frozen worker it cannot end
        return 0.0 if self.unresponsive else super().drain_grace()

    def after_drain(self) -> None:
        self.asks.wait_all(time.monotonic() + 10.0)
        W = self.W
        records = [pr.recv_records(self.comm, i + 1, 2, time.monotonic() + 10.0) for i in range(W)]
        rows = [(int(t), i + 1, float(at), "used") for i, rec in enumerate(records) for t, at in rec]
        self.writer.append_workers(sorted(rows, key=lambda r: (r[2], r[1])))
        steps, avg = _average(self.final, self.push_sum)
        self.evaluator.flush(wait=True)
        finished = max((float(rec[-1, 1]) for rec in records if rec.size), default=0.0)
        last = self.evaluator.last
        elapsed = max(finished, last["elapsed"] if last else 0.0)
        if steps != self.last_avg[0] or not np.array_equal(avg, self.last_avg[1]):
            self.evaluator.submit(steps, elapsed, avg)  # else the last line is the final model
        self._result = (avg, steps, elapsed)

    def result(self) -> tuple[np.ndarray, int, float, dict]:
        if not hasattr(self, "_result"):  # the drain did not finish: the last average evaluated
            steps, avg = self.last_avg
            last = self.evaluator.last
            extra = {"worker_steps": self.worker_steps.tolist(),
                     "averaged_workers": [i + 1 for i in self._responsive()]}
            return avg, steps, last["elapsed"] if last else 0.0, extra
        avg, steps, elapsed = self._result
        meta = np.array([pr.REPORT.scalars(self.final[i]) for i in range(self.W)])
        names = pr.REPORT.fields
        extra = {"worker_steps": meta[:, names.index("steps")].astype(int).tolist(),
                 **{f"worker_{k}": meta[:, names.index(k)].astype(int).tolist() for k in STATS}}
        if self.push_sum:
            extra["push_sum_weights"] = meta[:, names.index("weight")].tolist()
        return avg, steps, elapsed, extra


def coordinate(ctx: Context) -> int:
    """Rank 0 of a gossip run: evaluator only; return the process exit code."""
    return GossipCoordinator(ctx).run()


def _average(msgs: dict[int, np.ndarray], push_sum: bool) -> tuple[int, np.ndarray]:
    """Total steps and the (push-sum weighted) average model of the workers' reports."""
    order = sorted(msgs)
    models = [pr.REPORT.vector(msgs[i]) for i in order]
    weights = [pr.REPORT.get(msgs[i], "weight") for i in order] if push_sum else None
    steps = int(sum(pr.REPORT.get(msgs[i], "steps") for i in order))
    return steps, mix.consensus(models, weights)
