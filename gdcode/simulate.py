"""Discrete-event simulation of a code under a delay model (no MPI).

Each simulated iteration starts with every worker receiving the model at time 0. Worker ``w``
then computes for ``C_w`` seconds (its compute model: zero unless given, else seconds per
full dataset times its load, or a measured trace), serves its pause ``P_w`` from the delay
model (scaled by its load with ``--delay-scale-with-load``), and sends; each message takes a
further ``comm`` seconds to arrive. A multi-message code splits compute and pause between its
messages in proportion to their partitions, exactly as the engine's worker loop does
(:func:`message_arrivals`). The iteration ends when the code first decodes
(:func:`decode_time`): what the MPI coordinator does, replayed on paper.

Decode times come from the code itself, :meth:`GradientCode.decode_times
<gdcode.codes.GradientCode.decode_times>`: a vectorised rule where the code has one (an order
statistic, a coverage time, or both), else its own incremental ``decode`` per draw; the tests
check each rule against ``decode``. Pauses come from the delay model's distribution drawn in
bulk by the model (:meth:`DelayModel.sample_bulk <gdcode.delays.DelayModel.sample_bulk>`,
fast), or, with ``replay=True``, from the very streams a ``gdcode run --seed N`` meets: draw
``d`` is then iteration ``first_iteration + d``, so a simulation can replay a real run's
delays exactly.

:func:`train_replay` replays the optimiser serially with each simulated iteration's decoded
gradient, for the time to a target loss and, for approximate codes, the gradient error.
:func:`fit_run` fits delay models to a run's measured reply times, :func:`fit_trace` to a
trace file's times: the i.i.d. models, the ``markov`` model (:mod:`gdcode.markovfit`) and the
correlations in time and between workers (:mod:`gdcode.traces`), with a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gdcode import codes, delays, markovfit, traces
from gdcode.cluster.emulate import parse_rate
from gdcode.codes.base import decode_time, harmonic
from gdcode.errors import ConfigError
from gdcode.waiting import AdaptiveDeadline, WaitRule

__all__ = ["QUANTILES", "ComputeModel", "ReplayResult", "Sample", "Simulation", "all_arrivals", "closed_form_mean",
           "decode_time", "decode_times", "fit_run", "fit_sample", "fit_trace", "harmonic", "has_vectorised_rule",
           "message_arrivals", "message_shares", "parse_compute", "persistent_stragglers", "run_sample",
           "sample_pauses", "simulate", "spec_of", "trace_sample", "train_replay"]

#: quantiles reported for the iteration time
QUANTILES = (0.5, 0.9, 0.95, 0.99)


# ----------------------------------------------------------------------------- decode times


def message_arrivals(compute: np.ndarray, pause: np.ndarray, share: Sequence[float] | None = None) -> np.ndarray:
    """Arrival times of each worker's messages, sent in order, message ``k`` after its share of
    compute and pause (the engine's worker loop): shape ``(n_workers, n_messages)``."""
    compute = np.asarray(compute, dtype=float)
    pause = np.asarray(pause, dtype=float)
    shares = np.array([1.0] if share is None else share, dtype=float)
    return np.cumsum((compute[:, None] + pause[:, None]) * shares[None, :], axis=1)


def message_shares(code: codes.GradientCode) -> np.ndarray:
    """Each worker's share of its compute and pause per message, shape ``(W, n_messages)``:
    the fraction of its partitions in that message (uniform for a worker holding none)."""
    mats = list(code.message_matrices)
    counts = np.stack([np.count_nonzero(m, axis=1) for m in mats], axis=1).astype(float)
    total = counts.sum(axis=1, keepdims=True)
    return np.where(total > 0, counts / np.where(total > 0, total, 1.0), 1.0 / len(mats))


def repeat_arrivals(code: codes.GradientCode, delay: delays.DelayModel, load: np.ndarray, compute: np.ndarray,
                    pauses: np.ndarray, comm: float = 0.0, first_iteration: int = 1) -> np.ndarray:
    """Arrivals of each worker's successive gradients in a replay of a ``repeats`` code (kbatch),
    shape ``(draws, W, k)``: the j-th leaves after j rounds of compute and pause, the pause of
    round r being :meth:`~gdcode.delays.DelayModel.draw_repeat` (what the run's worker meets),
    the compute that of the first (the run records only the first's)."""
    draws, W = pauses.shape
    k = int(getattr(code, "k", None) or W)
    out = np.empty((draws, W, k))
    out[:, :, 0] = compute + pauses
    for r in range(1, k):
        extra = np.array([[delay.draw_repeat(w, first_iteration + d, r, float(load[w]), float(compute[d, w]))
                           for w in range(W)] for d in range(draws)]).reshape(draws, W)
        out[:, :, r] = out[:, :, r - 1] + compute + extra
    return out + comm if comm else out


def all_arrivals(code: codes.GradientCode, compute: np.ndarray | None, pause: np.ndarray,
                 comm: float = 0.0) -> np.ndarray:
    """Arrival times of every message of every draw, shape ``(draws, W, n_messages)``.

    ``compute`` (None: no compute time) and ``pause`` have shape ``(draws, W)``; message ``k``
    of worker ``w`` arrives ``comm`` seconds after the worker finishes its first ``k + 1``
    shares of compute and pause (:func:`message_arrivals`, for every draw at once). With one
    message, no compute and no ``comm``, the arrivals are the pauses: a read-only view of
    ``pause`` is returned instead of a copy (at W = 1000 and 20 000 draws a copy is 160 MB).
    """
    pause = np.asarray(pause, float)
    busy = pause if compute is None else np.asarray(compute, float) + pause
    if code.n_messages == 1:  # one message: it leaves when everything is done
        out = busy[:, :, None]
        if comm:
            return out + comm
        if busy is pause:
            out = out.view()
            out.flags.writeable = False
        return out
    share = message_shares(code)
    return np.cumsum(busy[:, :, None] * share[None, :, :], axis=2) + comm


@dataclass(frozen=True)
class Network:
    """Links between the coordinator and the workers, each of ``bandwidth`` bytes/s and ``latency``
    seconds one way (a star: every worker on its own link to a switch, the coordinator on one).

    An iteration then goes: the coordinator's W models leave through its one link, sharing it
    (all arrive ``latency + W * model_bytes / bandwidth`` after the send); each worker computes
    and pauses; its replies reach the coordinator's link ``latency`` later and queue there: it
    delivers them one after another in the order they come, ``reply_bytes / bandwidth`` each
    (incast; a reply crosses its own link and the coordinator's in a pipeline, so one reply alone
    takes ``latency + reply_bytes / bandwidth``). Replies to earlier iterations still in flight
    are not modelled.

    Attributes
    ----------
    latency : float
        One-way seconds per message.
    bandwidth : float
        Bytes per second of every link.
    model_bytes, reply_bytes : int
        Bytes of a model message and of each reply message.
    """

    latency: float
    bandwidth: float
    model_bytes: int
    reply_bytes: int

    @classmethod
    def parse(cls, text: str, model_bytes: int, reply_bytes: int | None = None) -> Network:
        """``LATENCY,BANDWIDTH`` (seconds and a tc rate, e.g. ``0.0005,1gbit``).

        Raises
        ------
        ValueError
            Naming the form.
        """
        latency_text, sep, rate_text = str(text).partition(",")
        try:
            latency = float(latency_text)
        except ValueError:
            latency = float("nan")
        if not sep or not (latency >= 0 and math.isfinite(latency)):
            raise ValueError(f"network {text!r}: write LATENCY,BANDWIDTH, e.g. 0.0005,1gbit (seconds, tc rate)")
        if model_bytes <= 0:
            raise ValueError(f"message bytes must be positive, got {model_bytes}")
        return cls(latency, parse_rate(rate_text, "--network bandwidth"), int(model_bytes),
                   int(model_bytes if reply_bytes is None else reply_bytes))

    def arrivals(self, code: codes.GradientCode, compute: np.ndarray, pause: np.ndarray) -> np.ndarray:
        """Arrival times at the coordinator, shape ``(draws, W, n_messages)`` (see the class)."""
        W = code.n_workers
        start = self.latency + W * self.model_bytes / self.bandwidth
        ready = all_arrivals(code, compute, pause, 0.0) + start + self.latency
        draws, _, M = ready.shape
        flat = ready.reshape(draws, W * M)
        order = np.argsort(flat, axis=1, kind="stable")
        queued = np.take_along_axis(flat, order, axis=1)
        service = self.reply_bytes / self.bandwidth
        done = np.empty_like(queued)
        done[:, 0] = queued[:, 0] + service
        for j in range(1, queued.shape[1]):  # the coordinator's link delivers one reply after another
            done[:, j] = np.maximum(queued[:, j], done[:, j - 1]) + service
        out = np.empty_like(flat)
        np.put_along_axis(out, order, done, axis=1)
        return out.reshape(draws, W, M)

    def describe(self) -> dict:
        return {"latency_seconds": self.latency, "bandwidth_bytes_per_second": self.bandwidth,
                "model_bytes": self.model_bytes, "reply_bytes": self.reply_bytes}


def decode_times(code: codes.GradientCode, arrivals: np.ndarray, generic: bool = False) -> tuple[np.ndarray, str]:
    """Decode time of every draw: ``arrivals`` ``(draws, W, n_messages)`` -> ``(draws,)``.

    Calls the code's :meth:`~gdcode.codes.GradientCode.decode_times`, or with ``generic=True``
    the base implementation (the code's own ``decode``, per draw). Returns the times and the
    method used: ``"vectorised"`` when the code's class overrides ``decode_times``, else
    ``"generic"``.
    """
    arrivals = np.asarray(arrivals, dtype=float)
    if generic or not has_vectorised_rule(code):
        return np.asarray(codes.GradientCode.decode_times(code, arrivals), dtype=float), "generic"
    return np.asarray(code.decode_times(arrivals), dtype=float), "vectorised"


def has_vectorised_rule(code: codes.GradientCode) -> bool:
    """True when the class of ``code`` overrides :meth:`GradientCode.decode_times`."""
    return type(code).decode_times is not codes.GradientCode.decode_times


# ----------------------------------------------------------------------------- time models


@dataclass
class ComputeModel:
    """Compute seconds of each worker per iteration.

    ``kind`` is ``zero``; ``full`` (``seconds[w]`` for the full dataset, scaled by the
    worker's load); or ``trace`` (measured seconds per (worker, iteration), as written by
    ``gdcode run --record-delays``, already including the load; iterations past the end
    wrap around).
    """

    kind: str = "zero"
    seconds: np.ndarray | None = None
    trace: dict | None = None
    spec: str = "0"

    def table(self, code: codes.GradientCode, draws: int, first_iteration: int = 1) -> np.ndarray:
        """Compute seconds, shape ``(draws, W)``; draw ``d`` is iteration ``first_iteration + d``."""
        W = code.n_workers
        if self.kind == "zero":
            return np.zeros((draws, W))
        if self.kind == "full":
            assert self.seconds is not None
            per = np.broadcast_to(self.seconds, (W,)) * code.load()
            return np.broadcast_to(per, (draws, W)).copy()
        out = np.empty((draws, W))
        its = range(first_iteration, first_iteration + draws)
        assert self.trace is not None
        for w in range(W):
            rows = self.trace.get(w + 1)
            if rows is None:
                raise ConfigError(f"--compute {self.spec}: the trace has no rows for worker {w + 1}; "
                                  f"it covers workers {sorted(self.trace)}")
            by_it, secs = rows
            out[:, w] = [by_it.get(t, secs[(t - 1) % len(secs)]) for t in its]
        return out


def parse_compute(spec: str | None, n_workers: int) -> ComputeModel:
    """``--compute``: ``SECONDS`` per full dataset (scaled by load), ``S1,...,SW`` per worker,
    or ``trace:FILE`` of measured seconds per (worker, iteration) (``--record-delays``)."""
    if spec is None or str(spec).strip() in ("", "0", "none"):
        return ComputeModel()
    spec = str(spec).strip()
    if spec.startswith("trace:"):
        try:
            table = delays.read_trace(spec[len("trace:"):])
        except ValueError as exc:
            raise ConfigError(f"--compute {spec}: {exc}") from None
        return ComputeModel(kind="trace", trace=table, spec=spec)
    try:
        vals = np.array([float(x) for x in spec.split(",")])
    except ValueError:
        vals = np.array([])
    if vals.size not in (1, n_workers) or not np.all(np.isfinite(vals)) or np.any(vals < 0):
        raise ConfigError(f"--compute {spec!r}: give SECONDS >= 0 (compute time of the full dataset on one "
                          f"worker, scaled by its load), {n_workers} comma-separated values (one per worker), "
                          "or trace:FILE (as written by gdcode run --record-delays)")
    return ComputeModel(kind="full", seconds=vals if vals.size > 1 else vals[0], spec=spec)


def sample_pauses(model: delays.DelayModel, load: np.ndarray, compute: np.ndarray, draws: int,
                  replay: bool = False, first_iteration: int = 1, seed: int | None = None) -> np.ndarray:
    """Pauses of every worker in every draw, shape ``(draws, W)``, load scaling applied.

    With ``replay`` each pause is ``model.draw(worker, iteration, load, compute)`` for the
    iterations ``first_iteration ..``: the same numbers a run with the model's seed meets.
    Otherwise the model draws them in bulk from the same distribution
    (:meth:`~gdcode.delays.DelayModel.sample_bulk`) with one generator seeded from ``seed``
    (default: the model's seed).
    """
    load = np.asarray(load, dtype=float)
    compute = np.asarray(compute, dtype=float)
    W = load.size
    if replay:
        pauses = np.empty((draws, W))
        for d in range(draws):
            for w in range(W):
                pauses[d, w] = model.draw(w, first_iteration + d, load[w], compute[d, w])
        return pauses
    rng = np.random.default_rng([model.seed if seed is None else seed, 0x5171])
    pauses = np.asarray(model.sample_bulk(rng, compute.reshape(draws, W), first_iteration), dtype=float)
    if model.scale_with_load:
        if not (pauses.flags.owndata and pauses.flags.writeable):
            pauses = pauses.copy()
        pauses *= load[None, :]  # in place: at W = 1000 these are hundreds of MB
    return pauses


# ----------------------------------------------------------------------------- simulation


@dataclass
class Simulation:
    """The result of :func:`simulate`.

    Attributes
    ----------
    times : numpy.ndarray
        Iteration time of each draw (seconds), shape ``(draws,)``.
    arrivals : numpy.ndarray
        Arrival of every message, shape ``(draws, W, n_messages)``; read-only, a view of
        ``pauses``, when the code sends one message and there is no compute time or ``comm``.
    compute, pauses : numpy.ndarray
        Each worker's compute and pause per draw, shape ``(draws, W)``.
    method : str
        ``vectorised`` or ``generic`` (see :func:`decode_times`).
    decoded_from : numpy.ndarray
        The arrivals the times were decoded from: ``arrivals`` itself, or for a replayed
        ``repeats`` code (kbatch) without a network and with its vectorised decode, the arrivals
        of each worker's successive gradients, shape ``(draws, W, k)``.
    """

    code: codes.GradientCode
    times: np.ndarray
    arrivals: np.ndarray
    compute: np.ndarray
    pauses: np.ndarray
    method: str
    decoded_from: np.ndarray
    replay: bool = False
    first_iteration: int = 1
    adaptive: bool = False  # times are adaptive deadlines' cuts (``--wait quantile|mad``)

    def summary(self) -> dict:
        """Mean, spread and quantiles of the iteration time."""
        t = self.times
        finite = t[np.isfinite(t)]
        out: dict[str, Any] = {"draws": int(t.size), "never_decoded": int(t.size - finite.size),
               "mean_iteration_seconds": float(finite.mean()) if finite.size else float("inf"),
               "std_iteration_seconds": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
               "min_iteration_seconds": float(finite.min()) if finite.size else float("inf"),
               "max_iteration_seconds": float(finite.max()) if finite.size else float("inf")}
        out["stderr_mean_seconds"] = out["std_iteration_seconds"] / math.sqrt(max(finite.size, 1))
        out["quantiles"] = {f"p{round(q * 100):d}": float(np.quantile(finite, q)) if finite.size else float("inf")
                            for q in QUANTILES}
        return out

    def responders(self, d: int) -> list:
        """The responders of draw ``d``, in arrival order, up to the decode."""
        if self.adaptive:
            first = self.arrivals[d].min(axis=1)
            return [int(w) for w in np.argsort(first, kind="stable") if first[w] <= self.times[d]]
        if self.code.repeats and self.method == "vectorised":
            # a repeats code's own rule (kbatch: the k gradients, repeats included, its times were
            # decoded from); with the generic decode its times come from decode_time below
            repeats: Any = self.code  # a repeats code has ``responders`` (KBatch.responders)
            return repeats.responders(self.decoded_from[d])
        a = self.arrivals[d] if self.code.n_messages > 1 else self.arrivals[d, :, 0]
        return decode_time(self.code, a)[1]


def adaptive_times(arrivals: np.ndarray, own: np.ndarray, rule: WaitRule, min_replies: int = 1) -> np.ndarray:
    """Iteration times under an adaptive deadline (``--wait quantile:Q`` or ``mad:K``), draw by draw.

    As the coordinator does: while fewer than two iterations are known the code's own rule
    decides; then each iteration stops at its deadline (:class:`gdcode.waiting.AdaptiveDeadline`
    from the iterations before it) with the replies that came by then, later once fewer than
    ``min_replies`` have come, earlier when all W have. Each iteration is observed as soon as it
    ends, its later replies censored at its end (the coordinator learns them an iteration later).

    Parameters
    ----------
    arrivals : numpy.ndarray
        ``(draws, W, n_messages)``; a worker's first message is its reply.
    own : numpy.ndarray
        ``(draws,)``: each draw's time under the code's own rule (:func:`decode_times`) of a code
        that decodes from any set of replies (``ignore``, the approximate codes).
    rule : WaitRule
        The adaptive ``--wait`` rule.
    min_replies : int
    """
    first = np.asarray(arrivals, dtype=float).min(axis=2)
    ordered = np.sort(first, axis=1)
    k = min(max(1, int(min_replies)), first.shape[1]) - 1
    deadlines = AdaptiveDeadline(rule)
    times = np.empty(first.shape[0])
    for d in range(first.shape[0]):
        cut = deadlines.deadline()
        times[d] = own[d] if cut is None else min(ordered[d, -1], max(cut, ordered[d, k]))
        deadlines.observe(np.where(first[d] <= times[d], first[d], np.inf), times[d])
    return times


def simulate(code: codes.GradientCode, delay: delays.DelayModel, draws: int = 20000,
             compute: ComputeModel | None = None, comm: float = 0.0, replay: bool = False,
             first_iteration: int = 1, seed: int | None = None, generic: bool = False,
             network: Network | None = None, wait: str = "fixed", min_replies: int = 1) -> Simulation:
    """Simulate ``draws`` iterations of ``code`` under ``delay``.

    Parameters
    ----------
    code : GradientCode
    delay : DelayModel
        From :func:`gdcode.delays.parse` (with ``n_workers`` for ``persistent``).
    draws : int
        Iterations to simulate.
    compute : ComputeModel, optional
        Compute seconds per worker (default zero).
    comm : float
        Seconds from a worker's send to the coordinator's receipt, per message.
    replay : bool
        Take each pause from the run's own (seed, worker, iteration) stream.
    first_iteration : int
        Iteration number of draw 0 (replay and traces).
    seed : int, optional
        Seed of the bulk draws (default: the delay model's seed).
    generic : bool
        Decode with the code's own ``decode`` even when a vectorised rule exists.
    network : Network, optional
        Links with latency and bandwidth (replacing ``comm``): each message's transfer and the
        coordinator's link serialising the replies.
    wait, min_replies : str, int
        ``--wait`` and ``--min-replies``: an adaptive deadline (:func:`adaptive_times`) instead of
        the code's own rule.
    """
    if draws < 1:
        raise ConfigError(f"--draws {draws} must be a positive integer")
    if comm < 0 or not math.isfinite(comm):
        raise ConfigError(f"--comm {comm} must be a finite number of seconds >= 0")
    compute = compute or ComputeModel()
    load = code.load()
    comp = compute.table(code, draws, first_iteration)
    pauses = sample_pauses(delay, load, comp, draws, replay=replay, first_iteration=first_iteration, seed=seed)
    if network is None:
        arrivals = all_arrivals(code, None if compute.kind == "zero" else comp, pauses, comm)
    else:
        arrivals = network.arrivals(code, comp, pauses)
    decode_from = arrivals
    if code.repeats and replay and network is None and not generic:
        decode_from = repeat_arrivals(code, delay, load, comp, pauses, comm, first_iteration)
    times, method = decode_times(code, decode_from, generic=generic)
    rule = WaitRule.parse(wait)
    adaptive = rule.adaptive
    if adaptive:
        times = adaptive_times(arrivals, times, rule, min_replies)
    return Simulation(code=code, times=times, arrivals=arrivals, compute=comp, pauses=pauses, method=method,
                      decoded_from=decode_from, replay=replay, first_iteration=first_iteration, adaptive=adaptive)


def closed_form_mean(code: codes.GradientCode, delay: delays.DelayModel, compute: ComputeModel | None = None,
                     comm: float = 0.0) -> float | None:
    """The exact mean iteration time where a closed form exists, else None.

    Under Lee et al.'s model a worker with load ``l`` takes ``l (a + E)`` with ``E`` exponential
    of mean ``m`` (``shifted-exp:a,m`` or ``exp:m`` with ``--delay-scale-with-load``, any
    ``--compute`` of the full dataset adding to ``a``), and the j-th fastest of n workers
    arrives at ``l (a + m (H_n - H_{n-j}))``. Each code gives ``a`` plus its decode time's
    mean under such arrivals, :meth:`~gdcode.codes.GradientCode.exponential_order_mean`:
    uncoded ``(1/n)(a + m H_n)``; ignore-s ``(1/n)(a + m (H_n - H_s))``; cyclic codes
    ``((s+1)/n)(a + m (H_n - H_s))``; frc ``((s+1)/n)(a + m H_{n/(s+1)}/(s+1))`` (the slowest
    of n/(s+1) group minima). Without load scaling ``l`` multiplies only the compute. ``comm``
    adds to every arrival. The delay model gives ``(a, m)``,
    :meth:`~gdcode.delays.DelayModel.shifted_exponential`.
    """
    params = delay.shifted_exponential()
    if params is None:
        return None
    shift, mean = params
    if code.n_messages != 1:
        return None
    compute = compute or ComputeModel()
    if compute.kind == "trace" or (compute.kind == "full" and np.ndim(compute.seconds) > 0):  # type: ignore[arg-type]
        return None
    full = 0.0 if compute.kind == "zero" else float(compute.seconds)  # type: ignore[arg-type]
    load = code.load()
    if not np.allclose(load, load[0]):
        return None
    ell = float(load[0])
    if not delay.scale_with_load:
        if full:  # compute l*full plus an unscaled shifted exponential: still a shift
            shift += ell * full
            full = 0.0
        ell = 1.0
    else:
        shift += full
    decoded = code.exponential_order_mean(shift, mean)
    if decoded is None:
        return None
    return ell * decoded + comm


# ----------------------------------------------------------------------------- training replay


@dataclass
class ReplayResult:
    """The optimiser replayed with simulated decodes (:func:`train_replay`)."""

    iterations: int
    seconds: np.ndarray  # cumulative simulated seconds at the end of each iteration
    train_loss: np.ndarray
    gradient_error: np.ndarray  # ||g_hat - g|| / ||g|| per iteration
    target_loss: float | None
    target_iteration: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def target_seconds(self) -> float | None:
        """Simulated seconds to reach the target loss (None if never reached)."""
        return None if self.target_iteration is None else float(self.seconds[self.target_iteration - 1])

    def summary(self) -> dict:
        out = {"replayed_iterations": self.iterations, "target_loss": self.target_loss,
               "target_reached": self.target_iteration is not None,
               "iterations_to_target": self.target_iteration,
               "seconds_to_target": self.target_seconds,
               "final_train_loss": float(self.train_loss[-1]),
               "simulated_seconds": float(self.seconds[-1]),
               "mean_gradient_error": float(np.mean(self.gradient_error))}
        out.update(self.extra)
        return out


def train_replay(sim: Simulation, problem, iterations: int, target_loss: float | None = None) -> ReplayResult:
    """Replay gradient descent with each simulated iteration's decoded gradient.

    Iteration ``t`` uses draw ``t - 1`` of ``sim``: the code decodes from that draw's
    responders, and the decoded sum is ``c . G`` where ``G`` holds the partitions' gradient
    sums and ``c = sum_k a_k M_k`` the weight each partition gets (all ones for an exact
    decode). The coordinator's rule follows: divide by n, add ``lambda w``, step. The loss is
    the training objective after each step, as in ``metrics.jsonl``.

    Parameters
    ----------
    sim : Simulation
        At least ``iterations`` draws.
    problem : gdcode.problem.Problem
        The run's parts (:func:`gdcode.problem.build`): dataset, model, L2, initial point,
        update rule and schedule.
    iterations : int
        Iterations to replay at most.
    target_loss : float, optional
        Stop once the training loss is at or below it.
    """
    from gdcode.data import partition_bounds

    code = sim.code
    if sim.times.size < iterations:
        raise ValueError(f"the simulation has {sim.times.size} draws but {iterations} iterations were asked for; "
                         "draws must be at least iterations")
    model = problem.model
    X, y = problem.train_set()
    n = X.shape[0]
    bounds = partition_bounds(n, code.n_partitions)
    parts = [(X[bounds[j]:bounds[j + 1]], y[bounds[j]:bounds[j + 1]]) for j in range(code.n_partitions)]
    ones = [np.ones(p[1].shape[0]) for p in parts]
    opt = problem.optimizer()
    l2 = problem.l2
    G = np.zeros((code.n_partitions, problem.n_params))
    seconds, losses, errors = [], [], []
    clock, reached = 0.0, None
    for t in range(1, iterations + 1):
        point = opt.point().copy()
        G[:] = 0.0
        for j, (Xj, yj) in enumerate(parts):
            model.loss_grad_sum(Xj, yj, ones[j], point, G[j])
        responders = sim.responders(t - 1)
        weights = code.decode(responders)
        if weights is None:
            raise RuntimeError(f"{code.name} did not decode in simulated iteration {t}")
        per_partition = code.combined(weights) if hasattr(code, "combined") else \
            np.asarray(weights, float) @ code.B
        grad = per_partition @ G / n + l2 * point
        exact = G.sum(axis=0) / n + l2 * point
        norm = np.linalg.norm(exact)
        errors.append(float(np.linalg.norm(grad - exact) / norm) if norm > 0 else 0.0)
        opt.step(grad)
        clock += float(sim.times[t - 1])
        seconds.append(clock)
        losses.append(model.objective(X, y, opt.params, l2))
        if target_loss is not None and losses[-1] <= target_loss:
            reached = t
            break
    return ReplayResult(iterations=len(losses), seconds=np.array(seconds), train_loss=np.array(losses),
                        gradient_error=np.array(errors), target_loss=target_loss, target_iteration=reached)


# ----------------------------------------------------------------------------- fitting delays


#: the delay models :func:`fit_run` fits, with their number of parameters
FIT_MODELS = {"exp": 1, "shifted-exp": 2, "pareto": 2}


@dataclass
class Sample:
    """Reply times of a run for fitting: ``observed`` values, and ``censored`` lower bounds
    (a worker cancelled before replying took longer than its iteration lasted)."""

    observed: np.ndarray
    censored: np.ndarray
    what: str
    per_worker: dict = field(default_factory=dict)  # worker -> measured, censored, mean_measured
    observed_cap: np.ndarray | None = None  # censoring time of each observed value's iteration (inf: none)
    series: traces.Series | None = None  # the same values per (iteration, worker), for the fits in time


def _fit_params(kind: str, x: np.ndarray, c: np.ndarray) -> tuple:
    """Maximum-likelihood parameters of ``kind`` from observed ``x`` and right-censored ``c``."""
    n = x.size
    if kind == "exp":
        return ((x.sum() + c.sum()) / n,)
    if kind == "shifted-exp":
        shift = float(x.min())
        return shift, max((np.sum(x - shift) + np.sum(np.maximum(c - shift, 0.0))) / n, 1e-300)
    if kind == "pareto":
        scale = float(x.min())
        if scale <= 0:
            return scale, float("nan")
        denom = np.sum(np.log(x / scale)) + np.sum(np.log(np.maximum(c, scale) / scale))
        return scale, (n / denom if denom > 0 else float("inf"))
    raise ValueError(kind)


def _cdf(kind: str, params: tuple, t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, float)
    if kind == "exp":
        return 1.0 - np.exp(-np.maximum(t, 0.0) / params[0])
    if kind == "shifted-exp":
        return 1.0 - np.exp(-np.maximum(t - params[0], 0.0) / params[1])
    scale, shape = params
    return np.where(t >= scale, 1.0 - (scale / np.maximum(t, scale)) ** shape, 0.0)


def _loglik(kind: str, params: tuple, x: np.ndarray, c: np.ndarray) -> float:
    if kind == "exp":
        (m,) = params
        return float(-x.size * np.log(m) - x.sum() / m - c.sum() / m)
    if kind == "shifted-exp":
        a, m = params
        return float(-x.size * np.log(m) - np.sum(x - a) / m - np.sum(np.maximum(c - a, 0.0)) / m)
    scale, shape = params
    return float(x.size * (np.log(shape) + shape * np.log(scale)) - (shape + 1) * np.sum(np.log(x))
                 + shape * np.sum(np.log(scale / np.maximum(c, scale))))


def _ks(kind: str, params: tuple, x: np.ndarray, c: np.ndarray) -> float:
    """Largest distance between the fitted CDF and the empirical one (Kaplan-Meier when some
    values are censored), over the observed values."""
    values = np.concatenate([x, c])
    event = np.concatenate([np.ones(x.size, bool), np.zeros(c.size, bool)])
    order = np.lexsort((~event, values))  # at equal times, events before censorings
    values, event = values[order], event[order]
    at_risk = values.size - np.arange(values.size)
    survival = np.cumprod(np.where(event, 1.0 - 1.0 / at_risk, 1.0))
    before = np.concatenate([[1.0], survival[:-1]])
    F = _cdf(kind, params, values)
    d_after = np.abs((1.0 - survival) - F)[event]
    d_before = np.abs((1.0 - before) - F)[event]
    return float(max(d_after.max(initial=0.0), d_before.max(initial=0.0)))


def _draw(kind: str, params: tuple, rng: np.random.Generator, size: int) -> np.ndarray:
    if kind == "exp":
        return rng.exponential(params[0], size)
    if kind == "shifted-exp":
        return params[0] + rng.exponential(params[1], size)
    return params[0] * (1.0 + rng.pareto(params[1], size))


def spec_of(kind: str, params: tuple) -> str:
    """The ``--delay`` spec of a fitted model."""
    if kind == "exp":
        return f"exp:{params[0]:.4g}"
    return f"{kind}:{params[0]:.4g},{params[1]:.4g}"


def fit_sample(sample: Sample, bootstrap: int = 200, seed: int = 0, alpha: float = 0.05) -> dict:
    """Fit every model of :data:`FIT_MODELS` to ``sample`` by maximum likelihood.

    Goodness of fit: the Kolmogorov-Smirnov distance ``D`` between the fitted and the
    empirical CDF (Kaplan-Meier under censoring), with a p-value from a parametric bootstrap
    that refits each resampled set (so the p-value accounts for the estimated parameters and
    for the censoring: a resampled value is censored when it exceeds its slot's censoring
    time). A model fits when ``p >= alpha``; ``best`` is the i.i.d. model of lowest AIC among
    those that fit (among all when none does).

    When the sample has a ``series`` (the values per iteration and worker), the report also
    has ``markov`` (:func:`gdcode.markovfit.fit_markov`), ``autocorrelation`` (lag 1) and
    ``cross_correlation`` (:mod:`gdcode.traces`). Always: ``verdict``
    (:func:`gdcode.markovfit.verdict`), the model that describes the data best and why.
    """
    x, c = sample.observed, sample.censored
    if x.size < 5:
        raise ConfigError(f"only {x.size} measured reply times: too few to fit a delay model (need 5 or more)")
    if np.ptp(x) <= 0:
        raise ConfigError("every measured reply time is the same: there is no delay distribution to fit")
    caps = np.concatenate([sample.observed_cap if sample.observed_cap is not None else np.full(x.size, np.inf), c])
    rng = np.random.default_rng([seed, 0xF17])
    results = []
    for kind, k in FIT_MODELS.items():
        params = _fit_params(kind, x, c)
        if not all(np.isfinite(params)) or (kind == "pareto" and params[0] <= 0):
            results.append({"model": kind, "fitted": False, "reason": "values at or below zero"
                            if kind == "pareto" else "degenerate sample"})
            continue
        ll = _loglik(kind, params, x, c)
        stat = _ks(kind, params, x, c)
        exceed = 0
        for _ in range(bootstrap):
            v = _draw(kind, params, rng, caps.size)
            seen = v <= caps
            bx, bc = v[seen], caps[~seen]
            if bx.size < 2 or np.ptp(bx) <= 0:
                continue
            bp = _fit_params(kind, bx, bc)
            if all(np.isfinite(bp)) and _ks(kind, bp, bx, bc) >= stat:
                exceed += 1
        p = (exceed + 1) / (bootstrap + 1)
        results.append({"model": kind, "fitted": True, "params": [float(v) for v in params],
                        "spec": spec_of(kind, params), "loglik": ll, "aic": 2 * k - 2 * ll,
                        "ks_statistic": stat, "p_value": p, "fits": bool(p >= alpha)})
    fitted = [r for r in results if r["fitted"]]
    good = [r for r in fitted if r["fits"]]
    best = min(good or fitted, key=lambda r: float(r["aic"])) if fitted else None  # type: ignore[arg-type]
    report = {"what": sample.what, "observed": int(x.size), "censored": int(c.size), "alpha": alpha,
              "bootstrap": bootstrap, "models": results, "best": best["model"] if best else None,
              "best_fits": bool(best and best["fits"]), "per_worker": sample.per_worker,
              "persistent_stragglers": persistent_stragglers(sample.per_worker)}
    if sample.series is not None:
        report["markov"] = markovfit.fit_markov(sample.series)
        report["autocorrelation"] = {k: v for k, v in traces.autocorrelation(sample.series).items()}
        report["cross_correlation"] = traces.cross_correlation(sample.series)
    report["verdict"] = markovfit.verdict(report, alpha)
    return report


def persistent_stragglers(per_worker: dict) -> list[int]:
    """Workers that look persistently slow: cut off (cancelled or late) in at least 90% of their
    iterations while the median worker is cut off in under half of them, or measured at over
    twice the median worker's mean."""
    if len(per_worker) < 3:
        return []
    frac = {w: v["censored"] / max(v["censored"] + v["measured"], 1) for w, v in per_worker.items()}
    means = {w: v["mean_measured"] for w, v in per_worker.items() if v["mean_measured"] is not None}
    mid_frac = float(np.median(list(frac.values())))
    mid_mean = float(np.median(list(means.values()))) if means else 0.0
    return [w for w in per_worker
            if (frac[w] >= 0.9 and mid_frac < 0.5) or (mid_mean > 0 and means.get(w, 0.0) > 2 * mid_mean)]


def run_sample(run, compute: ComputeModel | None = None) -> Sample:
    """The reply times of a coded run for :func:`fit_sample`.

    From ``workers.csv``: a reply's ``arrival`` (seconds after its iteration started),
    minus the worker's measured compute when known (``compute`` is a trace, e.g. the run's
    ``--record-delays`` file), so that what is fitted is the pause (plus the message's
    transfer), divided by the worker's load when the run scaled pauses by load. A worker
    cancelled before replying contributes a censored value: it took longer than its
    iteration (``elapsed`` differences in ``metrics.jsonl``). So does a ``late`` reply: its
    arrival is when the coordinator noticed it, possibly after evaluating the iteration.
    """
    opts = run.metadata.get("options", {})
    if opts.get("mode", "coded") != "coded":
        raise ConfigError(f"{run.path}: --fit reads coded runs (workers.csv); this run's mode is {opts.get('mode')}")
    if not run.workers:
        raise ConfigError(f"{run.path} has no workers.csv rows to fit")
    W = int(opts.get("workers", max(r["worker"] for r in run.workers)))
    load = np.asarray(run.metadata.get("code", {}).get("load", [1.0] * W), float)
    scale = bool(opts.get("delay_scale_with_load"))
    it = run.column("iteration").astype(int)
    el = run.column("elapsed")
    duration = dict(zip(it.tolist(), np.diff(np.concatenate([[0.0], el])).tolist(), strict=True))
    comp = None
    if compute is not None and compute.kind == "trace":
        comp = compute.trace
    elif compute is not None and compute.kind != "zero":
        raise ConfigError("--compute for --fit must be trace:FILE (the run's --record-delays file)")
    med: dict[int, float] = {}
    if comp is not None:
        med = {w: float(np.median(rows[1])) for w, rows in comp.items()}
    observed: list[float] = []
    cap_obs: list[float] = []
    censored: list[float] = []
    by_worker: dict[int, list[float]] = {}
    cut_of: dict[int, int] = {}
    grid: list[tuple[int, int, float, bool]] = []
    cut = {r["iteration"] for r in run.workers if r["status"] in ("cancelled", "late")}
    for r in run.workers:
        w, t = r["worker"], r["iteration"]
        sub = 0.0
        if comp is not None:
            rows = comp.get(w)
            sub = rows[0].get(t, med.get(w, 0.0)) if rows else 0.0
        div = load[w - 1] if scale and load[w - 1] > 0 else 1.0
        if r["arrival"] is not None and r["status"] != "late":
            v = max(r["arrival"] - sub, 0.0) / div
            observed.append(v)
            cap_obs.append((duration.get(t, np.inf) - med.get(w, 0.0)) / div if t in cut else np.inf)
            by_worker.setdefault(w, []).append(v)
            grid.append((w, t, v, False))
        elif t in duration:
            # cancelled, or late: a late reply is timed when the coordinator noticed it, which may be
            # long after it came (the coordinator evaluates between iterations); all that is certain
            # is that it took longer than its iteration
            censored.append(max(duration[t] - med.get(w, 0.0), 0.0) / div)
            cut_of[w] = cut_of.get(w, 0) + 1
            grid.append((w, t, censored[-1], True))
    what = "pause (arrival minus measured compute)" if comp is not None else "reply time (compute + pause + transfer)"
    if scale:
        what += ", divided by the worker's load"
    return Sample(observed=np.array(observed), censored=np.array(censored), what=what,
                  per_worker={w: {"measured": len(by_worker.get(w, [])), "censored": cut_of.get(w, 0),
                                  "mean_measured": float(np.mean(by_worker[w])) if by_worker.get(w) else None}
                              for w in sorted(set(by_worker) | set(cut_of))},
                  observed_cap=np.array(cap_obs), series=traces.Series.from_rows(grid) if grid else None)


def fit_run(run, compute: ComputeModel | None = None, bootstrap: int = 200, seed: int = 0) -> dict:
    """Fit delay models to a run's reply times (:func:`run_sample`, :func:`fit_sample`)."""
    return fit_sample(run_sample(run, compute), bootstrap=bootstrap, seed=seed)


def trace_sample(path: str) -> Sample:
    """The times of a trace file (``worker,iteration,seconds``, :func:`gdcode.delays.read_trace`)
    for :func:`fit_sample`: every value measured, none censored.

    Raises
    ------
    ValueError
        When the file cannot be read or is malformed.
    """
    table = delays.read_trace(path)
    series = traces.Series.from_table(table)
    values = np.concatenate([rows[1] for _, rows in sorted(table.items())])
    per_worker = {w: {"measured": int(rows[1].size), "censored": 0, "mean_measured": float(rows[1].mean())}
                  for w, rows in sorted(table.items())}
    return Sample(observed=values, censored=np.array([]), what=f"seconds per (worker, iteration) of the trace {path}",
                  per_worker=per_worker, series=series)


def fit_trace(path: str, bootstrap: int = 200, seed: int = 0) -> dict:
    """Fit delay models to a trace file's times (:func:`trace_sample`, :func:`fit_sample`)."""
    return fit_sample(trace_sample(path), bootstrap=bootstrap, seed=seed)
