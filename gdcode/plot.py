"""Figures from run directories. Never imported by ranks (matplotlib is imported here only)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from gdcode.results import Run

X_LABELS = {"elapsed": "elapsed wall-clock time (s)", "iteration": "iteration"}


def run_label(run: Run) -> str:
    """Legend text: the scheme (or mode) and its key options."""
    opts = run.metadata.get("options", {})
    mode = opts.get("mode", "coded")
    label = opts.get("scheme", "?") if mode == "coded" else mode
    if opts.get("stragglers"):
        label += f" S={opts['stragglers']}"
    if opts.get("collect"):
        label += f" collect={opts['collect']}"
    return label


def plot_metric(runs: Sequence[Run], out: str | os.PathLike, x: str = "elapsed", y: str = "train_loss",
                title: str | None = None, log: bool | None = None) -> None:
    """One line per run of metric ``y`` against ``x``; log scale when ``y`` spans a decade or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    lo, hi = np.inf, -np.inf
    for run in runs:
        xs, ys = run.column(x), run.column(y)
        ok = np.isfinite(xs) & np.isfinite(ys)
        ax.plot(xs[ok], ys[ok], marker=".", markersize=3, label=run_label(run))
        if ok.any():
            lo, hi = min(lo, ys[ok].min()), max(hi, ys[ok].max())
    if log is None:
        log = lo > 0 and hi / lo >= 10
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(X_LABELS.get(x, x))
    ax.set_ylabel(y.replace("_", " "))
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.savefig(out, dpi=120)
    plt.close(fig)
