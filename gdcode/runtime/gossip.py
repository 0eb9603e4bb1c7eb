"""Gossip mode: decentralised SGD with pairwise, elastic or push-sum averaging.

There is no global collective inside the training loop. Each worker (rank ``i + 1``) runs
``--iterations`` SGD steps on minibatches of its partition with its own optimiser, and
between blocks of rows, in the slices of its injected pause and while it waits, it runs a
*polling responder*: an ``Irecv`` on :data:`~gdcode.runtime.asynccommon.TAG_ASK` that it
tests, answering what came (DESIGN section 6: one-sided MPI would not progress while the
target computes). Requests that change the model (elastic exchanges, push-sum messages)
are applied as they are answered, also while a step computes: the gradient is taken at a
copy of the model made when the step began, and the step applies it to the model as it is
then (as in Hogwild, a step may land on a model that moved meanwhile). A worker that pauses
(a straggler) thus keeps mixing at the pace of its peers' requests.

Mixing (:mod:`gdcode.gossip` has the rules):

* ``pairwise``: before a step, with probability ``--gossip-prob`` (or every
  ``--gossip-period`` steps), ask a peer for its model, clock and last loss; the answer
  travels while the step computes; after the step, wait at most ``--peer-timeout`` seconds
  for it and mix ``x <- f x_peer + (1 - f) x``. A late answer is discarded. The peer comes
  from :class:`gdcode.gossip.PeerSelector` (``--peer-selection``).
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

import numpy as np

from gdcode import gossip as mix
from gdcode import optim
from gdcode.results import RunWriter
from gdcode.runtime import asynccommon as ac
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context, gather_hosts_on_workers, metadata

#: per-worker counts reported in summary.json
STATS = ("gossips", "mixed", "timeouts", "late", "answered")
#: payload of messages to rank 0 before the model: steps, weight, CPU s, wall s, then STATS
ROOT_META = 4 + len(STATS)


@dataclass
class _Outgoing:
    """A request this worker sent and whose answer it awaits."""

    kind: str  # "pull" or "elastic"
    buf: np.ndarray
    req: object
    sent_at: float
    x_sent: np.ndarray | None = None


class Worker:
    """One gossip worker."""

    def __init__(self, ctx: Context) -> None:
        from mpi4py import MPI

        self.ctx, self.cfg, self.comm = ctx, ctx.cfg, ctx.comm
        cfg = self.cfg
        self.me, self.d, self.size = ctx.worker, ctx.n_params, ctx.comm.Get_size()
        self.rows = ac.LocalRows(ctx, cfg.batch_size)
        schedule = optim.Schedule(cfg.lr, cfg.lr_schedule, cfg.lr_step_every, cfg.lr_decay)
        kwargs = optim.rule_options(cfg.update, cfg.as_dict())
        self.opt = optim.make(cfg.update, ctx.w0, schedule, **kwargs)
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
        self.wanted: int | None = None
        self.out: dict[int, _Outgoing] = {}
        self.sent_asks = np.zeros(self.size, dtype=np.int64)
        self.got_asks = np.zeros(self.size, dtype=np.int64)
        self.ask_buf = np.empty(tp.HEADER + 1 + self.d)
        self.ask_status = MPI.Status()
        self.ask_req = self._post_ask()
        self.sends = tp.SendPool(tp.HEADER + ROOT_META + self.d)
        self.records: list[tuple[int, float]] = []

    @property
    def x(self) -> np.ndarray:
        return self.opt.params

    def _post_ask(self):
        from mpi4py import MPI

        return self.comm.Irecv(self.ask_buf, source=MPI.ANY_SOURCE, tag=ac.TAG_ASK)

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
                if r.kind == "elastic":
                    self._elastic(r.x_sent, r.buf[tp.HEADER + 2:])
                else:
                    self.stats["late"] += 1
        return self.stop

    def _answer(self, src: int) -> None:
        kind, tag, _, _ = tp.header(self.ask_buf)
        if kind == tp.STOP:
            self.stop = True
            return
        d = self.d
        buf = self.sends.get()
        if kind == ac.ASK_EVAL:
            msg = self._root_message(buf, ac.ANSWER, tag)
            self.sends.sent(buf, [self.comm.Isend(msg, dest=0, tag=ac.TAG_ROOT)])
            return
        self.stats["answered"] += 1
        if kind == ac.ASK_PUSH:
            self.sends.sent(buf, [])
            self.push.x = self.x
            self.push.receive(self.ask_buf[tp.HEADER + 1:tp.HEADER + 1 + d], float(self.ask_buf[tp.HEADER]))
            self.stats["mixed"] += 1
            return
        tp.pack(buf, ac.ANSWER, tag)
        buf[tp.HEADER], buf[tp.HEADER + 1] = self.clock, self.loss
        buf[tp.HEADER + 2:tp.HEADER + 2 + d] = self.x
        msg = buf[:tp.HEADER + 2 + d]
        self.sends.sent(buf, [self.comm.Isend(msg, dest=src, tag=ac.TAG_ANSWER)])
        if kind == ac.ASK_ELASTIC:
            self._elastic(msg[tp.HEADER + 2:], self.ask_buf[tp.HEADER + 1:tp.HEADER + 1 + d])

    def _root_message(self, buf: np.ndarray, kind: float, tag: int, usage=(0.0, 0.0)) -> np.ndarray:
        tp.pack(buf, kind, tag)
        meta = [self.steps, self.push.weight, usage[0], usage[1], *(self.stats[k] for k in STATS)]
        buf[tp.HEADER:tp.HEADER + ROOT_META] = meta
        buf[tp.HEADER + ROOT_META:] = self.x
        return buf

    def _elastic(self, x_sent: np.ndarray, x_peer: np.ndarray) -> None:
        """One elastic exchange's term, at once: each is a contraction towards the peer, so many
        exchanges in a row (a slow worker answering fast ones) never overshoot."""
        mix.elastic_apply(self.x, x_sent, x_peer, self.cfg.alpha)
        self.stats["mixed"] += 1

    # --- requests to peers ---------------------------------------------------------------

    def _ask(self, j: int, kind: float, t: int, weight: float = 0.0, x: np.ndarray | None = None) -> None:
        buf = self.sends.get()
        tp.pack(buf, kind, t)
        n = tp.HEADER
        if x is not None:
            buf[tp.HEADER] = weight
            buf[tp.HEADER + 1:tp.HEADER + 1 + self.d] = x
            n = tp.HEADER + 1 + self.d
        self.sends.sent(buf, [self.comm.Isend(buf[:n], dest=j + 1, tag=ac.TAG_ASK)])
        self.sent_asks[j + 1] += 1

    def _request(self, j: int, kind: str, t: int) -> bool:
        """Send a pull or elastic request to peer ``j`` unless one is still unanswered."""
        if j in self.out:
            return False
        x_sent = self.x.copy() if kind == "elastic" else None
        self._ask(j, ac.ASK_ELASTIC if kind == "elastic" else ac.ASK_PULL, t, x=x_sent)
        abuf = np.empty(tp.HEADER + 2 + self.d)
        req = self.comm.Irecv(abuf, source=j + 1, tag=ac.TAG_ANSWER)
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
            self.push.x = self.x
            x_half, w_half = self.push.send()
            self._ask(self.selector.pick(), ac.ASK_PUSH, t, weight=w_half, x=x_half)
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
        clock_peer, loss_peer = r.buf[tp.HEADER], r.buf[tp.HEADER + 1]
        f = mix.interpolation_factor(self.cfg.interpolation, self.cfg.alpha, self.clock, clock_peer,
                                     self.loss, loss_peer)
        mix.pairwise_mix(self.x, r.buf[tp.HEADER + 2:], f)

    def run(self) -> int:
        from mpi4py import MPI

        comm = self.comm
        grad = np.empty(self.d)
        tp.barrier(comm)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for t in range(1, self.cfg.iterations + 1):
            if self.stop or not self.step(t, grad):
                break
            self.records.append((t, time.perf_counter() - t0))
        usage = ac.usage_since(cpu0, t0)
        buf = self.sends.get()
        tp.pack(buf, tp.DONE, self.steps)
        self.sends.sent(buf, [comm.Isend(buf[:tp.HEADER], dest=0, tag=ac.TAG_ROOT)])
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
        msg = self._root_message(buf, ac.FINAL, self.steps, usage)
        self.sends.sent(buf, [comm.Isend(msg, dest=0, tag=ac.TAG_ROOT)])
        req, _keep = ac.send_records(comm, np.array(self.records, dtype=float).reshape(-1, 2))
        tp.poll_until(req.Test)
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

    return dense_gradient(ctx.model, Xb, yb, point, ctx.l2, grad, ac.BLOCK_ROWS, poll)


def work(ctx: Context) -> int:
    """Run one gossip worker; return the process exit code."""
    gather_hosts_on_workers(ctx)
    return Worker(ctx).run()


# ----------------------------------------------------------------------------- rank 0


def coordinate(ctx: Context) -> int:
    """Rank 0 of a gossip run: evaluator only; return the process exit code."""
    from mpi4py import MPI

    cfg, comm, W, d = ctx.cfg, ctx.comm, ctx.cfg.workers, ctx.n_params
    writer = RunWriter(ctx.run_dir)
    writer.write_metadata(metadata(ctx, {"delay": ctx.delay.describe(), "mode": "gossip",
                                         "mixing": cfg.mixing}))
    evaluator = ac.Evaluator(ctx, writer, threaded=True)
    evaluator.submit(0, 0.0, ctx.w0.copy())
    evaluator.flush(wait=True)  # done before the clock starts
    push_sum = cfg.mixing == "push-sum"
    size = tp.HEADER + ROOT_META + d
    bufs = [np.empty(size) for _ in range(W)]
    reqs = [comm.Irecv(bufs[i], source=i + 1, tag=ac.TAG_ROOT) for i in range(W)]
    asks = tp.SendPool(tp.HEADER)
    sent_asks = np.zeros(W + 1, dtype=np.int64)
    done = [False] * W
    final: dict[int, np.ndarray] = {}
    answers: dict[int, np.ndarray] = {}
    round_no, round_at, open_round = 0, 0.0, False
    last_avg = (0, ctx.w0)
    backoff = tp.Backoff()
    tp.barrier(comm)
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = None if cfg.timeout is None else time.monotonic() + cfg.timeout
    status, next_eval, stopping, counts, grace = "ok", cfg.eval_every, False, None, None

    def ask_all(kind: float, tag: int) -> None:
        for i in range(W):
            buf = asks.get()
            tp.pack(buf, kind, tag)
            asks.sent(buf, [comm.Isend(buf, dest=i + 1, tag=ac.TAG_ASK)])
            sent_asks[i + 1] += 1

    while len(final) < W or (counts is not None and not counts.Test()):
        idx = MPI.Request.Testsome(reqs)
        now = time.perf_counter() - t0
        for s in idx or ():
            kind, tag, _, _ = tp.header(bufs[s])
            if kind == tp.DONE:
                done[s] = True
            elif kind == ac.ANSWER and open_round and tag == round_no:
                answers[s] = bufs[s].copy()
            elif kind == ac.FINAL:
                final[s] = bufs[s].copy()
                continue  # nothing more comes from this worker on TAG_ROOT
            reqs[s] = comm.Irecv(bufs[s], source=s + 1, tag=ac.TAG_ROOT)
        if open_round and len(answers) == W:
            steps, avg = _average(answers, push_sum)
            evaluator.submit(steps, round_at, avg)
            last_avg = (steps, avg)
            answers, open_round = {}, False
        evaluator.flush()
        if not stopping:
            reason = None
            if all(done):
                reason = "done"
            elif evaluator.reached(cfg.target_loss):
                reason = "target"
            elif deadline is not None and time.monotonic() > deadline:
                reason, status = "timeout", "timeout"
            if reason:
                stopping = True
                ask_all(tp.STOP, 0)
                count_bufs = (sent_asks.copy(), np.zeros(W + 1, np.int64))  # alive until counts completes
                counts = comm.Ialltoall([count_bufs[0], MPI.INT64_T], [count_bufs[1], MPI.INT64_T])
                grace = time.monotonic() + ac.SHUTDOWN_GRACE
            elif now >= next_eval and not open_round and not evaluator.busy():
                round_no += 1
                round_at, open_round = now, True
                ask_all(ac.ASK_EVAL, round_no)
                next_eval = now + cfg.eval_every
        if grace is not None and time.monotonic() > grace:
            ac.abort(comm, writer, "gossip workers did not finish")
        if idx:
            backoff.reset()
        else:
            backoff.sleep()
    wall = time.perf_counter() - t0
    asks.wait_all(time.monotonic() + ac.SHUTDOWN_GRACE)
    records = [ac.recv_records(comm, i + 1, 2, time.monotonic() + ac.SHUTDOWN_GRACE) for i in range(W)]
    rows = [(int(t), i + 1, float(at), "used") for i, rec in enumerate(records) for t, at in rec]
    writer.append_workers(sorted(rows, key=lambda r: (r[2], r[1])))
    steps, avg = _average(final, push_sum)
    evaluator.flush(wait=True)
    finished = max((float(rec[-1, 1]) for rec in records if rec.size), default=0.0)
    elapsed = max(finished, evaluator.last["elapsed"] if evaluator.last else 0.0)
    if steps != last_avg[0] or not np.array_equal(avg, last_avg[1]):  # else the last line is the final model
        evaluator.submit(steps, elapsed, avg)
    meta = np.array([final[i][tp.HEADER:tp.HEADER + ROOT_META] for i in range(W)])
    extra = {"worker_steps": meta[:, 0].astype(int).tolist(),
             **{f"worker_{k}": meta[:, 4 + n].astype(int).tolist() for n, k in enumerate(STATS)},
             "worker_cpu_seconds": meta[:, 2].tolist(), "worker_wall_seconds": meta[:, 3].tolist(),
             "coordinator_cpu_seconds": time.process_time() - cpu0, "coordinator_wall_seconds": wall}
    if push_sum:
        extra["push_sum_weights"] = meta[:, 1].tolist()
    return ac.write_summary(ctx, writer, evaluator, status, avg, steps, elapsed, extra)


def _average(msgs: dict[int, np.ndarray], push_sum: bool) -> tuple[int, np.ndarray]:
    """Total steps and the (push-sum weighted) average model of the workers' messages."""
    order = sorted(msgs)
    models = [msgs[i][tp.HEADER + ROOT_META:] for i in order]
    weights = [float(msgs[i][tp.HEADER + 1]) for i in order] if push_sum else None
    steps = int(sum(msgs[i][tp.HEADER] for i in order))
    return steps, mix.consensus(models, weights)
