"""Straggler delay models: an injected pause per worker per iteration.

``parse(spec)`` turns a delay SPEC (docs/plugins.md) into a model whose
``draw(worker, iteration)`` is a pure function of (seed, worker, iteration): every scheme in a
comparison meets the same delays, whichever iterations a worker skips or a run resumes from.

A SPEC is ``NAME[:ARGS]`` for a model of the registry :data:`DELAYS` (``none``,
``exp:MEAN``, ``shifted-exp:SHIFT,MEAN``, ``pareto:SCALE,SHAPE``,
``persistent:K,FACTOR[,BASE]``, ``markov:MEAN,FACTOR,P_ENTER,P_LEAVE[,SHIFT]``,
``correlated:MEAN,CV,RHO[,GROUP]``, ``trace:FILE``, or the name of an entry point of the group
``gdcode.delays``), or ``MODULE:CLASS[:ARGS]`` for a plug-in given by its import path. A model
is a :class:`DelayModel` subclass; its classmethod :meth:`DelayModel.from_args` reads ARGS
(by default: comma-separated values for the constructor's positional parameters, converted
by their annotations) and its constructor checks them. For the simulator every model also
draws many pauses at once, :meth:`DelayModel.sample_bulk`.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing

import numpy as np

from gdcode.registry import Registry

if typing.TYPE_CHECKING:
    from gdcode.streams import Reseeded

#: every delay model, by name
DELAYS: Registry[type] = Registry("delay model", "gdcode.delays", fixed=("seed", "scale_with_load"))

#: how a plug-in delay model is written in a SPEC
PLUGIN_FORM = "MODULE:CLASS[:ARGS]"

_CONVERTERS = {"float": float, "int": int, "str": str}


class DelayModel:
    """Base class: :meth:`sample` draws one pause from a (worker, iteration) stream.

    Parameters
    ----------
    seed : int
        The run's seed; every (worker, iteration) gets its own stream derived from it.
    scale_with_load : bool
        Multiply each pause by the worker's load (the fraction of the partitions it holds),
        as in Lee et al.'s model, where a job of size ``l`` takes ``l (shift + Exp)``.

    Attributes
    ----------
    name : str
        The registry name (set by :data:`DELAYS`).
    spec : str
        The SPEC that rebuilds the model (recorded in ``metadata.json``); :func:`parse` sets
        it to the SPEC it was given when the model does not set its own.
    uses_compute : bool
        Whether :meth:`sample` reads ``compute``, the worker's measured compute time. True unless
        the class that defines :meth:`sample` sets it False (a subclass that overrides
        :meth:`sample` is taken to read it again unless it says otherwise). When it does not, a
        coded worker serves its pause *before* it computes, drawing it with ``compute`` 0
        (:mod:`gdcode.runtime.coded`).
    """

    name: str = ""
    spec: str = ""
    uses_compute: bool = True

    def __init_subclass__(cls, **kwargs: typing.Any) -> None:
        super().__init_subclass__(**kwargs)
        if "sample" in vars(cls) and "uses_compute" not in vars(cls):
            cls.uses_compute = True

    def __init__(self, *, seed: int = 0, scale_with_load: bool = False) -> None:
        self.seed = int(seed)
        self.scale_with_load = scale_with_load

    # ------------------------------------------------------------------ building from a SPEC

    @classmethod
    def arg_parameters(cls) -> list[inspect.Parameter]:
        """The constructor's positional parameters that ARGS fill, in order."""
        params = inspect.signature(cls).parameters.values()
        return [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.name not in DELAYS.fixed]

    @classmethod
    def form(cls) -> str:
        """How the SPEC of this model is written, e.g. ``persistent:K,FACTOR[,BASE]``."""
        params = cls.arg_parameters()
        label = cls.name or cls.__name__
        if not params:
            return label
        text = ""
        for i, p in enumerate(params):
            sep = "," if i else ":"
            text += f"{sep}{p.name.upper()}" if p.default is p.empty else f"[{sep}{p.name.upper()}"
        return label + text + "]" * sum(p.default is not p.empty for p in params)

    @classmethod
    def from_args(cls, text: str, *, seed: int = 0, scale_with_load: bool = False,
                  n_workers: int | None = None) -> DelayModel:
        """The model of the ARGS ``text`` (what follows ``NAME:`` in a SPEC).

        The default splits ``text`` on commas and passes the values, in order, to the
        constructor's positional parameters (:meth:`arg_parameters`), each converted by its
        annotation (``float``, ``int`` or ``str``; numbers must be finite); trailing
        parameters with defaults may be left out. The constructor checks the values. With
        ``n_workers``, the model is then bound to that many workers (:meth:`bind_workers`).

        Raises
        ------
        ValueError
            For the wrong number of values, a value that does not convert, or whatever the
            constructor refuses.
        """
        params = cls.arg_parameters()
        raw = text.split(",") if text else []
        required = sum(p.default is p.empty for p in params)
        if not required <= len(raw) <= len(params):
            got = f"{cls.name or cls.__name__}:{text}" if text else (cls.name or cls.__name__)
            raise ValueError(f"{_label(cls)}: write {cls.form()}, got {got!r}")
        hints = _annotations(cls)
        values = [_convert(cls, p, hints.get(p.name, p.annotation), r) for p, r in zip(params, raw, strict=False)]
        model = cls(*values, seed=seed, scale_with_load=scale_with_load)
        return model.bind_workers(n_workers) if n_workers is not None else model

    def bind_workers(self, n_workers: int) -> DelayModel:
        """Check the model against the number of workers and return it (nothing to check by default)."""
        return self

    # ------------------------------------------------------------------ drawing

    def rng(self, worker: int, iteration: int, repeat: int = 0) -> np.random.Generator:
        """The stream for one (worker, iteration), and for a ``kbatch`` worker's later gradients
        of it (``repeat`` >= 1) one stream each: ``numpy.random.default_rng([seed, 0xDE1A,
        worker, iteration(, repeat)])``.

        :meth:`draw` takes the same numbers from one reused generator
        (:class:`gdcode.streams.Reseeded`), which is valid only until the next draw, without
        calling this method: to change the pauses, override :meth:`sample`, not this.
        """
        return np.random.default_rng(self._entropy(worker, iteration, repeat))

    def _entropy(self, worker: int, iteration: int, repeat: int) -> list[int]:
        return [self.seed, 0xDE1A, worker, iteration, *([repeat] if repeat else [])]

    @functools.cached_property
    def _reseeded(self) -> Reseeded:
        """This model's reused generator of :meth:`rng`'s streams (created at the first draw)."""
        from gdcode.streams import Reseeded  # lazily: the launcher imports this module

        return Reseeded()

    def _stream(self, worker: int, iteration: int, repeat: int = 0) -> np.random.Generator:
        """:meth:`rng`'s stream, in this model's reused generator (valid until the next call)."""
        return self._reseeded(self._entropy(worker, iteration, repeat))

    def sample(self, rng: np.random.Generator, worker: int, iteration: int, compute: float) -> float:
        """One pause in seconds, before load scaling, drawn from ``rng``."""
        raise NotImplementedError

    def draw(self, worker: int, iteration: int, load: float = 1.0, compute: float = 0.0) -> float:
        """The pause, in seconds, of worker ``worker`` (0-based) at ``iteration`` (1-based).

        ``compute`` is the worker's measured compute time this iteration (used by models that
        slow a worker down by a factor). The model's one reused generator serves every draw: do
        not draw from two threads at once.
        """
        return self._scaled(self.sample(self._stream(worker, iteration), worker, iteration, compute), load)

    def draw_repeat(self, worker: int, iteration: int, repeat: int, load: float = 1.0, compute: float = 0.0) -> float:
        """The pause of a worker's ``repeat``-th gradient of one iteration (``kbatch`` workers send
        one after another): :meth:`draw` for the first (``repeat`` 0), then pauses from streams of
        (seed, worker, iteration, repeat), the same for the run and the simulator's replay."""
        if repeat == 0:
            return self.draw(worker, iteration, load, compute)
        return self._scaled(float(self.sample(self._stream(worker, iteration, repeat), worker, iteration, compute)),
                            load)

    def _scaled(self, pause: float, load: float) -> float:
        return pause * load if self.scale_with_load else pause

    def sample_bulk(self, rng: np.random.Generator, compute: np.ndarray, first_iteration: int = 1) -> np.ndarray:
        """Many pauses at once for the simulator, before load scaling.

        The default replays :meth:`draw` for every (worker, iteration), iteration
        ``first_iteration + d`` in draw ``d``, and ignores ``rng``: exact, but slow. A model
        with a distribution numpy draws in bulk overrides it.

        Parameters
        ----------
        rng : numpy.random.Generator
            The one generator of the whole table.
        compute : numpy.ndarray
            Shape ``(draws, W)``: each worker's compute seconds per draw.
        first_iteration : int
            Iteration of draw 0 (models that depend on the iteration).

        Returns
        -------
        numpy.ndarray
            Shape ``(draws, W)``, seconds.
        """
        compute = np.asarray(compute, dtype=float)
        draws, W = compute.shape
        out = np.empty((draws, W))
        for d in range(draws):
            for w in range(W):
                out[d, w] = self.draw(w, first_iteration + d, 1.0, compute[d, w])
        return out

    def shifted_exponential(self) -> tuple[float, float] | None:
        """``(shift, mean)`` when every pause is ``shift + Exp(mean)``, else None (default).

        The simulator's closed forms (:func:`gdcode.simulate.closed_form_mean`) use it.
        """
        return None

    def describe(self) -> dict:
        """What ``metadata.json`` records about the model."""
        return {"spec": self.spec, "scale_with_load": self.scale_with_load}


@DELAYS.register("none")
class NoDelay(DelayModel):
    """``none``: no injected pause."""

    spec = "none"
    uses_compute = False

    def sample(self, rng, worker, iteration, compute):
        return 0.0

    def draw(self, worker, iteration, load=1.0, compute=0.0):
        return 0.0

    def sample_bulk(self, rng, compute, first_iteration=1):
        return np.zeros(np.shape(compute))


@DELAYS.register("exp")
class Exponential(DelayModel):
    """``exp:MEAN``: an exponential pause with mean MEAN seconds (ErasureHead's model)."""

    uses_compute = False

    def __init__(self, mean: float, *, seed: int = 0, scale_with_load: bool = False) -> None:
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        _require(_finite(mean) and mean > 0, f"exp delay: MEAN must be > 0 seconds, got {mean:g}")
        self.mean = mean
        self.spec = f"exp:{mean:g}"

    def sample(self, rng, worker, iteration, compute):
        return float(rng.exponential(self.mean))

    def sample_bulk(self, rng, compute, first_iteration=1):
        return rng.exponential(self.mean, np.shape(compute))

    def shifted_exponential(self):
        return 0.0, self.mean


@DELAYS.register("shifted-exp")
class ShiftedExponential(DelayModel):
    """``shifted-exp:SHIFT,MEAN``: SHIFT + Exp(MEAN) seconds (Lee et al. 2018).

    With ``scale_with_load``, a worker with load l pauses ``l (SHIFT + Exp(MEAN))``.
    """

    uses_compute = False

    def __init__(self, shift: float, mean: float, *, seed: int = 0, scale_with_load: bool = False) -> None:
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        _require(_finite(shift) and shift >= 0, f"shifted-exp delay: SHIFT must be >= 0 seconds, got {shift:g}")
        _require(_finite(mean) and mean > 0, f"shifted-exp delay: MEAN must be > 0 seconds, got {mean:g}")
        self.shift, self.mean = shift, mean
        self.spec = f"shifted-exp:{shift:g},{mean:g}"

    def sample(self, rng, worker, iteration, compute):
        return self.shift + float(rng.exponential(self.mean))

    def sample_bulk(self, rng, compute, first_iteration=1):
        return self.shift + rng.exponential(self.mean, np.shape(compute))

    def shifted_exponential(self):
        return self.shift, self.mean


@DELAYS.register("pareto")
class Pareto(DelayModel):
    """``pareto:SCALE,SHAPE``: a heavy-tailed pause with ``P(T > t) = (SCALE/t)^SHAPE`` for t >= SCALE."""

    uses_compute = False

    def __init__(self, scale: float, shape: float, *, seed: int = 0, scale_with_load: bool = False) -> None:
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        _require(_finite(scale) and scale > 0, f"pareto delay: SCALE must be > 0 seconds, got {scale:g}")
        _require(_finite(shape) and shape > 0, f"pareto delay: SHAPE must be > 0, got {shape:g}")
        self.scale, self.shape = scale, shape
        self.spec = f"pareto:{scale:g},{shape:g}"

    def sample(self, rng, worker, iteration, compute):
        return self.scale * (1.0 + float(rng.pareto(self.shape)))

    def sample_bulk(self, rng, compute, first_iteration=1):
        return self.scale * (1.0 + rng.pareto(self.shape, np.shape(compute)))


@DELAYS.register("persistent")
class Persistent(DelayModel):
    """``persistent:K,FACTOR[,BASE]``: K fixed workers run FACTOR times slower, every iteration.

    Every worker pauses BASE seconds (default 0) after its compute; the K slow workers (a
    seeded choice, the same for every scheme, recorded in ``metadata.json``) pause so that
    their whole iteration, compute plus BASE, takes FACTOR times as long. This is the
    persistent bimodal pattern Tandon et al. measured on t2.micro instances.
    """

    def __init__(self, k: int, factor: float, base: float = 0.0, *, seed: int = 0,
                 scale_with_load: bool = False) -> None:
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        _require(_finite(k) and int(k) == k and k >= 0, f"persistent delay: K must be a whole number >= 0, got {k}")
        _require(_finite(factor) and factor >= 1, f"persistent delay: FACTOR must be >= 1, got {factor:g}")
        _require(_finite(base) and base >= 0, f"persistent delay: BASE must be >= 0 seconds, got {base:g}")
        self.k, self.factor, self.base = int(k), factor, base
        self.spec = f"persistent:{self.k},{factor:g}" + (f",{base:g}" if base else "")
        self.n_workers: int | None = None  # set by bind_workers

    def slow_workers(self, n_workers: int) -> list[int]:
        """The K slow workers (0-based) among ``n_workers``."""
        if self.k > n_workers:
            raise ValueError(f"persistent delay {self.spec}: K = {self.k} slow workers, but there are only "
                             f"{n_workers} workers")
        rng = np.random.default_rng([self.seed, 0xDE1A, 0x510])
        return sorted(int(i) for i in rng.choice(n_workers, size=self.k, replace=False))

    def sample(self, rng, worker, iteration, compute):
        if self.n_workers is None:
            raise RuntimeError("persistent delays need the number of workers (bind_workers)")
        if worker in self._slow:
            return self.factor * (compute + self.base) - compute
        return self.base

    def sample_bulk(self, rng, compute, first_iteration=1):
        compute = np.asarray(compute, dtype=float)
        slow = np.zeros(compute.shape[1], dtype=bool)
        slow[self.slow_workers(compute.shape[1])] = True
        return np.where(slow[None, :], self.factor * (compute + self.base) - compute, self.base)

    def bind_workers(self, n_workers: int) -> Persistent:
        """Choose the slow workers among ``n_workers`` (ValueError when K > n_workers)."""
        self._slow = set(self.slow_workers(n_workers))
        self.n_workers = n_workers
        return self

    def describe(self):
        out = super().describe()
        if self.n_workers is not None:
            out["slow_workers"] = [w + 1 for w in sorted(self._slow)]  # as ranks / workers.csv ids
        return out


@DELAYS.register("trace")
class Trace(DelayModel):
    """``trace:FILE``: replay measured pauses from a CSV of ``worker,iteration,seconds``.

    ``worker`` is 1-based (as in ``workers.csv``). Iterations past the end of a worker's trace
    wrap around to its first recorded iteration. ``gdcode run --record-delays FILE`` writes
    such a file from a run's measured compute times.
    """

    uses_compute = False

    def __init__(self, file: str, *, seed: int = 0, scale_with_load: bool = False) -> None:
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        _require(bool(file), "trace delay: write trace:FILE (a CSV of worker,iteration,seconds)")
        self.path = file
        self.spec = f"trace:{file}"
        self.table = read_trace(file)

    @classmethod
    def from_args(cls, text, *, seed=0, scale_with_load=False, n_workers=None):
        """The whole of ARGS is the file name (it may hold commas)."""
        model = cls(text, seed=seed, scale_with_load=scale_with_load)
        return model.bind_workers(n_workers) if n_workers is not None else model

    def _rows(self, worker: int) -> tuple[dict[int, float], np.ndarray]:
        rows = self.table.get(worker + 1)
        if rows is None:
            raise ValueError(f"trace delay {self.spec}: the trace has no rows for worker {worker + 1}")
        return rows

    def sample(self, rng, worker, iteration, compute):
        by_iteration, secs = self._rows(worker)
        return float(by_iteration.get(iteration, secs[(iteration - 1) % len(secs)]))

    def sample_bulk(self, rng, compute, first_iteration=1):
        draws, W = np.shape(compute)
        out = np.empty((draws, W))
        for w in range(W):
            by_it, secs = self._rows(w)
            out[:, w] = [by_it.get(t, secs[(t - 1) % len(secs)])
                         for t in range(first_iteration, first_iteration + draws)]
        return out

    def check_workers(self, n_workers: int) -> None:
        """ValueError unless the trace has rows for workers 1..n_workers."""
        missing = [w for w in range(1, n_workers + 1) if w not in self.table]
        if missing:
            raise ValueError(f"trace delay {self.spec}: the trace has no rows for worker(s) "
                             f"{', '.join(map(str, missing))}; it covers {sorted(self.table)}")

    def bind_workers(self, n_workers: int) -> Trace:
        """Check that the trace covers ``n_workers`` workers."""
        self.check_workers(n_workers)
        return self


@DELAYS.register("markov")
class Markov(DelayModel):
    """``markov:MEAN,FACTOR,P_ENTER,P_LEAVE[,SHIFT]``: slow spells that last (a two-state chain per worker).

    Each worker is, at each iteration, in a normal or a slow state; the states of a worker
    form a Markov chain that enters the slow state with probability P_ENTER per iteration
    and leaves it with probability P_LEAVE, started from its stationary distribution (slow
    with probability ``pi = P_ENTER / (P_ENTER + P_LEAVE)``). A pause is SHIFT seconds plus an
    exponential one of mean MEAN, multiplied by FACTOR while the worker is slow (SHIFT, the
    floor every pause has, defaults to 0: exponential pauses). Workers' chains are independent.

    The state sequence of a worker is a pure function of (seed, worker): it is drawn from
    the worker's own streams, one per block of :attr:`BLOCK` iterations, and cached, so
    :meth:`draw` gives the same pause for a (worker, iteration) whatever order iterations
    are asked in, whichever a scheme skips, and after a resume. The exponential part comes
    from the usual (seed, worker, iteration) stream.
    """

    uses_compute = False

    #: iterations of a worker's state sequence drawn at a time (from one stream per block)
    BLOCK = 4096

    def __init__(self, mean: float, factor: float, p_enter: float, p_leave: float, shift: float = 0.0, *,
                 seed: int = 0, scale_with_load: bool = False) -> None:
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        _require(_finite(mean) and mean > 0, f"markov delay: MEAN must be > 0 seconds, got {mean:g}")
        _require(_finite(factor) and factor >= 1, f"markov delay: FACTOR must be >= 1, got {factor:g}")
        for label, p in (("P_ENTER", p_enter), ("P_LEAVE", p_leave)):
            _require(_finite(p) and 0 <= p <= 1, f"markov delay: {label} must be a probability in [0, 1], got {p:g}")
        _require(p_enter + p_leave > 0, "markov delay: P_ENTER and P_LEAVE cannot both be 0 (the chain would "
                                        "have no stationary start)")
        _require(_finite(shift) and shift >= 0, f"markov delay: SHIFT must be >= 0 seconds, got {shift:g}")
        self.mean_pause, self.factor, self.p_enter, self.p_leave, self.shift = mean, factor, p_enter, p_leave, shift
        self.spec = f"markov:{mean:g},{factor:g},{p_enter:g},{p_leave:g}" + (f",{shift:g}" if shift else "")
        self._states: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ closed forms

    def stationary_fraction(self) -> float:
        """``pi = P_ENTER / (P_ENTER + P_LEAVE)``: the fraction of iterations a worker is slow."""
        return self.p_enter / (self.p_enter + self.p_leave)

    def mean(self) -> float:
        """Mean pause: ``SHIFT + MEAN (1 - pi + pi FACTOR)``."""
        pi = self.stationary_fraction()
        return self.shift + self.mean_pause * (1.0 - pi + pi * self.factor)

    def variance(self) -> float:
        """Variance of a pause: ``MEAN^2 (2 E[f^2] - E[f]^2)``, with ``f`` the state's
        multiplier (1 or FACTOR): ``E[f] = 1 - pi + pi FACTOR``, ``E[f^2] = 1 - pi + pi FACTOR^2``."""
        pi, m, F = self.stationary_fraction(), self.mean_pause, self.factor
        ef, ef2 = 1.0 - pi + pi * F, 1.0 - pi + pi * F * F
        return m * m * (2 * ef2 - ef * ef)

    def state_autocorrelation(self, lag: int = 1) -> float:
        """Correlation of a worker's slow indicator ``lag`` iterations apart: ``(1 - P_ENTER - P_LEAVE)^lag``."""
        return (1.0 - self.p_enter - self.p_leave) ** lag

    def autocorrelation(self, lag: int = 1) -> float:
        """Correlation of a worker's pauses ``lag >= 1`` iterations apart:
        ``MEAN^2 (FACTOR - 1)^2 pi (1 - pi) (1 - P_ENTER - P_LEAVE)^lag / variance``."""
        if lag == 0:
            return 1.0
        pi = self.stationary_fraction()
        cov = self.mean_pause ** 2 * (self.factor - 1) ** 2 * pi * (1 - pi)
        return cov * self.state_autocorrelation(lag) / self.variance()

    def mean_spell(self, slow: bool = True) -> float:
        """Mean length, in iterations, of a slow spell (``1 / P_LEAVE``) or a normal one (``1 / P_ENTER``)."""
        p = self.p_leave if slow else self.p_enter
        return math.inf if p == 0 else 1.0 / p

    # ------------------------------------------------------------------ states

    def states(self, worker: int, last: int) -> np.ndarray:
        """Whether worker ``worker`` (0-based) is slow at iterations ``1 .. last`` (bool array).

        The sequence is extended, block by block, from the worker's own streams and cached.
        """
        cached = self._states.get(worker)
        have = 0 if cached is None else cached.size
        if have < last:
            blocks = [cached] if cached is not None else []
            prev = None if cached is None else bool(cached[-1])
            for b in range(have // self.BLOCK, -(-last // self.BLOCK)):
                u = np.random.default_rng([self.seed, 0xDE1A, 0x3A4C, worker, b]).random(self.BLOCK)
                if prev is None:  # iteration 1: the stationary start
                    first = np.array([u[0] < self.stationary_fraction()])
                    block = np.concatenate([first, _advance(u[1:], first[0], self.p_enter, self.p_leave)])
                else:
                    block = _advance(u, prev, self.p_enter, self.p_leave)
                blocks.append(block)
                prev = bool(block[-1])
            cached = np.concatenate(blocks)
            self._states[worker] = cached
        assert cached is not None
        return cached[:last]

    def multiplier(self, worker: int, iteration: int) -> float:
        """FACTOR when the worker is slow at ``iteration``, else 1."""
        return self.factor if self.states(worker, iteration)[iteration - 1] else 1.0

    def sample(self, rng, worker, iteration, compute):
        return self.shift + float(rng.exponential(self.mean_pause)) * self.multiplier(worker, iteration)

    def sample_bulk(self, rng, compute, first_iteration=1):
        """Independent stationary chains, one per worker (column), drawn from ``rng``."""
        draws, W = np.shape(compute)
        u = rng.random((draws, W))
        first = u[0] < self.stationary_fraction()
        slow = np.concatenate([first[None, :], _advance(u[1:], first, self.p_enter, self.p_leave)])
        pauses = rng.exponential(self.mean_pause, (draws, W))
        return self.shift + np.where(slow, self.factor * pauses, pauses)


def _advance(u: np.ndarray, prev, p_enter: float, p_leave: float) -> np.ndarray:
    """States of a two-state chain driven by the uniforms ``u`` (along axis 0) from the state ``prev``.

    A normal worker turns slow when ``u < p_enter``; a slow one stays slow when ``u >= p_leave``.
    Vectorised: where both rules give the same next state the state is fixed whatever came
    before; elsewhere the chain either keeps (``u >= max``) or flips (``u < min``, only when
    ``p_enter + p_leave > 1``) its previous state, so each state is the last fixed state (or
    ``prev``) XOR the parity of the flips since.
    """
    u = np.asarray(u, dtype=float)
    if u.shape[0] == 0:
        return np.zeros(u.shape, dtype=bool)
    a = u < p_enter  # next state from normal
    b = u >= p_leave  # next state from slow
    fixed = a == b
    flip = a & ~b
    n = u.shape[0]
    idx = np.arange(n).reshape((n,) + (1,) * (u.ndim - 1))
    last = np.maximum.accumulate(np.where(fixed, idx, -1), axis=0)
    safe = np.maximum(last, 0)
    base = np.where(last >= 0, np.take_along_axis(a, safe, axis=0), np.asarray(prev, dtype=bool))
    flips = np.cumsum(flip, axis=0)
    since: np.ndarray = flips - np.where(last >= 0, np.take_along_axis(flips, safe, axis=0), 0)
    return base ^ (since % 2 == 1)


@DELAYS.register("correlated")
class Correlated(DelayModel):
    """``correlated:MEAN,CV,RHO[,GROUP]``: workers of a group (a host, a rack) slow down together.

    Workers are split into groups of GROUP consecutive workers (0-based worker ``w`` is in
    group ``w // GROUP``; GROUP 0, the default, puts every worker in one group). Worker ``w``
    pauses ``MEAN * G * L`` seconds at iteration ``t``, where ``G`` is its group's factor at
    ``t`` (shared by the group) and ``L`` its own, independent, both gamma-distributed with
    mean 1: ``G`` with variance ``x = RHO CV^2`` and ``L`` with variance
    ``y = CV^2 (1 - RHO) / (1 + RHO CV^2)``. Then a pause has mean MEAN and coefficient of
    variation CV, two workers of a group have correlation RHO in the same iteration, workers
    of different groups and different iterations are independent. ``correlated:MEAN,1,0`` is
    ``exp:MEAN``. The group factor is drawn from a (seed, group, iteration) stream, ``L``
    from the worker's (seed, worker, iteration) stream.
    """

    uses_compute = False

    def __init__(self, mean: float, cv: float, rho: float, group: int = 0, *, seed: int = 0,
                 scale_with_load: bool = False) -> None:
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        _require(_finite(mean) and mean > 0, f"correlated delay: MEAN must be > 0 seconds, got {mean:g}")
        _require(_finite(cv) and cv > 0, f"correlated delay: CV must be > 0, got {cv:g}")
        _require(_finite(rho) and 0 <= rho <= 1, f"correlated delay: RHO must be in [0, 1], got {rho:g}")
        _require(_finite(group) and int(group) == group and group >= 0,
                 f"correlated delay: GROUP must be a whole number >= 0 (0: all workers), got {group}")
        self.mean_pause, self.cv, self.rho, self.group = mean, cv, rho, int(group)
        self.spec = f"correlated:{mean:g},{cv:g},{rho:g}" + (f",{self.group}" if self.group else "")
        self.group_variance = rho * cv * cv
        self.worker_variance = cv * cv * (1.0 - rho) / (1.0 + self.group_variance)

    # ------------------------------------------------------------------ closed forms

    def mean(self) -> float:
        """Mean pause: MEAN."""
        return self.mean_pause

    def variance(self) -> float:
        """Variance of a pause: ``(MEAN CV)^2``."""
        return (self.mean_pause * self.cv) ** 2

    def correlation(self, worker_a: int, worker_b: int) -> float:
        """Correlation of two workers' pauses in the same iteration: 1 for the same worker, RHO
        within a group, 0 across groups."""
        if worker_a == worker_b:
            return 1.0
        return self.rho if self.group_of(worker_a) == self.group_of(worker_b) else 0.0

    def group_of(self, worker: int) -> int:
        """The group of worker ``worker`` (0-based)."""
        return worker // self.group if self.group else 0

    # ------------------------------------------------------------------ drawing

    @staticmethod
    def _gamma(rng: np.random.Generator, variance: float, size=None):
        """Gamma draws with mean 1 and ``variance`` (1 when the variance is 0)."""
        if variance <= 0:
            return 1.0 if size is None else np.ones(size)
        return rng.gamma(1.0 / variance, variance, size)

    @functools.cached_property
    def _group_reseeded(self) -> Reseeded:
        """The reused generator of the group streams (created at the first draw)."""
        from gdcode.streams import Reseeded  # lazily: the launcher imports this module

        return Reseeded()

    def group_factor(self, group: int, iteration: int) -> float:
        """The factor ``G`` of ``group`` at ``iteration``, from the (seed, group, iteration) stream
        (``default_rng([seed, 0xDE1A, 0xC0AA, group, iteration])``'s numbers, in a reused generator
        of its own, not the worker streams' one, so that a :meth:`sample` -- a subclass's, say --
        may still draw from its worker's stream after asking for this one)."""
        stream = self._group_reseeded([self.seed, 0xDE1A, 0xC0AA, group, iteration])
        return float(self._gamma(stream, self.group_variance))

    def sample(self, rng, worker, iteration, compute):
        own = float(self._gamma(rng, self.worker_variance))
        return self.mean_pause * self.group_factor(self.group_of(worker), iteration) * own

    def sample_bulk(self, rng, compute, first_iteration=1):
        draws, W = np.shape(compute)
        groups = np.array([self.group_of(w) for w in range(W)])
        shared = self._gamma(rng, self.group_variance, (draws, int(groups.max()) + 1))
        own = self._gamma(rng, self.worker_variance, (draws, W))
        return self.mean_pause * shared[:, groups] * own

    def describe(self):
        out = super().describe()
        out["group_size"] = self.group or "all"
        return out


def read_trace(path: str) -> dict[int, tuple[dict[int, float], np.ndarray]]:
    """Read a delay trace CSV into ``{worker: ({iteration: seconds}, seconds in iteration order)}``.

    Raises
    ------
    ValueError
        When the file cannot be read, is empty, or has a malformed line.
    """
    import csv

    table: dict[int, list[tuple[int, float]]] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            for lineno, row in enumerate(reader, 1):
                if not row or row[0].strip().startswith("#"):
                    continue
                if lineno == 1 and row[0].strip() == "worker":
                    continue
                if len(row) != 3:
                    raise ValueError(f"{path}, line {lineno}: expected worker,iteration,seconds, got {row}")
                try:
                    w, it, sec = int(row[0]), int(row[1]), float(row[2])
                except ValueError:
                    raise ValueError(f"{path}, line {lineno}: worker and iteration must be integers and "
                                     f"seconds a number, got {row}") from None
                if w < 1 or it < 1 or not (math.isfinite(sec) and sec >= 0):
                    raise ValueError(f"{path}, line {lineno}: worker >= 1, iteration >= 1 and finite seconds "
                                     f">= 0 are required, got {row}")
                table.setdefault(w, []).append((it, sec))
    except OSError as exc:
        raise ValueError(f"cannot read the trace {path} ({exc.strerror})") from None
    if not table:
        raise ValueError(f"the trace {path} is empty")
    out = {}
    for w, rows in table.items():
        rows.sort()
        out[w] = (dict(rows), np.array([r[1] for r in rows]))
    return out


def names() -> list[str]:
    """The delay model names (built-ins and entry-point plug-ins), sorted."""
    return DELAYS.names()


def forms() -> list[str]:
    """How each known delay model is written (``exp:MEAN``, ...), built-ins and entry points."""
    out = []
    for name in DELAYS.names():
        try:
            cls = DELAYS.get(name)
            out.append(cls.form() if isinstance(cls, type) and issubclass(cls, DelayModel) else name)
        except ValueError:
            out.append(name)
    return out


def parse(spec: str, seed: int = 0, scale_with_load: bool = False, n_workers: int | None = None) -> DelayModel:
    """The delay model of ``spec``: ``NAME[:ARGS]`` or ``MODULE:CLASS[:ARGS]``.

    The head before the first colon is looked up in :data:`DELAYS` (built-ins and entry
    points); otherwise the first two colon-separated parts are an import path and the rest
    is ARGS. The model's :meth:`~DelayModel.from_args` reads ARGS.

    Parameters
    ----------
    spec : str
        The SPEC, e.g. ``exp:0.5`` or ``mypackage.delays:Gamma:2,0.1``.
    seed : int
        The run's seed.
    scale_with_load : bool
        Multiply each pause by the worker's load.
    n_workers : int, optional
        Bind the model to this many workers (``persistent`` chooses its slow workers,
        ``trace`` checks that it covers them).

    Raises
    ------
    ValueError
        For an unknown or malformed spec, naming the allowed forms.
    """
    spec = str(spec)
    head, _, rest = spec.partition(":")
    if DELAYS.knows(head):
        name, args = head, rest
    else:
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"unknown delay model {spec!r}; known: {', '.join(forms())}; "
                             f"a plug-in is given as {PLUGIN_FORM}")
        name, args = f"{parts[0]}:{parts[1]}", (parts[2] if len(parts) > 2 else "")
        try:
            DELAYS.get(name)
        except ValueError as exc:
            raise ValueError(f"delay {spec!r}: {head!r} is not a known delay model ({', '.join(forms())}), "
                             f"nor is {name!r} a plug-in {PLUGIN_FORM}: {exc}") from None
    cls = DELAYS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, DelayModel)):
        raise ValueError(f"the delay model {name!r} is not a gdcode.delays.DelayModel subclass")
    model = cls.from_args(args, seed=seed, scale_with_load=scale_with_load, n_workers=n_workers)
    if not model.spec:
        model.spec = f"{name}:{args}" if args else name
    return model


def _label(cls: type) -> str:
    return f"{getattr(cls, 'name', '') or cls.__name__} delay"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except TypeError:
        return False


def _annotations(cls: type) -> dict[str, object]:
    """The constructor's annotations, resolved where they can be."""
    try:
        return typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - unresolvable annotations: use them as written
        return {}


def _convert(cls: type, param: inspect.Parameter, annotation: object, text: str):
    """``text`` converted by ``annotation`` (float, int or str), for the parameter ``param``."""
    key = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    if annotation is inspect.Parameter.empty:
        key = "str"
    kind = _CONVERTERS.get(key) if isinstance(key, str) else None
    what = param.name.upper()
    if kind is None:
        raise ValueError(f"{_label(cls)}: the parameter {param.name} is annotated {annotation!r}; "
                         "from_args converts float, int or str (override from_args for others)")
    if kind is str:
        return text
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{_label(cls)}: {what} must be a number, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{_label(cls)}: {what} must be a finite number, got {text.strip()!r}")
    if kind is int:
        if not value.is_integer():
            raise ValueError(f"{_label(cls)}: {what} must be a whole number, got {text.strip()!r}")
        return int(value)
    return value
