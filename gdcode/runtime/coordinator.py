"""Rank 0's skeleton, shared by every mode: receives, waits, deadlines, stopping, the summary.

A mode's coordinator subclasses :class:`Coordinator` and supplies only what differs:

* :meth:`~Coordinator.prepare`: post its receives with :meth:`~Coordinator.listen` (each
  arrival calls a handler) and make any evaluation that must precede the clock;
* :meth:`~Coordinator.loop`: the training loop, waiting with :meth:`~Coordinator.wait_until`
  or :meth:`~Coordinator.idle` (both poll every receive and sleep with back-off between
  polls, never spinning, and raise :class:`~gdcode.runtime.transport.Timeout` at ``timeout``);
* :meth:`~Coordinator.result`: the final model, iterations, elapsed seconds and the mode's
  summary keys.

:meth:`~Coordinator.run` does the rest in the same order for every mode: the run directory
and ``metadata.json``, the barrier that keeps set-up off the clock, the loop, STOP to every
worker, the drain (every worker's DONE, with the receives still served, or an abort after a
grace period), ``model.npy`` and ``summary.json`` (status, final losses, each rank's CPU and
wall seconds). Evaluation goes through one :class:`Evaluator`.
"""

from __future__ import annotations

import math
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gdcode.errors import EXIT_DIVERGED, EXIT_FAILED, EXIT_TIMEOUT, EXIT_WRITE_FAILED
from gdcode.procfs import process_alive
from gdcode.results import RunDirError, RunWriter
from gdcode.runtime import phases, signals
from gdcode.runtime import protocol as pr
from gdcode.runtime import transport as tp
from gdcode.runtime.context import Context, metadata
from gdcode.runtime.roll import DEATH_CHECK_EVERY
from gdcode.runtime.traffic import Traffic, kind_of, summarize

if TYPE_CHECKING:
    from concurrent.futures import Future

#: seconds to wait for the workers once the run is over before aborting the job
SHUTDOWN_GRACE = 10.0
#: a worker that has not taken a message for this long when the run ends is not waited for
FROZEN_AFTER = 2.0


class WorkersFailed(Exception):
    """More workers died than the run tolerates."""


class Diverged(Exception):
    """The training loss is not finite, or has grown past :data:`DIVERGED_FACTOR` times its first value."""


#: a training loss this many times the first one (or not finite) stops the run as diverged
DIVERGED_FACTOR = 1e4


class Evaluator:
    """Rank 0's evaluation of models, written to ``metrics.jsonl`` in submission order.

    With ``threaded`` the losses are computed on a helper thread (the kernels release the
    GIL), so a parameter server keeps applying updates meanwhile; the models are copies
    taken by the caller.
    """

    def __init__(self, ctx: Context, writer: RunWriter, threaded: bool = True,
                 traffic: Traffic | None = None) -> None:
        self.ctx = ctx
        self.writer = writer
        self.traffic = traffic
        self.Xtr, self.ytr = ctx.problem.train_set()
        self.Xte, self.yte = ctx.test_set()
        if threaded:  # imported here: a worker never evaluates
            from concurrent.futures import ThreadPoolExecutor

            self.pool: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1)
        else:
            self.pool = None
        self.pending: deque[tuple[dict, Future | dict]] = deque()
        self.last: dict | None = None
        self.first_loss: float | None = None
        self.diverged: dict | None = None  # the first record whose loss diverged

    def metrics(self, params: np.ndarray) -> dict:
        """``train_loss`` (the objective with its L2 term) and the held-out metrics of ``params``."""
        model = self.ctx.model
        out = {"train_loss": model.objective(self.Xtr, self.ytr, params, self.ctx.l2)}
        out.update(model.test_metrics(self.Xte, self.yte, params))
        return out

    def submit(self, iteration: int, elapsed: float, params: np.ndarray, **extra: Any) -> None:
        """Evaluate ``params`` (absorbing ``iteration`` updates, taken at ``elapsed`` seconds).

        The line also gets the bytes rank 0 sent and received, by kind, since the previous line.
        """
        head = {"iteration": int(iteration), "elapsed": float(elapsed)}
        if self.traffic is not None:
            moved = self.traffic.since_mark()
            extra = {**extra, "bytes_sent": moved["sent"], "bytes_received": moved["received"]}
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
            if not isinstance(result, dict):  # a Future
                if not (wait or result.done()):
                    break
                result = result.result()
            self.pending.popleft()
            record = {"iteration": head["iteration"], "elapsed": head["elapsed"], **result,
                      **{k: v for k, v in head.items() if k not in ("iteration", "elapsed")}}
            self.writer.append_metrics(record)
            self.last = record
            written.append(record)
            loss = float(record["train_loss"])
            if self.first_loss is None:
                self.first_loss = loss
            elif self.diverged is None and not (np.isfinite(loss) and loss <= DIVERGED_FACTOR * abs(self.first_loss)):
                self.diverged = record
        return written

    def reached(self, target: float | None) -> bool:
        """Whether the last written record's training loss is at or below ``target``."""
        return target is not None and self.last is not None and self.last["train_loss"] <= target

    def close(self) -> None:
        self.flush(wait=True)
        if self.pool is not None:
            self.pool.shutdown()


class Outbox:
    """What rank 0 sends one worker, with a bounded number of messages the worker has not taken.

    Under the MPICH wheel, about 64 messages pending to a stopped rank (eager ones included,
    though their ``Isend`` has completed) stall rank 0's shared-memory sends to every rank. So
    a message goes out with a plain ``Isend`` (no extra latency) while the worker has not let
    :data:`UNACKNOWLEDGED` of them pass without a word (:meth:`ack` on each message from it);
    beyond that with ``Issend``, which completes only once the worker has taken the message,
    and with at most one in flight: a newer message waits here (a copy; only the newest is
    kept) and goes out when the worker takes the last one. A frozen worker thus holds at most
    ``UNACKNOWLEDGED + 1`` of rank 0's messages.
    """

    #: plain sends a worker may leave unanswered before sends become synchronous
    UNACKNOWLEDGED = 2

    def __init__(self, comm: Any, worker: int, tag: int, size: int) -> None:
        from mpi4py import MPI

        self.comm, self.worker, self.tag = comm, worker, int(tag)
        self.req: Any = MPI.REQUEST_NULL
        self.sent_at = 0.0
        self.unacknowledged = 0
        self._own = [np.empty(size), np.empty(size)]
        self._in_flight: np.ndarray | None = None  # the synchronous send not yet known taken
        self.pending: np.ndarray | None = None
        self.closed = False  # the worker is dead: nothing more is sent

    def ack(self) -> None:
        """The worker has sent something: it is taking its messages."""
        self.unacknowledged = 0

    def busy(self) -> bool:
        """Whether a synchronous send has not been taken yet."""
        return bool(self._in_flight is not None and not self.req.Test())

    def _send(self, buf: np.ndarray) -> Any:
        self.sent_at = time.monotonic()
        self.unacknowledged += 1
        if self.unacknowledged <= self.UNACKNOWLEDGED:
            self._in_flight = None
            self.req = self.comm.Isend(buf, dest=self.worker + 1, tag=self.tag)
        else:
            self._in_flight = buf
            self.req = self.comm.Issend(buf, dest=self.worker + 1, tag=self.tag)
        return self.req

    def offer(self, buf: np.ndarray) -> Any:
        """Send ``buf`` now (returning the request; ``buf`` must stay unchanged until it completes)
        or, while a synchronous send is in flight, keep a copy as the newest pending one (None)."""
        if self.closed:
            return None
        if not self.busy():
            return self._send(buf)
        spare = self._own[0] if self._in_flight is not self._own[0] else self._own[1]
        spare[:buf.size] = buf
        self.pending = spare[:buf.size]
        return None

    def progress(self) -> None:
        """Send the pending message once the worker has taken the last one."""
        if self.pending is not None and not self.busy():
            pending, self.pending = self.pending, None
            self._send(pending)

    def stalled(self, seconds: float) -> bool:
        """Whether a synchronous send has waited more than ``seconds`` for the worker to take it."""
        return self.busy() and time.monotonic() - self.sent_at > seconds


@dataclass
class _Stream:
    """A posted receive: from which worker, on which tag, into which buffer, handled how."""

    worker: int
    tag: int
    buf: np.ndarray
    handler: Callable[[int, np.ndarray], bool | None]
    active: bool = True
    counted: bool = True  # arrivals count towards the messages a worker's DONE says it sent


class Coordinator:
    """Rank 0 of a run: the skeleton every mode's coordinator fills in.

    Attributes
    ----------
    ctx : Context
    options : gdcode.options.RunOptions
    comm : mpi4py.MPI.Comm
    W : int
        The number of workers.
    writer : gdcode.results.RunWriter
        The run directory (open from :meth:`prepare` on).
    evaluator : Evaluator
    status : str
        ``ok`` until the loop times out.
    done : list of bool
        Which workers have sent DONE.
    usage : numpy.ndarray
        Each worker's (CPU seconds, wall seconds) of its loop, from its DONE, shape ``(W, 2)``.
    rss : numpy.ndarray
        Each worker's peak resident memory in MB, from its DONE.
    worker_steps : numpy.ndarray
        Each worker's steps, from its DONE.
    """

    #: the tag on which this mode's workers receive STOP
    stop_tag: int = pr.Tag.CONTROL
    #: evaluate on a helper thread (the asynchronous modes) or in the loop (coded mode)
    threaded_evaluation: bool = True

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.options = ctx.options
        self.comm = ctx.comm
        self.W = ctx.options.workers
        self.status = "ok"
        self.done = [False] * self.W
        self.usage = np.zeros((self.W, 2))
        self.rss = np.zeros(self.W)
        self.worker_steps = np.zeros(self.W, dtype=np.int64)
        self.models_not_sent = 0
        self.sent = np.full(self.W, -1, dtype=np.int64)  # from each DONE: messages the worker sent rank 0
        self.received = np.zeros(self.W, dtype=np.int64)
        self.last_heard = np.zeros(self.W)  # monotonic time of each worker's last message
        self.longest_gap = np.zeros(self.W)  # the longest silence seen from each worker
        self.backoff = tp.Backoff()
        self.deadline: float | None = None
        self._streams: list[_Stream] = []
        self._requests: list[Any] = []
        self._stopped = [False] * self.W
        self._stop_requests: list[Any] = []
        self._stop_msg = pr.pack_header(pr.STOP.new(), pr.Kind.STOP, 0)
        self._cpu0 = self._wall0 = 0.0
        self.unresponsive: list[int] = []  # workers (1-based) that did not stop within the grace period
        self.dead: dict[int, float] = {}  # workers (1-based) found dead, and when (seconds of the run)
        self.outboxes: list[Outbox] = []
        self._boxes_of: dict[int, list[Outbox]] = {}
        self._statuses: list[Any] = []
        self.traffic: Traffic = getattr(ctx.comm, "traffic", None) or Traffic(ctx.comm.Get_size())
        self.error: str | None = None
        self.local_pids: dict[int, int] = {}  # worker (0-based) -> pid, for workers on rank 0's host
        self._next_death_check = 0.0
        self._suspects: set[int] = set()

    # --- what a mode supplies -------------------------------------------------------------

    def metadata_extra(self) -> dict:
        """Keys the mode adds to ``metadata.json``."""
        return {"delay": self.ctx.delay.describe(), "mode": self.options.mode}

    def open_run(self) -> None:
        """Open the run directory and write ``metadata.json`` (coded mode also resumes here)."""
        self.writer = RunWriter(self.ctx.run_dir)
        meta = metadata(self.ctx, self.metadata_extra())
        self.note_ranks(meta)
        self.writer.write_metadata(meta)

    def note_ranks(self, meta: dict) -> None:
        """Keep the pids of the workers on this host (from ``metadata.json``'s hosts and pids)."""
        here = socket.gethostname()
        self.local_pids = {int(r) - 1: int(pid) for r, pid in meta["pids"].items()
                           if int(r) > 0 and meta["hosts"].get(r) == here}

    def prepare(self) -> None:
        """Post the mode's receives and evaluate what precedes the clock (nothing by default)."""

    def loop(self) -> None:
        """The training loop."""
        raise NotImplementedError

    def on_done(self, worker: int) -> None:
        """A worker has finished its loop (default: nothing; e.g. stop it)."""

    def on_death(self, worker: int) -> None:
        """A worker has died (``--tolerate-failures``): the mode stops counting on it.

        Raises
        ------
        WorkersFailed
            When the run cannot go on without the dead workers (the default when all are dead).
        """
        if len(self.dead) == self.W:
            raise WorkersFailed("every worker has died")

    def drain_grace(self) -> float | None:
        """Seconds the workers get to stop after STOP (None: no limit)."""
        return SHUTDOWN_GRACE

    def after_drain(self) -> None:
        """Work between the drain and the summary (e.g. receive records)."""

    def result(self) -> tuple[np.ndarray, int, float, dict]:
        """The final model, iterations, elapsed seconds and the mode's summary keys."""
        raise NotImplementedError

    # --- receives and waits ---------------------------------------------------------------

    def listen(self, worker: int, tag: int, buf: np.ndarray,
               handler: Callable[[int, np.ndarray], bool | None], counted: bool = True) -> int:
        """Post a receive from ``worker`` (0-based) on ``tag`` into ``buf``; return its stream id.

        Each arrival calls ``handler(worker, buf)``; the receive is posted again unless the
        handler returns False (it may then call :meth:`repost` later). Arrivals on a
        ``counted`` stream count towards the messages the worker's DONE says it sent.
        """
        self._streams.append(_Stream(worker, int(tag), buf, handler, counted=counted))
        self._requests.append(self._irecv(len(self._streams) - 1))
        return len(self._streams) - 1

    def _irecv(self, stream: int) -> Any:
        s = self._streams[stream]
        return self.comm.Irecv(s.buf, source=s.worker + 1, tag=s.tag)

    def outbox(self, worker: int, tag: int, size: int) -> Outbox:
        """An :class:`Outbox` to ``worker`` on ``tag`` for messages of up to ``size`` entries; any
        message from the worker acknowledges it."""
        box = Outbox(self.comm, worker, tag, size)
        self.outboxes.append(box)
        self._boxes_of.setdefault(worker, []).append(box)
        return box

    def repost(self, stream: int) -> None:
        """Post stream ``stream``'s receive again."""
        self._requests[stream] = self._irecv(stream)
        self._streams[stream].active = True

    def poll(self) -> int:
        """Handle every message that has come (and every DONE); how many came (0: none)."""
        from mpi4py import MPI

        for box in self.outboxes:
            if box.pending is not None:
                box.progress()
        if self.options.tolerate_failures:
            self._watch_deaths()
        statuses = self._statuses
        if len(statuses) < len(self._requests):
            statuses.extend(MPI.Status() for _ in range(len(self._requests) - len(statuses)))
        idx = MPI.Request.Testsome(self._requests, statuses)
        if not idx:
            return 0
        now = time.monotonic()
        for j, i in enumerate(idx):
            s = self._streams[i]
            s.active = False
            self.traffic.count_received(kind_of(s.buf, s.tag), statuses[j].Get_count(MPI.DOUBLE) * 8)
            if s.counted:
                self.received[s.worker] += 1
            gap = now - self.last_heard[s.worker]
            if gap > self.longest_gap[s.worker]:
                self.longest_gap[s.worker] = gap
            self.last_heard[s.worker] = now
            for box in self._boxes_of.get(s.worker, ()):
                box.ack()
            if s.handler(s.worker, s.buf) is not False:
                self.repost(i)
            elif not s.active:
                self._requests[i] = MPI.REQUEST_NULL
        return len(idx)

    def _watch_deaths(self) -> None:
        """Find workers of this host whose process has gone without finishing (at most every 50 ms)."""
        now = time.monotonic()
        if now < self._next_death_check:
            return
        self._next_death_check = now + DEATH_CHECK_EVERY
        for i, pid in self.local_pids.items():
            if i + 1 in self.dead or self.finished(i) or process_alive(pid):
                self._suspects.discard(i)
            elif i in self._suspects:  # gone at two checks in a row, and no DONE came in between
                self.declare_dead(i)
            else:
                self._suspects.add(i)

    def declare_dead(self, worker: int) -> None:
        """Stop counting on ``worker`` (0-based): nothing more is sent to it or waited for."""
        from mpi4py import MPI

        self.dead[worker + 1] = time.perf_counter() - self._wall0 if self._wall0 else 0.0
        for box in self.outboxes:
            if box.worker == worker:
                box.closed, box.pending = True, None
        for i, s in enumerate(self._streams):
            if s.worker == worker and self._requests[i] != MPI.REQUEST_NULL:
                self._requests[i].Cancel()  # a receive from a dead rank cancels at once
                self._requests[i].Wait()
                self._requests[i] = MPI.REQUEST_NULL
        print(f"gdcode run: worker {worker + 1} died; going on without it (--tolerate-failures)",
              file=sys.stderr, flush=True)
        self.on_death(worker)

    def check_deadline(self) -> None:
        """Raise :class:`~gdcode.runtime.transport.Timeout` once ``timeout`` has passed, and
        :class:`~gdcode.runtime.signals.Terminated` once SIGTERM or SIGHUP has come."""
        signals.check()
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise tp.Timeout
        if self.evaluator.diverged is not None:
            raise Diverged

    def wait_until(self, ready: Callable[[], bool], wake_in: Callable[[], float] | None = None) -> None:
        """Poll until ``ready()``, sleeping with back-off while nothing comes (each sleep at most
        ``wake_in()`` seconds, when given: a deadline that no message marks).

        Raises
        ------
        Timeout
            At the run's deadline.
        """
        self.backoff.reset()
        while not ready():
            came = self.poll()
            if not came:
                self.check_deadline()
                self.backoff.sleep(math.inf if wake_in is None else wake_in())
                continue
            self.backoff.came(came)  # e.g. replies of several: sleep until the next one rings
            if self.deadline is not None:
                self.check_deadline()

    def idle(self) -> None:
        """One step of an event loop: poll; sleep with back-off when nothing came."""
        came = self.poll()
        self.check_deadline()
        if came:
            self.backoff.reset()
        else:
            self.backoff.sleep()

    # --- stopping -------------------------------------------------------------------------

    def stop(self, worker: int) -> None:
        """Send STOP to ``worker`` (once); a message still waiting in its outbox is dropped."""
        for box in self.outboxes:
            if box.worker == worker:
                box.pending = None
        if worker + 1 in self.dead:
            self._stopped[worker] = True
        if not self._stopped[worker]:
            self._stopped[worker] = True
            self._stop_requests.append(self.comm.Isend(self._stop_msg, dest=worker + 1, tag=self.stop_tag))

    def stop_workers(self) -> None:
        """Send STOP to every worker not yet stopped (woken together once all are sent)."""
        with self.comm.rings_together():
            for i in range(self.W):
                self.stop(i)

    def finished(self, worker: int) -> bool:
        """Whether ``worker`` has sent DONE and rank 0 has every message it sent before."""
        return self.done[worker] and self.received[worker] >= self.sent[worker]

    def all_done(self) -> bool:
        """Whether every worker rank 0 still waits for has :meth:`finished`."""
        return all(self.finished(i) for i in range(self.W)
                   if i + 1 not in self.unresponsive and i + 1 not in self.dead)

    def settled(self) -> bool:
        """Whether the asynchronous loop may end: every worker has finished, except those that are
        silent (frozen, or dead) while the others have finished.

        A worker is silent when nothing has come from it for more than :data:`FROZEN_AFTER`
        seconds and three times the longest silence it kept before; it is then listed in
        :attr:`unresponsive` and not waited for.
        """
        waiting = [i for i in range(self.W) if not self.finished(i) and i + 1 not in self.unresponsive
                   and i + 1 not in self.dead]
        if not waiting:
            return True
        if len(waiting) == self.W:
            return False
        now = time.monotonic()
        limits = np.maximum(FROZEN_AFTER, 3.0 * self.longest_gap)
        if all(now - self.last_heard[i] > limits[i] for i in waiting):
            self.unresponsive = sorted(set(self.unresponsive) | {i + 1 for i in waiting})
            return True
        return False

    def _on_done(self, worker: int, buf: np.ndarray) -> bool:
        self.done[worker] = True
        h = pr.header(buf)
        self.worker_steps[worker] = h.iteration
        self.models_not_sent += h.part
        self.usage[worker] = (pr.DONE.get(buf, "cpu_seconds"), pr.DONE.get(buf, "wall_seconds"))
        self.sent[worker] = int(pr.DONE.get(buf, "sent"))
        self.rss[worker] = pr.DONE.get(buf, "max_rss_mb")
        self.on_done(worker)
        return False

    def drain(self) -> bool:
        """STOP every worker, then serve the receives until every worker has :meth:`finished`.

        Returns False when some did not within :meth:`drain_grace` seconds (they are listed in
        :attr:`unresponsive`; the job is aborted once the summary is written).
        """
        from mpi4py import MPI

        frozen = {box.worker + 1 for box in self.outboxes if box.stalled(FROZEN_AFTER)}
        self.unresponsive = sorted(set(self.unresponsive) | frozen)
        self.stop_workers()
        grace = self.drain_grace()
        limit = None if grace is None else time.monotonic() + grace
        self.backoff.reset()
        while not self.all_done():
            if self.poll():
                continue
            if limit is not None and time.monotonic() > limit:
                self.unresponsive = sorted(set(self.unresponsive)
                                           | {i + 1 for i in range(self.W) if not self.finished(i)})
                return False
            self.backoff.sleep()
        if self.unresponsive:
            return False
        try:
            tp.poll_until(lambda: MPI.Request.Testall(self._stop_requests), time.monotonic() + SHUTDOWN_GRACE)
        except tp.Timeout:
            return False
        return True

    def close_receives(self) -> None:
        """Cancel every receive still posted."""
        from mpi4py import MPI

        for i, req in enumerate(self._requests):
            if req != MPI.REQUEST_NULL:
                req.Cancel()
                req.Wait()
                self._requests[i] = MPI.REQUEST_NULL

    def abort(self, message: str, code: int) -> None:
        """End the whole job at once with ``message`` and exit code ``code``."""
        if getattr(self, "writer", None) is not None:
            self.writer.close()
        print(f"gdcode run: error: {message}", file=sys.stderr, flush=True)
        time.sleep(0.3)  # hydra forwards the line asynchronously; an abort at once can lose it
        self.comm.Abort(code)

    # --- the run --------------------------------------------------------------------------

    def run(self) -> int:
        """Run rank 0 from the run directory to ``summary.json``; return the exit code.

        A file of the run directory that cannot be written (a full disk) ends the job at once
        with exit code 4 and one line; what was written before stays readable.
        """
        try:
            return self._run()
        except RunDirError as exc:
            self.abort(f"{exc.strerror}; the run stopped (free space, then --resume from its last checkpoint "
                       "if it has one)", EXIT_WRITE_FAILED)
            return EXIT_WRITE_FAILED

    def _run(self) -> int:
        self.unresponsive = []
        self.open_run()
        self.evaluator = Evaluator(self.ctx, self.writer, threaded=self.threaded_evaluation, traffic=self.traffic)
        for i in range(self.W):
            self.listen(i, pr.Tag.DONE, pr.DONE.new(), self._on_done, counted=False)
        self.prepare()
        # every worker has its rows: set-up stays off the clock (a worker that dies first ends the job)
        tp.barrier(self.comm, watch=self.ctx.roll.check if self.ctx.roll is not None else None)
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()
        self.last_heard[:] = time.monotonic()
        if self.options.timeout is not None:
            self.deadline = time.monotonic() + self.options.timeout
        self.signum: int | None = None
        try:
            self.loop()
        except tp.Timeout:
            self.status = "timeout"
        except signals.Terminated as exc:
            self.status, self.signum = "terminated", exc.signum
        except WorkersFailed as exc:
            self.status, self.error = "failed", str(exc)
        except Diverged:
            bad = self.evaluator.diverged or {}
            self.status = "diverged"
            self.error = (f"the training loss diverged ({bad.get('train_loss')} at iteration {bad.get('iteration')}, "
                          f"from {self.evaluator.first_loss:.6g}); try a smaller --lr (now {self.options.lr:g})")
        wall = time.perf_counter() - self._wall0
        clean = self.drain()
        if clean:
            self.close_receives()
            self.after_drain()
        phases.mark("loop_end")
        reports = self._traffic_reports() if clean else {}
        n_traffic = self.traffic.report_size()
        extra_phases = {r: rep[n_traffic:] for r, rep in reports.items()}
        reports = {r: rep[:n_traffic] for r, rep in reports.items()}
        extra_phases[0] = phases.vector()
        params, iterations, elapsed, extra = self.result()
        extra.update({"worker_cpu_seconds": self.usage[:, 0].tolist(),
                      "worker_wall_seconds": self.usage[:, 1].tolist(),
                      "coordinator_cpu_seconds": time.process_time() - self._cpu0,
                      "coordinator_wall_seconds": wall,
                      "worker_max_rss_mb": self.rss.round(1).tolist(),
                      "coordinator_max_rss_mb": round(phases.max_rss_mb(), 1),
                      "waits": "doorbell" if tp.doorbell() is not None else "polling"})
        reports[0] = self.traffic.report()
        extra["bytes"] = summarize(reports, self.W + 1)
        extra["phases"] = phases.table(extra_phases)
        if self.unresponsive:
            extra["unresponsive_workers"] = self.unresponsive
        if self.options.tolerate_failures:
            extra["dead_workers"] = sorted(self.dead)
        if self.error:
            extra["error"] = self.error
        code = self.finish(params, iterations, elapsed, extra)
        if not clean:
            self.abort(f"worker(s) {', '.join(map(str, self.unresponsive))} did not stop (frozen, or slower than "
                       f"{SHUTDOWN_GRACE:g} s); summary.json and model.npy are written; ending the job", code or 0)
        return code

    def _traffic_reports(self) -> dict[int, np.ndarray]:
        """Every live worker's table of bytes sent (its last message; a worker that is gone is skipped)."""
        from mpi4py import MPI

        size = self.traffic.report_size() + len(phases.PHASES)
        ranks = [i + 1 for i in range(self.W) if i + 1 not in self.dead]
        bufs = {r: np.empty(size) for r in ranks}
        reqs = {r: self.comm.Irecv(bufs[r], source=r, tag=pr.Tag.TRAFFIC) for r in ranks}
        try:
            tp.poll_until(lambda: MPI.Request.Testall(list(reqs.values())), time.monotonic() + SHUTDOWN_GRACE)
        except tp.Timeout:
            pass
        out = {}
        for r, req in reqs.items():
            if req.Test():
                out[r] = bufs[r]
            else:
                req.Cancel()
                req.Wait()
        return out

    def finish(self, params: np.ndarray, iterations: int, elapsed: float, extra: dict) -> int:
        """Write ``model.npy`` and ``summary.json``; return the exit code (3 after ``--timeout``)."""
        self.evaluator.close()
        self.writer.save_model(params)
        summary: dict[str, Any] = {"status": self.status, "iterations": int(iterations), "elapsed": float(elapsed)}
        summary.update(self.evaluator.metrics(params))
        if self.options.target_loss is not None:
            summary["target_loss_reached"] = bool(summary["train_loss"] <= self.options.target_loss)
        summary.update(extra)
        self.writer.write_summary(summary)
        self.writer.close()
        if self.status == "timeout":
            print(f"gdcode run: error: --timeout {self.options.timeout:g} s reached after {iterations} iterations "
                  f"(mode {self.options.mode}); the run directory {self.ctx.run_dir} has every finished one",
                  file=sys.stderr)
            return EXIT_TIMEOUT
        if self.status == "failed":
            print(f"gdcode run: error: {self.error}; the run stopped after {iterations} iterations "
                  f"(summary.json status failed)", file=sys.stderr)
            return EXIT_FAILED
        if self.status == "diverged":
            print(f"gdcode run: error: {self.error}", file=sys.stderr)
            return EXIT_DIVERGED
        if self.status == "terminated" and self.signum is not None:
            print(f"gdcode run: stopped by {signals.Terminated(self.signum)} after {iterations} iterations; "
                  f"the run directory {self.ctx.run_dir} has every finished one", file=sys.stderr)
            return signals.exit_code(self.signum)
        return 0
