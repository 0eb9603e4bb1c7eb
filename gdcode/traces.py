"""Per-worker, per-iteration time traces: import from public formats, statistics, correlations.

gdcode's trace format (``trace:FILE`` of ``--delay`` and ``--compute``, read by
:func:`gdcode.delays.read_trace`) is a CSV ``worker,iteration,seconds`` with 1-based workers
and iterations. :func:`import_trace` converts other per-worker, per-iteration time tables to it:

- ``csv``: any CSV with a header, given which columns hold the worker, the iteration and the
  time (:data:`FORMATS`);
- ``pai``: the mini-batch-time files of Alibaba's GPU cluster trace (``cluster-trace-gpu-v2020``,
  folder ``mini-batch-time``, files ``job_N_norm.csv``), whose header is
  ``,worker,gpu,time,batch_time_norm``: a row index, the worker (0-based), its GPU request
  (percent of a GPU), the iteration (sampled every 10 iterations: 1, 11, 21, ...) and the
  mini-batch time normalised to 0-1000 (no unit is published). gdcode reads the worker,
  ``time`` and ``batch_time_norm`` columns (overridable like the generic ones) and scales
  the times by 0.001, so 1000 becomes 1 second: the ratios between workers and iterations,
  hence the coefficient of variation and the correlations, are the cluster's; the absolute
  scale is arbitrary (give ``mean`` to choose it).

Both renumber workers and iterations: the distinct values of each column, sorted (as numbers
when they all are numbers), become 1, 2, ...; so PAI's iterations 1, 11, 21 become 1, 2, 3
(consecutive samples are consecutive iterations of the replay) and its workers 0..9 become
1..10. The written file records the mapping of workers in comment lines.

:class:`Series` puts a trace (or a run's reply times) on a grid of iterations by workers;
:func:`autocorrelation`, :func:`cross_correlation` and :func:`stats` describe it. They are the
statistics ``gdcode trace stats`` prints and ``gdcode simulate --fit`` reports.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DUPLICATES", "FORMATS", "ImportFormat", "Imported", "Series", "autocorrelation", "cross_correlation",
           "import_trace", "slow_spells", "stats", "write_trace"]


@dataclass(frozen=True)
class ImportFormat:
    """Defaults of one input format: the columns holding the worker, iteration and time, and
    the factor that turns the time column into seconds. ``None``: no default (must be given;
    for ``iteration``: number each worker's rows in file order)."""

    worker: str | None
    iteration: str | None
    seconds: str | None
    scale: float
    description: str


#: the formats :func:`import_trace` reads
FORMATS: dict[str, ImportFormat] = {
    "csv": ImportFormat(None, None, None, 1.0, "a CSV with a header; name the worker, iteration and seconds columns"),
    "pai": ImportFormat("worker", "time", "batch_time_norm", 0.001,
                        "Alibaba PAI mini-batch times (cluster-trace-gpu-v2020/mini-batch-time/job_N_norm.csv): "
                        "columns worker, time, batch_time_norm (0-1000, scaled by 0.001 to seconds)"),
}


#: what :func:`import_trace` does with a repeated (worker, iteration)
DUPLICATES = ("error", "first", "last", "mean")


@dataclass
class Imported:
    """A converted trace: rows ``(worker, iteration, seconds)``, 1-based, sorted.

    Attributes
    ----------
    rows : list of (int, int, float)
    worker_names : dict
        New worker number -> the value in the source's worker column.
    columns : dict
        ``worker``, ``iteration``, ``seconds``: the source columns read (iteration None: file order).
    scale : float
        The factor applied to the time column.
    skipped : int
        Rows skipped because their time cell was empty.
    source, format : str
    """

    rows: list[tuple[int, int, float]]
    worker_names: dict[int, str]
    columns: dict[str, str | None]
    scale: float
    skipped: int
    source: str
    format: str

    @property
    def n_workers(self) -> int:
        return len(self.worker_names)

    @property
    def n_iterations(self) -> int:
        return max((r[1] for r in self.rows), default=0)


def _column(header: list[str], ref: str, role: str, path: str) -> int:
    """Index of the column ``ref``: a header name, else a 1-based column number."""
    names = [h.strip() for h in header]
    if ref.strip() in names:
        return names.index(ref.strip())
    if ref.strip().isdigit() and 1 <= int(ref) <= len(header):
        return int(ref) - 1
    raise ValueError(f"{path}: no column {ref!r} for the {role} (the header has {', '.join(repr(n) for n in names)}; "
                     "a column is named by its header or its 1-based number)")


def _sort_key(values: Iterable[str]):
    """Sort numerically when every value is a number, else as text."""
    vals = list(values)
    try:
        nums = {v: float(v) for v in vals}
    except ValueError:
        return sorted(vals)
    return sorted(vals, key=lambda v: nums[v])


def import_trace(path: str, fmt: str = "csv", *, worker: str | None = None, iteration: str | None = None,
                 seconds: str | None = None, scale: float | None = None, mean: float | None = None,
                 delimiter: str = ",", duplicates: str = "error") -> Imported:
    """Read a per-worker, per-iteration time table into gdcode's trace rows.

    Parameters
    ----------
    path : str
        The input CSV: a header row, then one row per (worker, iteration); lines starting
        with ``#`` are comments.
    fmt : str
        A key of :data:`FORMATS`: ``csv`` or ``pai``.
    worker, iteration, seconds : str, optional
        The columns (header names or 1-based numbers) of the worker, the iteration and the
        time, overriding the format's defaults. Without an iteration column, each worker's
        rows are numbered in file order.
    scale : float, optional
        Multiply every time by this (default: the format's, 1 for ``csv``, 0.001 for ``pai``).
    mean : float, optional
        Instead of ``scale``: scale the times so that their mean is ``mean`` seconds.
    delimiter : str
        The field separator.
    duplicates : str
        What to do with a worker's second row for the same iteration (real traces have them:
        PAI's job 2 repeats a row): ``error``, keep the ``first`` or the ``last``, or their ``mean``.

    Raises
    ------
    ValueError
        For an unknown format, a missing column, a malformed or negative time, a worker and
        iteration given twice, or an empty table.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown trace format {fmt!r}; known: {', '.join(FORMATS)}")
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {', '.join(DUPLICATES)}, got {duplicates!r}")
    spec = FORMATS[fmt]
    if scale is not None and mean is not None:
        raise ValueError("give a scale or a mean, not both")
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"the scale must be a finite number > 0, got {scale:g}")
    if mean is not None and not (math.isfinite(mean) and mean > 0):
        raise ValueError(f"the mean must be a finite number of seconds > 0, got {mean:g}")
    cols = {"worker": worker or spec.worker, "iteration": iteration or spec.iteration,
            "seconds": seconds or spec.seconds}
    for role in ("worker", "seconds"):
        if cols[role] is None:
            raise ValueError(f"the {fmt} format needs the {role} column named")
    raw: list[tuple[str, str | None, float, int]] = []
    skipped = 0
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next((r for r in reader if r and not r[0].strip().startswith("#")), None)
            if header is None:
                raise ValueError(f"the trace {path} is empty")
            iw = _column(header, str(cols["worker"]), "worker", path)
            isec = _column(header, str(cols["seconds"]), "seconds", path)
            iit = _column(header, str(cols["iteration"]), "iteration", path) if cols["iteration"] else None
            for row in reader:
                lineno = reader.line_num
                if not row or not "".join(row).strip() or row[0].strip().startswith("#"):
                    continue
                need = max(iw, isec, iit if iit is not None else 0)
                if len(row) <= need:
                    raise ValueError(f"{path}, line {lineno}: {len(row)} fields, but column {need + 1} is read")
                cell = row[isec].strip()
                if not cell:
                    skipped += 1
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    raise ValueError(f"{path}, line {lineno}: the time {cell!r} is not a number") from None
                if not (math.isfinite(value) and value >= 0):
                    raise ValueError(f"{path}, line {lineno}: the time must be a finite number >= 0, got {cell!r}")
                raw.append((row[iw].strip(), row[iit].strip() if iit is not None else None, value, lineno))
    except OSError as exc:
        raise ValueError(f"cannot read the trace {path} ({exc.strerror})") from None
    if not raw:
        raise ValueError(f"the trace {path} has no rows with a time")
    workers = {name: i + 1 for i, name in enumerate(_sort_key({r[0] for r in raw}))}
    if iit is not None:
        its = {name: i + 1 for i, name in enumerate(_sort_key({str(r[1]) for r in raw}))}
    counter: dict[int, int] = {}
    seen: dict[tuple[int, int], int] = {}
    values: dict[tuple[int, int], list[float]] = {}
    for w_name, it_name, value, lineno in raw:
        w = workers[w_name]
        if iit is None:
            counter[w] = counter.get(w, 0) + 1
            t = counter[w]
        else:
            t = its[str(it_name)]
        if (w, t) in seen and duplicates == "error":
            raise ValueError(f"{path}, line {lineno}: worker {w_name!r} at iteration {it_name!r} already appears "
                             f"on line {seen[(w, t)]}")
        seen.setdefault((w, t), lineno)
        values.setdefault((w, t), []).append(value)
    pick = {"error": lambda v: v[0], "first": lambda v: v[0], "last": lambda v: v[-1],
            "mean": lambda v: float(np.mean(v))}[duplicates]
    rows = [(w, t, pick(v)) for (w, t), v in values.items()]
    factor = spec.scale if scale is None else scale
    if mean is not None:
        raw_mean = float(np.mean([r[2] for r in rows]))
        if raw_mean <= 0:
            raise ValueError(f"the trace {path} has a mean time of 0: it cannot be scaled to a mean")
        factor = mean / raw_mean
    rows = sorted((w, t, v * factor) for w, t, v in rows)
    return Imported(rows=rows, worker_names={i: n for n, i in workers.items()}, columns=cols, scale=factor,
                    skipped=skipped, source=str(path), format=fmt)


def write_trace(path: str, trace: Imported) -> None:
    """Write ``trace`` as gdcode's ``worker,iteration,seconds`` CSV: the header, then comment
    lines (the source, the scale, the workers' original names), then the rows.

    Raises
    ------
    ValueError
        When the file cannot be written.
    """
    lines = ["worker,iteration,seconds",
             f"# imported (format {trace.format}) from {os.path.basename(trace.source)}",
             f"# columns: worker {trace.columns['worker']}, iteration "
             f"{trace.columns['iteration'] or '(file order)'}, seconds {trace.columns['seconds']} "
             f"times {trace.scale:.17g}"]
    lines += [f"# worker {w} = {name}" for w, name in sorted(trace.worker_names.items())]
    lines += [f"{w},{t},{float(v)!r}" for w, t, v in trace.rows]  # shortest text that reads back exactly
    try:
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    except OSError as exc:
        raise ValueError(f"cannot write {path} ({exc.strerror})") from None


# ----------------------------------------------------------------------------- the grid


@dataclass
class Series:
    """Times on a grid: row ``i`` is iteration ``iterations[i]``, column ``j`` worker ``workers[j]``.

    Attributes
    ----------
    workers : list of int
        Worker ids (1-based, as in trace files and ``workers.csv``).
    iterations : numpy.ndarray
        Iteration of each row, increasing.
    values : numpy.ndarray
        Shape ``(T, W)``: seconds, NaN where a worker has no value.
    censored : numpy.ndarray
        Shape ``(T, W)``, bool: the value is only a lower bound (a worker cut off before replying).
    """

    workers: list[int]
    iterations: np.ndarray
    values: np.ndarray
    censored: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))

    def __post_init__(self) -> None:
        if self.censored.shape != self.values.shape:
            self.censored = np.zeros(self.values.shape, bool)

    @property
    def present(self) -> np.ndarray:
        """Where a value (measured or censored) exists."""
        return ~np.isnan(self.values)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> Series:
        """From ``(worker, iteration, seconds[, censored])`` rows.

        The grid holds every iteration from the first to the last when that is at most four
        times the number of distinct iterations (so that consecutive rows are consecutive
        iterations, gaps being missing values); otherwise only the iterations present.
        """
        rows = list(rows)
        if not rows:
            raise ValueError("no values")
        workers = sorted({int(r[0]) for r in rows})
        distinct = sorted({int(r[1]) for r in rows})
        span = distinct[-1] - distinct[0] + 1
        its = np.arange(distinct[0], distinct[-1] + 1) if span <= 4 * len(distinct) else np.array(distinct)
        row_of = {int(t): i for i, t in enumerate(its)}
        col_of = {w: j for j, w in enumerate(workers)}
        values = np.full((its.size, len(workers)), np.nan)
        cens = np.zeros(values.shape, bool)
        for r in rows:
            i, j = row_of[int(r[1])], col_of[int(r[0])]
            values[i, j] = float(r[2])
            cens[i, j] = bool(r[3]) if len(r) > 3 else False
        return cls(workers=workers, iterations=its, values=values, censored=cens)

    @classmethod
    def from_table(cls, table: dict) -> Series:
        """From :func:`gdcode.delays.read_trace`'s ``{worker: ({iteration: seconds}, ...)}``."""
        return cls.from_rows((w, t, v) for w, (by_it, _) in table.items() for t, v in by_it.items())


# ----------------------------------------------------------------------------- statistics


def _normal_p(z: float) -> float:
    """Two-sided p-value of a standard normal statistic."""
    return float(math.erfc(abs(z) / math.sqrt(2.0)))


def _z(terms: np.ndarray, bandwidth: int = 0) -> float:
    """``sum(terms) / sd``: a statistic whose terms have mean 0 under the null hypothesis, with
    the Newey-West (Bartlett) variance over ``bandwidth`` lags (0: the terms are uncorrelated)."""
    total = float(terms.sum())
    var = float(np.sum(terms * terms))
    for k in range(1, min(bandwidth, terms.size - 1) + 1):
        var += 2 * (1 - k / (bandwidth + 1)) * float(np.sum(terms[k:] * terms[:-k]))
    var = max(var, float(np.sum(terms * terms)) / max(terms.size, 1), 1e-300)
    return total / math.sqrt(var) if total else 0.0


def autocorrelation(series: Series, lag: int = 1) -> dict:
    """Lag-``lag`` (>= 1) autocorrelation of each worker's times, and pooled over the workers.

    Each worker's values are centred on its own mean, so a worker that is always slow does
    not count as correlation in time. A worker's coefficient is
    ``sum (x_t - m)(x_{t+lag} - m) / sum (x_t - m)^2`` over the pairs of iterations ``lag``
    apart that both have a value (censored values count at their lower bound); the pooled one
    sums numerators and denominators over workers. The ``z`` statistic is self-normalised:
    the numerator's terms (per iteration, summed over workers) divided by the square root of
    their sum of squares, which under independence in time have mean 0 and are uncorrelated
    even when workers are correlated with each other (so a host slowing several workers at
    once is not taken for correlation in time); about ``r sqrt(pairs)`` for independent
    workers. Two-sided p-value from the normal distribution.
    """
    if lag < 1:
        raise ValueError(f"the lag must be >= 1, got {lag}")
    x, present = series.values, series.present
    num_total = den_total = 0.0
    pairs_total = 0
    per: dict[int, dict] = {}
    terms = np.zeros(max(x.shape[0] - lag, 0))
    for j, w in enumerate(series.workers):
        col, ok = x[:, j], present[:, j]
        if ok.sum() < 3:
            continue
        c = np.where(ok, col - np.nanmean(col), 0.0)
        both = ok[lag:] & ok[:-lag]
        prod = np.where(both, c[lag:] * c[:-lag], 0.0)
        num, den, pairs = float(prod.sum()), float(np.sum(c[ok] ** 2)), int(both.sum())
        per[w] = {"r": num / den if den > 0 else 0.0, "pairs": pairs, "z": _z(prod[both]) if pairs else 0.0}
        terms += prod
        num_total += num
        den_total += den
        pairs_total += pairs
    r = num_total / den_total if den_total > 0 else 0.0
    z = _z(terms) if pairs_total else 0.0
    return {"lag": lag, "r": r, "pairs": pairs_total, "z": z, "p_value": _normal_p(z) if pairs_total else 1.0,
            "per_worker": per}


def _pairwise_correlation(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of every pair of workers over the iterations both have, and those counts."""
    present = series.present.astype(float)
    means = np.nansum(series.values, axis=0) / np.maximum(present.sum(axis=0), 1)
    c = np.where(series.present, series.values - means, 0.0)
    num = c.T @ c
    sq = (c * c).T @ present  # [i, j]: sum of worker i's squares over the iterations j has
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / np.sqrt(sq * sq.T)
    counts = present.T @ present
    return np.nan_to_num(r), counts


def cross_correlation(series: Series) -> dict:
    """How workers' times move together in the same iteration.

    Reports the mean and largest correlation over pairs of workers, a z statistic for the
    mean (self-normalised: the per-iteration sums over pairs of the standardised products,
    which have mean 0 when workers are independent, over their Newey-West standard deviation
    with ``floor(4 (T/100)^(2/9))`` lags, so that times correlated in time do not pass for
    workers correlated with each other), and the grouping of consecutive workers that
    best separates correlated pairs from the rest: among the group sizes ``g`` that divide
    the number of workers (``g = W``: one group), the one with the largest mean correlation
    within groups minus that between them. With it comes a ``correlated:MEAN,CV,RHO,GROUP``
    spec: the mean and coefficient of variation of all values and the mean correlation
    within groups (GROUP 0: all workers).
    """
    W = len(series.workers)
    vals = series.values[series.present]
    mean = float(vals.mean()) if vals.size else 0.0
    cv = float(vals.std() / mean) if vals.size and mean > 0 else 0.0
    out: dict[str, Any] = {"workers": W}
    if W < 2:
        return {**out, "pairs": 0, "mean_r": 0.0, "z": 0.0, "p_value": 1.0, "max_r": None, "max_pair": None,
                "group_size": None, "within_r": 0.0, "between_r": 0.0, "spec": None}
    r, counts = _pairwise_correlation(series)
    iu = np.triu_indices(W, 1)
    rs, ns = r[iu], counts[iu]
    ok = ns >= 3
    if not ok.any():
        return {**out, "pairs": 0, "mean_r": 0.0, "z": 0.0, "p_value": 1.0, "max_r": None, "max_pair": None,
                "group_size": None, "within_r": 0.0, "between_r": 0.0, "spec": None}
    rs, ns, ia, ib = rs[ok], ns[ok], iu[0][ok], iu[1][ok]
    mean_r = float(rs.mean())
    present = series.present
    sd = np.sqrt(np.nansum(np.where(present, (series.values - np.nanmean(series.values, axis=0)) ** 2, 0.0), axis=0)
                 / np.maximum(present.sum(axis=0), 1))
    u = np.where(present, (series.values - np.nanmean(series.values, axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)
    terms = (u[:, ia] * u[:, ib]).sum(axis=1)  # per iteration: the sum over pairs of standardised products
    T = u.shape[0]
    z = _z(terms, int(4 * (T / 100) ** (2 / 9)))
    k = int(np.argmax(rs))
    best: tuple[float, int, float, float] | None = None
    for g in [d for d in range(2, W + 1) if W % d == 0]:  # W > 1 here: at least g = W
        same = (ia // g) == (ib // g)
        within = float(rs[same].mean()) if same.any() else 0.0
        between = float(rs[~same].mean()) if (~same).any() else 0.0
        score = within - between
        if best is None or score > best[0] + 1e-12:
            best = (score, g, within, between)
    assert best is not None
    _, g, within, between = best
    rho = min(max(within, 0.0), 1.0)
    spec = (f"correlated:{mean:.4g},{cv:.4g},{rho:.3g}" + ("" if g == W else f",{g}")) if mean > 0 and cv > 0 \
        else None
    return {**out, "pairs": int(rs.size), "mean_r": mean_r, "z": z, "p_value": _normal_p(z),
            "max_r": float(rs[k]), "max_pair": [series.workers[ia[k]], series.workers[ib[k]]],
            "group_size": g, "within_r": within, "between_r": between, "spec": spec}


def slow_spells(slow: np.ndarray) -> list[int]:
    """Lengths of the runs of True in ``slow`` (1-D), in order."""
    s = np.concatenate([[False], np.asarray(slow, bool), [False]]).astype(np.int8)
    d = np.diff(s)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return (ends - starts).tolist()


def stats(series: Series, slow_factor: float = 1.5) -> dict:
    """Per-worker mean, coefficient of variation and slow spells, and the correlations.

    A worker is slow in an iteration when its time exceeds ``slow_factor`` times the
    reference of that iteration: the median of the workers' times in it (with three or more
    workers), else the median of the whole trace. A slow spell is a run of consecutive slow
    iterations (a missing value ends it).
    """
    if not (math.isfinite(slow_factor) and slow_factor > 0):
        raise ValueError(f"the slow factor must be a finite number > 0, got {slow_factor:g}")
    x, present = series.values, series.present
    W = len(series.workers)
    overall = float(np.nanmedian(x))
    if W >= 3:
        with np.errstate(all="ignore"):
            ref = np.nanmedian(x, axis=1)
        ref = np.where(np.isnan(ref), overall, ref)
    else:
        ref = np.full(x.shape[0], overall)
    slow = present & (np.nan_to_num(x, nan=-np.inf) > slow_factor * ref[:, None])
    ac = autocorrelation(series)
    per = {}
    for j, w in enumerate(series.workers):
        v = x[present[:, j], j]
        spells = slow_spells(slow[:, j])
        m = float(v.mean()) if v.size else float("nan")
        per[w] = {"values": int(v.size), "mean": m, "cv": float(v.std() / m) if v.size and m > 0 else 0.0,
                  "slow_fraction": float(slow[:, j].sum() / max(v.size, 1)), "slow_spells": len(spells),
                  "mean_spell": float(np.mean(spells)) if spells else 0.0, "max_spell": max(spells, default=0),
                  "lag1_r": ac["per_worker"].get(w, {}).get("r")}
    vals = x[present]
    all_spells = [n for j in range(W) for n in slow_spells(slow[:, j])]
    return {"workers": W, "iterations": int(x.shape[0]), "values": int(vals.size),
            "mean": float(vals.mean()), "cv": float(vals.std() / vals.mean()) if vals.mean() > 0 else 0.0,
            "slow_factor": slow_factor, "reference": "median of the iteration" if W >= 3 else "median of the trace",
            "slow_fraction": float(slow.sum() / max(vals.size, 1)), "slow_spells": len(all_spells),
            "mean_spell": float(np.mean(all_spells)) if all_spells else 0.0,
            "spell_lengths": {str(k): int(v) for k, v in zip(*np.unique(all_spells, return_counts=True), strict=True)}
            if all_spells else {},
            "autocorrelation": {k: v for k, v in ac.items() if k != "per_worker"},
            "cross_correlation": cross_correlation(series), "per_worker": per}
