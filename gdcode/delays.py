"""Straggler delay models: an injected pause per worker per iteration.

``parse(spec)`` turns a delay SPEC (DESIGN section 4) into a model whose
``draw(worker, iteration)`` is a pure function of (seed, worker, iteration): every scheme in a
comparison meets the same delays, whichever iterations a worker skips or a run resumes from.
"""

from __future__ import annotations

import numpy as np

from gdcode.errors import ConfigError


class DelayModel:
    """Base class: :meth:`sample` draws one pause from a (worker, iteration) stream.

    Parameters
    ----------
    seed : int
        The run's seed; every (worker, iteration) gets its own stream derived from it.
    scale_with_load : bool
        Multiply each pause by the worker's load (the fraction of the partitions it holds),
        as in Lee et al.'s model, where a job of size ``l`` takes ``l (shift + Exp)``.
    """

    spec = "none"

    def __init__(self, seed: int = 0, scale_with_load: bool = False) -> None:
        self.seed = int(seed)
        self.scale_with_load = scale_with_load

    def rng(self, worker: int, iteration: int) -> np.random.Generator:
        """The stream for one (worker, iteration)."""
        return np.random.default_rng([self.seed, 0xDE1A, worker, iteration])

    def sample(self, rng: np.random.Generator, worker: int, iteration: int, compute: float) -> float:
        raise NotImplementedError

    def draw(self, worker: int, iteration: int, load: float = 1.0, compute: float = 0.0) -> float:
        """The pause, in seconds, of worker ``worker`` (0-based) at ``iteration`` (1-based).

        ``compute`` is the worker's measured compute time this iteration (used by models that
        slow a worker down by a factor).
        """
        pause = self.sample(self.rng(worker, iteration), worker, iteration, compute)
        return pause * load if self.scale_with_load else pause

    def describe(self) -> dict:
        """What ``metadata.json`` records about the model."""
        return {"spec": self.spec, "scale_with_load": self.scale_with_load}


class NoDelay(DelayModel):
    """``none``: no injected pause."""

    def sample(self, rng, worker, iteration, compute):
        return 0.0

    def draw(self, worker, iteration, load=1.0, compute=0.0):
        return 0.0


class Exponential(DelayModel):
    """``exp:MEAN``: an exponential pause with mean MEAN seconds (ErasureHead's model)."""

    def __init__(self, mean: float, **kw) -> None:
        super().__init__(**kw)
        self.mean = mean
        self.spec = f"exp:{mean:g}"

    def sample(self, rng, worker, iteration, compute):
        return float(rng.exponential(self.mean))


class ShiftedExponential(DelayModel):
    """``shifted-exp:SHIFT,MEAN``: SHIFT + Exp(MEAN) seconds (Lee et al. 2018; with
    ``--delay-scale-with-load``, a worker with load l pauses ``l (SHIFT + Exp(MEAN))``)."""

    def __init__(self, shift: float, mean: float, **kw) -> None:
        super().__init__(**kw)
        self.shift, self.mean = shift, mean
        self.spec = f"shifted-exp:{shift:g},{mean:g}"

    def sample(self, rng, worker, iteration, compute):
        return self.shift + float(rng.exponential(self.mean))


class Pareto(DelayModel):
    """``pareto:SCALE,SHAPE``: a heavy-tailed pause with ``P(T > t) = (SCALE/t)^SHAPE`` for t >= SCALE."""

    def __init__(self, scale: float, shape: float, **kw) -> None:
        super().__init__(**kw)
        self.scale, self.shape = scale, shape
        self.spec = f"pareto:{scale:g},{shape:g}"

    def sample(self, rng, worker, iteration, compute):
        return self.scale * (1.0 + float(rng.pareto(self.shape)))


class Persistent(DelayModel):
    """``persistent:K,FACTOR[,BASE]``: K fixed workers run FACTOR times slower, every iteration.

    Every worker pauses BASE seconds (default 0) after its compute; the K slow workers (a
    seeded choice, the same for every scheme, recorded in ``metadata.json``) pause so that
    their whole iteration, compute plus BASE, takes FACTOR times as long. This is the
    persistent bimodal pattern Tandon et al. measured on t2.micro instances.
    """

    def __init__(self, k: int, factor: float, base: float = 0.0, **kw) -> None:
        super().__init__(**kw)
        self.k, self.factor, self.base = k, factor, base
        self.spec = f"persistent:{k},{factor:g}" + (f",{base:g}" if base else "")
        self.n_workers: int | None = None  # set by bind_workers

    def slow_workers(self, n_workers: int) -> list[int]:
        """The K slow workers (0-based) among ``n_workers``."""
        if self.k > n_workers:
            raise ConfigError(f"--delay {self.spec}: K = {self.k} slow workers, but there are only {n_workers}")
        rng = np.random.default_rng([self.seed, 0xDE1A, 0x510])
        return sorted(int(i) for i in rng.choice(n_workers, size=self.k, replace=False))

    def sample(self, rng, worker, iteration, compute):
        if self.n_workers is None:
            raise RuntimeError("persistent delays need the number of workers (bind_workers)")
        if worker in self._slow:
            return self.factor * (compute + self.base) - compute
        return self.base

    def bind_workers(self, n_workers: int) -> Persistent:
        self.n_workers = n_workers
        self._slow = set(self.slow_workers(n_workers))
        return self

    def describe(self):
        out = super().describe()
        if self.n_workers is not None:
            out["slow_workers"] = [w + 1 for w in sorted(self._slow)]  # as ranks / workers.csv ids
        return out


class Trace(DelayModel):
    """``trace:FILE``: replay measured pauses from a CSV of ``worker,iteration,seconds``.

    ``worker`` is 1-based (as in ``workers.csv``). Iterations past the end of a worker's trace
    wrap around to its first recorded iteration. ``--record-delays FILE`` writes such a file
    from a run's measured compute times.
    """

    def __init__(self, path: str, **kw) -> None:
        super().__init__(**kw)
        self.path = path
        self.spec = f"trace:{path}"
        self.table = read_trace(path)

    def sample(self, rng, worker, iteration, compute):
        rows = self.table.get(worker + 1)
        if rows is None:
            raise ConfigError(f"--delay {self.spec}: the trace has no rows for worker {worker + 1}")
        by_iteration, secs = rows
        return float(by_iteration.get(iteration, secs[(iteration - 1) % len(secs)]))

    def check_workers(self, n_workers: int) -> None:
        missing = [w for w in range(1, n_workers + 1) if w not in self.table]
        if missing:
            raise ConfigError(f"--delay {self.spec}: the trace has no rows for worker(s) "
                              f"{', '.join(map(str, missing))}; it covers {sorted(self.table)}")


def read_trace(path: str) -> dict[int, tuple[dict[int, float], np.ndarray]]:
    """Read a delay trace CSV into ``{worker: ({iteration: seconds}, seconds in iteration order)}``."""
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
                    raise ConfigError(f"{path}, line {lineno}: expected worker,iteration,seconds, got {row}")
                try:
                    w, it, sec = int(row[0]), int(row[1]), float(row[2])
                except ValueError:
                    raise ConfigError(f"{path}, line {lineno}: worker and iteration must be integers and "
                                      f"seconds a number, got {row}") from None
                if w < 1 or it < 1 or not sec >= 0:
                    raise ConfigError(f"{path}, line {lineno}: worker >= 1, iteration >= 1 and seconds >= 0 "
                                      f"are required, got {row}")
                table.setdefault(w, []).append((it, sec))
    except OSError as exc:
        raise ConfigError(f"--delay trace:{path}: cannot read the trace ({exc.strerror})") from None
    if not table:
        raise ConfigError(f"--delay trace:{path}: the trace is empty")
    out = {}
    for w, rows in table.items():
        rows.sort()
        out[w] = (dict(rows), np.array([r[1] for r in rows]))
    return out


def _floats(spec: str, body: str, counts: tuple[int, ...], form: str) -> list[float]:
    try:
        values = [float(x) for x in body.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts or not all(np.isfinite(values)):
        raise ConfigError(f"--delay {spec!r}: write {form}")
    return values


FORMS = ("none", "exp:MEAN", "shifted-exp:SHIFT,MEAN", "pareto:SCALE,SHAPE", "persistent:K,FACTOR[,BASE]",
         "trace:FILE")


def parse(spec: str, seed: int = 0, scale_with_load: bool = False, n_workers: int | None = None) -> DelayModel:
    """The delay model of ``spec`` (one of :data:`FORMS`).

    Raises
    ------
    ConfigError
        For an unknown or malformed spec, naming the allowed forms.
    """
    kind, _, body = spec.partition(":")
    kw = {"seed": seed, "scale_with_load": scale_with_load}
    if spec == "none":
        return NoDelay(**kw)
    if kind == "exp":
        (mean,) = _floats(spec, body, (1,), "exp:MEAN with MEAN > 0 seconds")
        if mean <= 0:
            raise ConfigError(f"--delay {spec!r}: MEAN must be positive")
        return Exponential(mean, **kw)
    if kind == "shifted-exp":
        shift, mean = _floats(spec, body, (2,), "shifted-exp:SHIFT,MEAN with SHIFT >= 0 and MEAN > 0")
        if shift < 0 or mean <= 0:
            raise ConfigError(f"--delay {spec!r}: SHIFT must be >= 0 and MEAN > 0")
        return ShiftedExponential(shift, mean, **kw)
    if kind == "pareto":
        scale, shape = _floats(spec, body, (2,), "pareto:SCALE,SHAPE with SCALE > 0 and SHAPE > 0")
        if scale <= 0 or shape <= 0:
            raise ConfigError(f"--delay {spec!r}: SCALE and SHAPE must be positive")
        return Pareto(scale, shape, **kw)
    if kind == "persistent":
        vals = _floats(spec, body, (2, 3), "persistent:K,FACTOR[,BASE] with K >= 0 workers, FACTOR >= 1, BASE >= 0")
        k, factor, base = int(vals[0]), vals[1], (vals[2] if len(vals) == 3 else 0.0)
        if k != vals[0] or k < 0 or factor < 1 or base < 0:
            raise ConfigError(f"--delay {spec!r}: K must be a whole number >= 0, FACTOR >= 1 and BASE >= 0")
        model = Persistent(k, factor, base, **kw)
        return model.bind_workers(n_workers) if n_workers is not None else model
    if kind == "trace":
        if not body:
            raise ConfigError(f"--delay {spec!r}: write trace:FILE (a CSV of worker,iteration,seconds)")
        model = Trace(body, **kw)
        if n_workers is not None:
            model.check_workers(n_workers)
        return model
    raise ConfigError(f"--delay {spec!r} is not a known delay model; use one of: {', '.join(FORMS)}")
