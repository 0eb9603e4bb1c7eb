"""Figures from run directories. Never imported by ranks (matplotlib is imported here only).

Three kinds: a metric against elapsed time or iteration for several runs
(:func:`plot_metric`), each run's per-worker arrivals and statuses from ``workers.csv``
(:func:`plot_workers`), and the distribution of iteration times per run
(:func:`plot_iteration_times`). The file format follows the extension: PNG, SVG or PDF.

Every curve of a metric figure has its own colour, dash pattern and marker, the markers of
different curves at staggered points, so curves that coincide (the exact codes reach the same
losses) stay visible. Axes of integer quantities (iterations, replies) get integer ticks.

Bands over seeds (``band`` of :func:`plot_metric`, ``gdcode plot --band``): runs whose options
differ only in ``seed`` (and in the bookkeeping options ``out``, ``name``, ``timeout``, ...,
:data:`gdcode.results.BOOKKEEPING_OPTIONS`) are one curve, the mean over its seeds, drawn with
a band from the lowest to the highest seed (``range``) or of one standard deviation either
side (``sd``). Runs that share their x values (``--x iteration``) are averaged point by point;
otherwise (``--x elapsed``) each seed is interpolated linearly on 200 points over the x range
that every seed of the curve covers.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gdcode.errors import ConfigError
from gdcode.results import KEY_OPTIONS, WORKER_STATUSES, Run, run_label, run_labels, seed_groups

__all__ = ["KEY_OPTIONS", "run_label", "run_labels", "plot_metric", "plot_workers",
           "plot_iteration_times", "worker_table", "iteration_times", "check_output"]

FORMATS = (".png", ".svg", ".pdf")

#: what ``band`` accepts: the band over seeds from the lowest to the highest, or mean +- one sd
BANDS = ("range", "sd")

#: metrics.jsonl keys that count things: their axes get integer ticks
INTEGER_KEYS = ("iteration", "responders")

LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")

X_LABELS = {"elapsed": "elapsed wall-clock time (s)", "iteration": "iteration"}

#: axis labels, with units, of the metrics.jsonl keys
Y_LABELS = {
    "train_loss": "training loss f(w)",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy (fraction)",
    "test_auc": "test AUC",
    "test_rmse": "test RMSE",
    "elapsed": "elapsed wall-clock time (s)",
    "decode_seconds": "decode time (s)",
    "responders": "replies received before decoding",
    "gradient_error": "relative gradient error ||g_hat - g|| / ||g||",
    "iteration": "iteration",
}

STATUS_COLOURS = {"used": "#2a9d2a", "ignored": "#f2c230", "late": "#d1495b", "cancelled": "#9a9a9a",
                  "dead": "#222222"}


def check_output(out: str | os.PathLike) -> Path:
    """The figure path; ConfigError unless it ends in .png, .svg or .pdf and its folder exists."""
    p = Path(out)
    if p.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {p}: the figure format comes from the extension; use one of "
                          f"{', '.join(FORMATS)}")
    if not p.parent.is_dir():
        raise ConfigError(f"--out {p}: the folder {p.parent} does not exist; create it first")
    return p


def require_matplotlib() -> None:
    """ConfigError naming the extra to install when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("figures need matplotlib, which is not installed; install the plot extra: "
                          "pip install 'gdcode[plot]'") from None


def _pyplot():
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: metrics that are fractions in [0, 1]: their axis stays linear (a log axis would stretch the
#: first evaluations' chance-level values and squeeze the part that matters, near 1)
FRACTIONS = ("accuracy", "auc")


def _log_scale(values: np.ndarray, key: str = "") -> bool:
    """Whether a y axis should be logarithmic: positive values spanning at least a factor 10,
    unless ``key`` names a fraction (:data:`FRACTIONS`)."""
    if any(word in key for word in FRACTIONS):
        return False
    v = values[np.isfinite(values)]
    return bool(v.size and v.min() > 0 and v.max() / v.min() >= 10)


def curve_style(i: int, n_curves: int, n_points: int) -> dict:
    """Line style of the ``i``-th of ``n_curves`` curves: its own dash pattern and marker, with
    markers every few points starting at a point of its own, so coinciding curves stay distinct."""
    step = max(min(max(1, n_points // 6), 12), min(n_curves, 4))  # every curve marks points of its own
    step = max(1, min(step, n_points))
    offset = (i * step) // max(n_curves, 1) % step
    return {"linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)], "markersize": 4,
            "markevery": (min(offset, max(n_points - 1, 0)), step), "linewidth": 1.4}


def seed_band(runs: Sequence[Run], x: str, y: str, band: str = "range", points: int = 200
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and band of metric ``y`` over ``runs`` (the seeds of one configuration) against ``x``.

    Parameters
    ----------
    runs : sequence of Run
    x, y : str
        ``metrics.jsonl`` keys.
    band : {"range", "sd"}
        From the lowest to the highest run, or the mean plus and minus one (sample) standard
        deviation.
    points : int
        Grid points when the runs do not share their x values.

    Returns
    -------
    xs, mean, low, high : numpy.ndarray
        Runs whose finite points share their x values are averaged point by point (at each x,
        over the runs that have it); otherwise each run is interpolated linearly on ``points``
        points over the x range that every run covers.
    """
    if band not in BANDS:
        raise ConfigError(f"--band {band}: give one of {', '.join(BANDS)}")
    series = []
    for r in runs:
        xs, ys = r.column(x), r.column(y)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if ok.any():
            order = np.argsort(xs[ok], kind="stable")
            series.append((xs[ok][order], ys[ok][order]))
    if not series:
        return np.empty(0), np.empty(0), np.empty(0), np.empty(0)
    if all(np.array_equal(series[0][0], sx) for sx, _ in series):
        grid = series[0][0]
        table = np.vstack([sy for _, sy in series])
    elif all(np.unique(sx).size == sx.size and np.allclose(sx, np.round(sx)) for sx, _ in series):
        grid = np.unique(np.concatenate([sx for sx, _ in series]))  # integer x (iterations) some runs lack
        table = np.full((len(series), grid.size), np.nan)
        for k, (sx, sy) in enumerate(series):
            table[k, np.searchsorted(grid, sx)] = sy
    else:
        lo, hi = max(sx[0] for sx, _ in series), min(sx[-1] for sx, _ in series)
        grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
        table = np.vstack([np.interp(grid, sx, sy) for sx, sy in series])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an x only one run has: no sd there
        mean = np.nanmean(table, axis=0)
        if band == "range":
            low, high = np.nanmin(table, axis=0), np.nanmax(table, axis=0)
        else:
            sd = np.nanstd(table, axis=0, ddof=1) if table.shape[0] > 1 else np.zeros(grid.size)
            sd = np.where(np.isfinite(sd), sd, 0.0)
            low, high = mean - sd, mean + sd
    return grid, mean, low, high


def _group_labels(runs: Sequence[Run], groups: list[list[Run]], labels: Sequence[str] | None) -> list[str]:
    """Legend text per group: ``labels`` (one per group, or one per run: each group takes its first
    run's), else the runs' labels without their seeds and with the number of seeds."""
    if labels is not None:
        labels = list(labels)
        if len(labels) == len(runs) and len(groups) != len(runs):
            first = {id(r): lab for r, lab in zip(runs, labels, strict=True)}
            labels = [first[id(g[0])] for g in groups]
        if len(labels) != len(groups):
            raise ConfigError(f"{len(labels)} labels for {len(groups)} curves; give one per curve")
        return labels
    if all(len(g) == 1 for g in groups):
        return run_labels(runs) if len(groups) == len(runs) else run_labels([g[0] for g in groups])
    return [lab + (f" ({len(g)} seeds)" if len(g) > 1 else "")
            for lab, g in zip(run_labels([g[0] for g in groups], ignore=("seed",)), groups, strict=True)]


def plot_metric(runs: Sequence[Run], out: str | os.PathLike, x: str = "elapsed", y: str = "train_loss",
                title: str | None = None, log: bool | None = None, labels: Sequence[str] | None = None,
                band: str | None = None):
    """One curve per run (or per configuration over its seeds) of metric ``y`` against ``x``.

    Log scale when ``y`` spans a decade or more. Every curve has its own dash pattern and
    staggered markers (:func:`curve_style`), so curves that coincide stay visible.

    Parameters
    ----------
    labels : sequence of str, optional
        Legend text: one per run, or with ``band`` one per curve (one per run also works: each
        curve takes its first run's).
    band : {"range", "sd"}, optional
        Group the runs that differ only in their seed into one curve, their mean, with a band
        over the seeds (see the module docstring). Default: one curve per run.

    Returns
    -------
    matplotlib.figure.Figure
        The (closed) figure, as the other plot functions return.

    Raises
    ------
    ConfigError
        When no run has the metric ``y`` (naming the metrics they have), or for a bad
        ``band`` or number of labels.
    """
    plt = _pyplot()
    out = check_output(out)
    if not any(np.isfinite(r.column(y)).any() for r in runs):
        have = sorted({k for r in runs for m in r.metrics for k, v in m.items() if isinstance(v, (int, float))})
        raise ConfigError(f"--y {y}: no run has this metric; they have: {', '.join(have) or 'no metrics'}")
    if band is not None and band not in BANDS:
        raise ConfigError(f"--band {band}: give one of {', '.join(BANDS)}")
    groups = seed_groups(runs) if band else [[r] for r in runs]
    labels = _group_labels(runs, groups, labels)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    curves: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
    for group in groups:
        if len(group) > 1:
            curves.append(seed_band(group, x, y, band or "range"))
        else:
            xs, ys = group[0].column(x), group[0].column(y)
            ok = np.isfinite(xs) & np.isfinite(ys)
            curves.append((xs[ok], ys[ok], None, None))
    seen: list[np.ndarray] = []
    for _, mean, low, high in curves:
        seen += [mean] + ([low, high] if low is not None and high is not None else [])
    if log is None:
        log = _log_scale(np.concatenate(seen), y) if seen else False
    floor = None
    if log:
        positive = np.concatenate([v[v > 0] for v in seen])
        floor = float(positive.min()) if positive.size else None
    for i, ((xs, mean, low, high), label) in enumerate(zip(curves, labels, strict=True)):
        n_points = int(np.sum(np.isfinite(mean)))
        (line,) = ax.plot(xs, mean, label=label, **curve_style(i, len(curves), xs.size))
        if low is not None and n_points:
            if floor is not None:
                low = np.maximum(low, floor)
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
    if log:
        ax.set_yscale("log")
    if x in INTEGER_KEYS:
        ax.xaxis.set_major_locator(_integer_locator())
    if y in INTEGER_KEYS and not log:
        ax.yaxis.set_major_locator(_integer_locator())
    ax.set_xlabel(X_LABELS.get(x, Y_LABELS.get(x, x)))
    ax.set_ylabel(Y_LABELS.get(y, y.replace("_", " ")))
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both" if log else "major")
    ax.legend(fontsize="small")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def worker_table(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``workers.csv`` as arrays: iterations, arrival seconds ``(iterations, W)`` (NaN where
    none came) and status index ``(iterations, W)`` into :data:`~gdcode.results.WORKER_STATUSES`."""
    if not run.workers:
        raise ConfigError(f"{run.path} has no workers.csv rows (an asynchronous run, or none finished)")
    its = np.array(sorted({r["iteration"] for r in run.workers}))
    W = max(r["worker"] for r in run.workers)
    row = {t: i for i, t in enumerate(its)}
    arrival = np.full((its.size, W), np.nan)
    status = np.full((its.size, W), WORKER_STATUSES.index("cancelled"))
    for r in run.workers:
        i, w = row[r["iteration"]], r["worker"] - 1
        status[i, w] = WORKER_STATUSES.index(r["status"])
        if r["arrival"] is not None:
            arrival[i, w] = r["arrival"]
    return its, arrival, status


def plot_workers(runs: Sequence[Run], out: str | os.PathLike, title: str | None = None,
                 labels: Sequence[str] | None = None):
    """Per run, two heatmaps over (iteration, worker): when each reply arrived after its
    iteration started, and what became of it (used, ignored, late, cancelled)."""
    plt = _pyplot()
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    out = check_output(out)
    labels = list(labels) if labels is not None else run_labels(runs)
    tables = [worker_table(r) for r in runs]
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 2.2 + 1.9 * len(runs)), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="#e6e6e6")
    status_cmap = ListedColormap([STATUS_COLOURS[s] for s in WORKER_STATUSES])
    norm = BoundaryNorm(np.arange(len(WORKER_STATUSES) + 1) - 0.5, len(WORKER_STATUSES))
    for (its, arrival, status), label, (ax_a, ax_s) in zip(tables, labels, axes, strict=True):
        W = arrival.shape[1]
        extent = (its[0] - 0.5, its[-1] + 0.5, W + 0.5, 0.5)
        im = ax_a.imshow(np.ma.masked_invalid(arrival.T), aspect="auto", cmap=cmap, extent=extent,
                         interpolation="nearest")
        fig.colorbar(im, ax=ax_a, label="arrival after iteration start (s)")
        ax_a.set_title(f"{label}: reply arrival", fontsize="medium")
        ax_s.imshow(status.T, aspect="auto", cmap=status_cmap, norm=norm, extent=extent, interpolation="nearest")
        counts = {s: int(np.sum(status == i)) for i, s in enumerate(WORKER_STATUSES)}
        ax_s.set_title(f"{label}: " + ", ".join(f"{s} {n}" for s, n in counts.items() if n), fontsize="medium")
        for ax in (ax_a, ax_s):
            ax.xaxis.set_major_locator(_integer_locator())
            ax.set_xlabel("iteration")
            ax.set_ylabel("worker")
            ax.set_yticks(range(1, W + 1) if W <= 16 else np.linspace(1, W, 8).round().astype(int))
    handles = [Patch(color=STATUS_COLOURS[s], label=s) for s in WORKER_STATUSES]
    axes[0, 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                      title="status")
    if title:
        fig.suptitle(title)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig


def iteration_times(run: Run) -> np.ndarray:
    """Wall-clock seconds of each iteration: differences of ``elapsed`` (the first from 0; the
    initial model's line, iteration 0 at elapsed 0, is no iteration)."""
    el = run.column("elapsed")
    el = el[np.isfinite(el) & (run.column("iteration") > 0)]
    return np.diff(np.concatenate([[0.0], el])) if el.size else el


def plot_iteration_times(runs: Sequence[Run], out: str | os.PathLike, title: str | None = None,
                         labels: Sequence[str] | None = None, log: bool | None = None,
                         extra: Mapping[str, np.ndarray] | None = None, pool_seeds: bool = False):
    """Box plots of the iteration times of each run (whiskers at the 5th and 95th percentiles,
    mean marked with a diamond).

    ``extra`` adds distributions by label (e.g. a simulator's predicted iteration times),
    drawn hatched after the runs. ``pool_seeds`` draws one box per configuration, the
    iteration times of its seeds together (runs that differ only in their seed, as for
    bands).
    """
    plt = _pyplot()
    out = check_output(out)
    groups = seed_groups(runs) if pool_seeds else [[r] for r in runs]
    labels = _group_labels(runs, groups, labels)
    data = [np.concatenate([iteration_times(r) for r in g]) for g in groups]
    names = list(labels)
    kinds = ["run"] * len(groups)
    for k, v in (extra or {}).items():
        data.append(np.asarray(v, float)[np.isfinite(v)])
        names.append(k)
        kinds.append("extra")
    if not any(d.size for d in data):
        raise ConfigError("no iteration times to plot (no finished iterations)")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(data) + 2.0), 4.2), layout="constrained")
    for kind, face in (("run", "#c9daf8"), ("extra", "white")):
        pos = [i + 1 for i, k in enumerate(kinds) if k == kind]
        if not pos:
            continue
        # whiskers at the 5th and 95th percentiles; a run's outliers drawn, not a simulation's thousands
        box = ax.boxplot([data[p - 1] for p in pos], positions=pos, whis=(5, 95), showfliers=kind == "run",
                         patch_artist=True, widths=0.6)
        for patch in box["boxes"]:
            patch.set_facecolor(face)
            if kind == "extra":
                patch.set_hatch("//")
    ax.set_xticks(range(1, len(data) + 1), names)
    ax.set_xlim(0.4, len(data) + 0.6)
    means = [float(np.mean(d)) if d.size else np.nan for d in data]
    ax.plot(range(1, len(data) + 1), means, "D", color="#d1495b", markersize=5, label="mean", linestyle="none")
    if log is None:
        log = _log_scale(np.concatenate([d for d in data if d.size]))
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("iteration time (s)")
    ax.tick_params(axis="x", labelrotation=30 if len(data) > 3 else 0)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right" if len(data) > 3 else "center")
    ax.grid(True, axis="y", alpha=0.3, which="both" if log else "major")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig
