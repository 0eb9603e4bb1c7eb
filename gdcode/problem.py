"""A run's parts, built once from its options, without MPI: the one set-up every process uses.

:func:`build` turns :class:`~gdcode.options.RunOptions` into a :class:`Problem`: the dataset
source, the model, the L2 coefficient, the seeded initial point, the delay model, the code
(coded mode, with its partition sizes bound), the step-size schedule and a factory of fresh
optimisers. :func:`check` builds it and performs every check that needs no MPI (the
model/dataset task, rows per partition, the code's decodes, writable output paths), so that
bad input fails before any job starts.

The launcher (``gdcode run``), every rank of the job, the simulator's training replay, the
experiments and the benchmarks all build their parts here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gdcode import codes, delays, models, optim
from gdcode.data import DataSource, open_dataset, parse_dataset_spec, partition_bounds
from gdcode.errors import ConfigError, OptionError
from gdcode.kernels.reference import issparse
from gdcode.modes import Mode
from gdcode.modes import get as get_mode
from gdcode.options import RunOptions, code_options, key_values
from gdcode.streams import Reseeded
from gdcode.waiting import WaitRule


@contextlib.contextmanager
def naming(option: str, value: Any) -> Iterator[None]:
    """Turn a library ``ValueError`` raised inside the block into an :class:`OptionError` of ``option``."""
    try:
        yield
    except OptionError:
        raise
    except ValueError as exc:
        raise OptionError(option, value, str(exc)) from None


@dataclass
class Problem:
    """Everything a run trains, built once per process from its options.

    Attributes
    ----------
    options : RunOptions
        The resolved options.
    mode : gdcode.modes.Mode
        The training mode.
    source : gdcode.data.DataSource
        The dataset; workers read only their rows from it.
    model : gdcode.models.Model
        The objective.
    l2 : float
        The L2 coefficient (``l2``, default 1/n).
    w0 : numpy.ndarray
        The seeded initial point, the same for every scheme and mode.
    delay : gdcode.delays.DelayModel
        The injected straggler pauses.
    schedule : gdcode.optim.Schedule
        The step sizes.
    code : gdcode.codes.GradientCode or None
        The gradient code (coded mode only), its partition sizes bound to the dataset.
    """

    options: RunOptions
    mode: Mode
    source: DataSource
    model: models.Model
    l2: float
    w0: np.ndarray
    delay: delays.DelayModel
    schedule: optim.Schedule
    code: codes.GradientCode | None

    @property
    def n_params(self) -> int:
        return int(self.w0.size)

    @property
    def n_train(self) -> int:
        return int(self.source.n_train)

    @property
    def n_partitions(self) -> int:
        """Partitions of the training rows: the code's, or one per worker outside coded mode."""
        return self.code.n_partitions if self.code is not None else self.options.workers

    def partition_bounds(self) -> np.ndarray:
        """Row bounds of the partitions (:func:`gdcode.data.partition_bounds`; computed once, read-only)."""
        return self._partition_bounds

    def batch_sizes(self) -> np.ndarray | None:
        """Coded mode with ``batch_size``: the rows each partition contributes to an iteration's
        minibatch, the same fraction ``batch_size / n_train`` of every partition (at least one row);
        None for the whole partitions. Computed once, read-only."""
        return self._batch_sizes

    # Computed at the first use and kept: the options are frozen, and nothing replaces the
    # dataset or the code of a built problem. batch_rows runs once per partition per iteration.
    @functools.cached_property
    def _partition_bounds(self) -> np.ndarray:
        bounds = partition_bounds(self.n_train, self.n_partitions)
        bounds.setflags(write=False)
        return bounds

    @functools.cached_property
    def _partition_rows(self) -> np.ndarray:
        sizes = np.diff(self._partition_bounds)
        sizes.setflags(write=False)
        return sizes

    @functools.cached_property
    def _batch_sizes(self) -> np.ndarray | None:
        B = self.options.batch_size
        if self.code is None or B == 0 or B >= self.n_train:
            return None
        sizes = self._partition_rows
        batch = np.clip(np.rint(sizes * (B / self.n_train)).astype(np.int64), 1, sizes)
        batch.setflags(write=False)
        return batch

    @functools.cached_property
    def _batch_stream(self) -> Reseeded:
        """The reused generator of the minibatch streams."""
        return Reseeded()

    def batch_rows(self, partition: int, iteration: int, repeat: int = 0) -> np.ndarray:
        """The rows (indices within ``partition``, sorted) of iteration ``iteration``'s minibatch.

        A pure function of (seed, partition, iteration): every worker holding the partition takes
        the same rows, so an exact code decodes exactly the minibatch gradient. ``repeat`` > 0 gives
        the further minibatches a kbatch worker computes in one iteration. The problem's one
        reused generator serves every call: do not call it from two threads at once.
        """
        sizes = self._batch_sizes
        assert sizes is not None, "batch_rows needs coded mode with batch_size"
        n_rows = int(self._partition_rows[partition])
        key = [self.options.seed, 0xBA7C4, partition, iteration] + ([repeat] if repeat else [])
        rng = self._batch_stream(key)  # numpy.random.default_rng(key)'s numbers
        return np.sort(rng.choice(n_rows, size=int(sizes[partition]), replace=False))

    @property
    def rows_per_iteration(self) -> int:
        """Rows one iteration's gradient sums over: the minibatch, or every training row."""
        sizes = self.batch_sizes()
        return self.n_train if sizes is None else int(sizes.sum())

    def rows(self, start: int, stop: int) -> tuple[Any, np.ndarray]:
        """Training rows ``start:stop``, with the intercept column when ``intercept``."""
        X, y = self.source.train_rows(start, stop)
        return self._features(X), y

    def train_set(self) -> tuple[Any, np.ndarray]:
        """Every training row (the coordinator's evaluation copy)."""
        return self.rows(0, self.n_train)

    def test_set(self) -> tuple[Any, np.ndarray]:
        """The held-out rows."""
        X, y = self.source.test_set()
        return self._features(X), y

    def _features(self, X: Any) -> Any:
        if issparse(X):
            import scipy.sparse as sp

            if self.options.intercept:
                X = sp.hstack([X, np.ones((X.shape[0], 1), dtype=X.dtype)], format="csr")
            return X.tocsr()
        X = np.ascontiguousarray(X)
        if self.options.intercept:
            X = np.ascontiguousarray(np.hstack([X, np.ones((X.shape[0], 1), dtype=X.dtype)]))
        return X

    def optimizer(self) -> optim.Optimizer:
        """A fresh optimiser (``update``) at ``w0`` with the run's schedule."""
        return make_optimizer(self.options, self.w0, self.schedule)


def make_optimizer(options: RunOptions, w0: np.ndarray, schedule: optim.Schedule) -> optim.Optimizer:
    """The update rule ``options.update`` at ``w0``; it gets the run options its keywords name (``momentum``)."""
    own = key_values(options, "update_options")
    with naming("update_options" if own else "update", options.update_options if own else options.update):
        kwargs = {**optim.rule_options(options.update, options.to_dict()), **own}
        return optim.make(options.update, w0, schedule, **kwargs)


def check_wait(options: RunOptions, code: codes.GradientCode) -> None:
    """OptionError unless ``--wait`` parses, an adaptive one has a code that decodes from any set of
    replies, and ``--min-replies`` is at most W."""
    with naming("wait", options.wait):
        rule = WaitRule.parse(options.wait)
    if rule.adaptive and not code.decodes_any_set:
        raise OptionError("wait", options.wait, f"needs a code that decodes from any set of replies (ignore or "
                                                f"an approximate code), not scheme {options.scheme}")
    if options.min_replies > options.workers:
        raise OptionError("min_replies", options.min_replies, f"must be at most W = {options.workers}")


def build_code(options: RunOptions, n_train: int | None = None) -> codes.GradientCode:
    """The run's code (identical on every rank: its randomness comes from the seed).

    With ``n_train`` the partition sizes of that many training rows are bound to it.

    Raises
    ------
    OptionError
        Naming ``scheme``, ``collect`` or ``code_options`` when the code cannot be built.
    """
    if not options.stragglers < options.workers:
        raise OptionError("stragglers", options.stragglers, f"must satisfy 0 <= S < W (W = {options.workers})")
    if options.collect is not None and options.collect > options.workers:
        raise OptionError("collect", options.collect, f"must be between 1 and W = {options.workers}")
    with naming("scheme", options.scheme):
        accepted = codes.accepted_options(options.scheme)
    opts = code_options(options)
    if "collect" in opts and "collect" not in accepted:
        raise OptionError("collect", options.collect, f"applies to approximate codes; scheme {options.scheme} "
                                                      "does not take it")
    unknown = sorted(set(opts) - set(accepted) - {"collect"})
    if unknown:
        takes = ", ".join(sorted(accepted)) or "no options"
        raise OptionError("code_options", options.code_options, f"scheme {options.scheme} takes {takes}, not "
                                                                f"{', '.join(unknown)}")
    with naming("scheme", options.scheme):
        code = codes.build(options.scheme, options.workers, options.stragglers, options.seed, **opts)
        if n_train is not None:
            code.bind_partition_sizes(np.diff(partition_bounds(n_train, code.n_partitions)))
    return code


def initial_point(options: RunOptions, model: models.Model, n_cols: int, n_classes: int,
                  n_params: int) -> np.ndarray:
    """The run's starting point: ``init`` (``zeros``, ``normal:STD`` drawn from the seed's stream,
    or a ``.npy`` file), else the model's own (a model may define ``initial_point(n_cols, n_classes,
    seed)``), else ``0.01 N(0, I)`` from the seed (:func:`gdcode.optim.initial_point`).

    Raises
    ------
    OptionError
        Naming ``init`` for a malformed spec, a file that does not load, a wrong length or a
        value that is not finite.
    """
    spec = options.init
    if spec is None:
        own = getattr(model, "initial_point", None)
        w0 = own(n_cols, n_classes, options.seed) if callable(own) else optim.initial_point(n_params, options.seed)
    elif spec == "zeros":
        w0 = np.zeros(n_params)
    elif spec.startswith("normal:"):
        try:
            std = float(spec[len("normal:"):])
        except ValueError:
            std = float("nan")
        if not (std >= 0 and np.isfinite(std)):
            raise OptionError("init", spec, "write normal:STD with a finite STD >= 0")
        w0 = optim.initial_point(n_params, options.seed, scale=std)
    elif spec.endswith(".npy"):
        try:
            w0 = np.asarray(np.load(spec, allow_pickle=False), dtype=np.float64).reshape(-1)
        except (OSError, ValueError) as exc:
            raise OptionError("init", spec, f"cannot be loaded as a numpy array ({exc})") from None
    else:
        raise OptionError("init", spec, "write zeros, normal:STD or the path of a FILE.npy")
    if w0.size != n_params:
        raise OptionError("init", spec, f"has {w0.size} values; model {options.model} on this dataset has "
                                        f"{n_params} parameters")
    if not np.all(np.isfinite(w0)):
        raise OptionError("init", spec, "holds values that are not finite")
    return np.ascontiguousarray(w0, dtype=np.float64)


def build_delay(options: RunOptions) -> delays.DelayModel:
    """The run's delay model (``delay``, ``delay_scale_with_load``, ``seed``, bound to ``workers``)."""
    with naming("delay", options.delay):
        return delays.parse(options.delay, seed=options.seed, scale_with_load=options.delay_scale_with_load,
                            n_workers=options.workers)


def build(options: RunOptions) -> Problem:
    """The run's parts, built once (no numerical check of the code, no file system checks).

    Raises
    ------
    OptionError
        Naming the option whose value cannot be built.
    """
    mode = get_mode(options.mode)
    own = key_values(options, "model_options")
    with naming("model_options" if own else "model", options.model_options if own else options.model):
        model = models.get(options.model, **{**models.model_options(options.model, options.to_dict()), **own})
    tasks = model.tasks  # a model of several tasks takes the dataset's (a bundled set its natural one)
    with naming("dataset", options.dataset):
        parse_dataset_spec(options.dataset)
        source = open_dataset(options.dataset, seed=options.seed, test_fraction=options.test_fraction,
                              task=model.task if len(tasks) == 1 else None)
    if len(tasks) > 1 and source.task in tasks:
        model.bind_task(source.task)
    if model.task != source.task and not (model.task == "regression" and source.task == "binary"):
        raise OptionError("model", options.model, f"needs a {' or '.join(tasks)} dataset; {options.dataset} is "
                                                  f"{source.task}")
    n_cols = source.n_cols + (1 if options.intercept else 0)
    with naming("model", options.model):
        n_params = model.n_params(n_cols, source.n_classes)
    w0 = initial_point(options, model, n_cols, source.n_classes, n_params)
    l2 = 1.0 / source.n_train if options.l2 is None else options.l2
    delay = build_delay(options)
    with naming("lr_schedule", options.lr_schedule):
        schedule = optim.Schedule(options.lr, options.lr_schedule, options.lr_step_every, options.lr_decay)
    code = None
    if mode.coded:
        code = build_code(options)
        if source.n_train < code.n_partitions:
            raise OptionError("dataset", options.dataset, f"has {source.n_train} training rows, fewer than the "
                                                          f"{code.n_partitions} partitions of scheme "
                                                          f"{options.scheme}; use more rows or fewer workers")
        with naming("scheme", options.scheme):
            code.bind_partition_sizes(np.diff(partition_bounds(source.n_train, code.n_partitions)))
        if code.repeats and (options.batch_size == 0 or options.batch_size >= source.n_train):
            raise OptionError("batch_size", options.batch_size, f"scheme {options.scheme} computes minibatch "
                                                                "gradients: give a batch size below the training rows")
        check_wait(options, code)
    elif source.n_train < options.workers:
        raise OptionError("dataset", options.dataset, f"has {source.n_train} training rows, fewer than the "
                                                      f"{options.workers} workers; use more rows or fewer workers")
    problem = Problem(options=options, mode=mode, source=source, model=model, l2=l2, w0=w0, delay=delay,
                      schedule=schedule, code=code)
    batches = problem.batch_sizes()
    if code is not None and batches is not None:  # a code's weights follow the rows each partition gives
        with naming("scheme", options.scheme):
            code.bind_partition_sizes(batches)
    mode.check(options, model)
    with naming("update", options.update):
        problem.optimizer()
    return problem


def check(options: RunOptions) -> Problem:
    """:func:`build`, then every other check that needs no MPI; the built problem.

    Beyond what :func:`build` checks: every value of a prepared dataset (a streaming pass of
    bounded memory), the code's decodes are numerically usable (exact codes decode to the exact
    gradient sum), ``out`` is a writable directory (it is created) and ``record_delays`` can be
    written.

    Raises
    ------
    OptionError
        Naming the option to change.
    """
    problem = build(options)
    check_memory(problem, one_host="-f" not in os.environ.get("MPIEXEC_ARGS", "").split()
                 and "--hostfile" not in os.environ.get("MPIEXEC_ARGS", ""))
    validate = getattr(problem.source, "validate", None)
    if validate is not None:
        with naming("dataset", options.dataset):
            validate()
    if problem.code is not None:
        with naming("scheme", options.scheme):
            codes.check_usable(problem.code)
    check_writable_dir(options.out, "out")
    if options.record_delays:
        check_writable_file(options.record_delays, "record_delays")
    return problem


def memory_estimate(problem: Problem) -> dict[str, int]:
    """Bytes each process of the run will hold, estimated from the dataset's size and the model's.

    Rank 0 keeps every training and held-out row (to evaluate) and a receive buffer per
    worker message; a worker keeps the rows of its partitions (its code's load) and a few
    parameter vectors. Returns ``{"coordinator": ..., "worker": ... (the largest), "total": ...}``.
    """
    opts, src = problem.options, problem.source
    row = src.bytes_per_row()
    vector = 8 * problem.n_params
    W = opts.workers
    messages = problem.code.n_messages if problem.code is not None else 1
    load = float(np.max(problem.code.load())) if problem.code is not None else 1.0 / W
    coordinator = row * (src.n_train + src.n_test) + vector * (W * messages + 8)
    worker = row * load * src.n_train + vector * 8
    return {"coordinator": int(coordinator), "worker": int(worker), "total": int(coordinator + W * worker)}


def available_memory() -> int | None:
    """``MemAvailable`` of this machine in bytes (Linux), or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_memory(problem: Problem, available: int | None = None, one_host: bool = True) -> None:
    """Refuse a run whose estimated memory (:func:`memory_estimate`) exceeds what is available.

    ``one_host``: every rank runs on this machine (else only the largest process is compared).

    Raises
    ------
    OptionError
        Naming ``dataset``, the bytes needed and the bytes available.
    """
    available = available_memory() if available is None else available
    if available is None:
        return
    need = memory_estimate(problem)
    total = need["total"] if one_host else max(need["coordinator"], need["worker"])
    if total > available:
        where = f"its {problem.options.workers + 1} ranks" if one_host else "its largest rank"
        raise OptionError("dataset", problem.options.dataset,
                          f"needs an estimated {_gib(total)} of memory for {where} (the coordinator "
                          f"{_gib(need['coordinator'])}, each worker up to {_gib(need['worker'])}), but "
                          f"{_gib(available)} is available; use fewer rows or columns, or more hosts")


def check_writable_dir(path: str | os.PathLike, option: str) -> Path:
    """Create the directory ``path`` if needed and prove it writable.

    Raises
    ------
    OptionError
        Naming ``option`` when it is not a writable directory.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".gdcode-write-test-"):
            pass
    except OSError as exc:
        raise OptionError(option, str(path), f"is not a writable directory ({exc.strerror}); choose another") \
            from None
    return p


def check_writable_file(path: str | os.PathLike, option: str) -> Path:
    """Prove that the file ``path`` can be written, without creating or changing it.

    Raises
    ------
    OptionError
        Naming ``option`` when its directory is missing or not writable, or it is not a file.
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        raise OptionError(option, str(path), "exists and is not a regular file")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OptionError(option, str(path), f"its directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise OptionError(option, str(path), "cannot be written (permission denied)")
    return p


__all__ = ["ConfigError", "Problem", "build", "build_code", "check", "make_optimizer", "naming"]
