"""Straggler delay models: an injected pause per worker per iteration.

``parse(spec)`` turns a delay SPEC (docs/plugins.md) into a model whose
``draw(worker, iteration)`` is a pure function of (seed, worker, iteration): every scheme in a
comparison meets the same delays, whichever iterations a worker skips or a run resumes from.

A SPEC is ``NAME[:ARGS]`` for a model of the registry :data:`DELAYS` (``none``,
``exp:MEAN``, ``shifted-exp:SHIFT,MEAN``, ``pareto:SCALE,SHAPE``,
``persistent:K,FACTOR[,BASE]``, ``trace:FILE``, or the name of an entry point of the group
``gdcode.delays``), or ``MODULE:CLASS[:ARGS]`` for a plug-in given by its import path. A model
is a :class:`DelayModel` subclass; its classmethod :meth:`DelayModel.from_args` reads ARGS
(by default: comma-separated values for the constructor's positional parameters, converted
by their annotations) and its constructor checks them. For the simulator every model also
draws many pauses at once, :meth:`DelayModel.sample_bulk`.
"""

from __future__ import annotations

import inspect
import math
import typing

import numpy as np

from gdcode.registry import Registry

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
    """

    name: str = ""
    spec: str = ""

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

    def rng(self, worker: int, iteration: int) -> np.random.Generator:
        """The stream for one (worker, iteration)."""
        return np.random.default_rng([self.seed, 0xDE1A, worker, iteration])

    def sample(self, rng: np.random.Generator, worker: int, iteration: int, compute: float) -> float:
        """One pause in seconds, before load scaling, drawn from ``rng``."""
        raise NotImplementedError

    def draw(self, worker: int, iteration: int, load: float = 1.0, compute: float = 0.0) -> float:
        """The pause, in seconds, of worker ``worker`` (0-based) at ``iteration`` (1-based).

        ``compute`` is the worker's measured compute time this iteration (used by models that
        slow a worker down by a factor).
        """
        pause = self.sample(self.rng(worker, iteration), worker, iteration, compute)
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

    def sample(self, rng, worker, iteration, compute):
        return 0.0

    def draw(self, worker, iteration, load=1.0, compute=0.0):
        return 0.0

    def sample_bulk(self, rng, compute, first_iteration=1):
        return np.zeros(np.shape(compute))


@DELAYS.register("exp")
class Exponential(DelayModel):
    """``exp:MEAN``: an exponential pause with mean MEAN seconds (ErasureHead's model)."""

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
    if head in DELAYS.names():
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
