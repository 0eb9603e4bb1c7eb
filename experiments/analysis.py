# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Analysing gdcode runs with pandas
#
# Launch, as a notebook with parameters (`pip install 'gdcode[notebook]'`):
#
# ```sh
# jupytext --to ipynb experiments/analysis.py -o analysis.ipynb
# papermill analysis.ipynb analysis-out.ipynb -p RUNS experiment-results/erasurehead/runs -p OUT analysis
# ```
#
# or as a script: `GDCODE_RUNS=experiment-results/erasurehead/runs GDCODE_OUT=analysis .venv/bin/python
# experiments/analysis.py` (`pip install 'gdcode[analysis,plot]'`), or open it in Jupyter with jupytext.
#
# Parameters (the cell tagged `parameters`): `RUNS` names run directories or folders of them (searched at any
# depth), as one path, a list, or paths joined by `:`; `OUT`, if not empty, is a folder where the figures
# (PNG) and tables (CSV) are saved as well as shown; `TARGET_LOSS` is the training loss of the time-to-target
# table (None: the largest final loss, which every run reaches). Run as a script, the environment variables
# `GDCODE_RUNS`, `GDCODE_OUT` and `GDCODE_TARGET_LOSS` set them.
#
# `gdcode.results.load_runs` reads the run directories (the contract of docs/run-directory.md) into three
# DataFrames; the options that differ between the runs are columns of each, so grouping by them (all but
# `seed`) puts the seeds of one configuration together.

# %%
import os
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from gdcode.results import load_runs

# %% tags=["parameters"]
RUNS = "experiment-results"
OUT = ""
TARGET_LOSS = None

# %%
ipython = sys.modules.get("IPython")
if ipython is None or ipython.get_ipython() is None:  # run as a script: the environment sets the parameters
    matplotlib.use("Agg")
    RUNS = os.environ.get("GDCODE_RUNS", RUNS)
    OUT = os.environ.get("GDCODE_OUT", OUT)
    TARGET_LOSS = os.environ.get("GDCODE_TARGET_LOSS", TARGET_LOSS)

paths = RUNS.split(os.pathsep) if isinstance(RUNS, str) else list(RUNS)
tables = load_runs([p for p in paths if p])
runs, metrics, workers = tables.runs, tables.metrics, tables.workers
# the options that tell configurations apart; the seeds of one configuration share them
config = [o for o in tables.options if o != "seed"]


def save(fig, name: str) -> None:
    """Show the figure, and save it as OUT/NAME.png when OUT is set."""
    if OUT:
        Path(OUT).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(OUT) / f"{name}.png", dpi=110)
    if matplotlib.get_backend().lower() == "agg":  # a script without a display
        plt.close(fig)
    else:
        plt.show()


def table(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Save the table as OUT/NAME.csv when OUT is set; return it (a cell's value is displayed)."""
    if OUT:
        Path(OUT).mkdir(parents=True, exist_ok=True)
        frame.to_csv(Path(OUT) / f"{name}.csv")
    return frame


print(f"{len(runs)} run(s); options that differ: {', '.join(tables.options) or 'none'}")
runs[["label", *tables.options, "status", "summary_iterations", "elapsed", "train_loss"]]

# %% [markdown]
# ## Seconds per iteration, and how they spread
#
# An iteration's wall-clock time is the difference of consecutive `elapsed` values (evaluation is off the
# clock, so it is not in them); a run's first line is its initial model, at elapsed 0.

# %%
metrics = metrics.sort_values(["run", "iteration"])
metrics["iteration_seconds"] = metrics.groupby("run")["elapsed"].diff()
steps = metrics.dropna(subset=["iteration_seconds"])
per_run = steps.groupby("run").agg(label=("label", "first"), iterations=("iteration", "max"),
                                   mean_s=("iteration_seconds", "mean"),
                                   p50_s=("iteration_seconds", "median"),
                                   p90_s=("iteration_seconds", lambda s: s.quantile(0.9)),
                                   final_loss=("train_loss", "last"))
per_run = per_run.join(runs[tables.options])
table(per_run, "per_run")

# %% [markdown]
# Over seeds: each configuration's mean and standard deviation (`sd`, over its seeds) of the seconds per
# iteration and of the final training loss; `seeds` counts them.

# %%
over_seeds = per_run.groupby(config or (lambda _: "all runs"), dropna=False).agg(
    seeds=("label", "size"), mean_s=("mean_s", "mean"), sd_s=("mean_s", "std"),
    final_loss=("final_loss", "mean"), sd_final_loss=("final_loss", "std"))
table(over_seeds, "over_seeds")

# %%
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
order = per_run.sort_values("mean_s").index
ax.boxplot([steps.loc[steps.run == r, "iteration_seconds"] for r in order])
ax.set_xticks(range(1, len(order) + 1), [per_run.loc[r, "label"] for r in order])
ax.set_ylabel("iteration time (s)")
ax.tick_params(axis="x", labelrotation=30)
ax.set_title("distribution of iteration times")
save(fig, "iteration_times")

# %% [markdown]
# ## Training loss against wall-clock time
#
# One line per run, each with its own marker and dash so that runs whose losses coincide (the exact codes)
# stay visible; log scale when the loss spans a decade.

# %%
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
styles = ["-", "--", "-.", ":"]
for i, (run, g) in enumerate(metrics.groupby("run", sort=False)):
    ax.plot(g["elapsed"], g["train_loss"], marker="os^vDP*X"[i % 8], ms=4, ls=styles[i % 4],
            markevery=(i % 3, 3), label=runs.loc[run, "label"])
loss = metrics["train_loss"].replace([np.inf, -np.inf], np.nan).dropna()
if len(loss) and loss.min() > 0 and loss.max() / loss.min() >= 10:
    ax.set_yscale("log")
ax.set_xlabel("elapsed wall-clock time (s)")
ax.set_ylabel("training loss f(w)")
ax.legend(fontsize="small")
ax.grid(alpha=0.3)
save(fig, "loss_vs_time")

# %% [markdown]
# ## What became of each worker's replies
#
# `used` replies entered the decoded gradient; `ignored` ones arrived before the decode but were not
# needed; `late` ones came after it; `cancelled` workers dropped their work when the next model arrived.
# A worker whose mean arrival is far above the others' is a persistent straggler.

# %%
status_counts = workers.pivot_table(index="run", columns="status", values="worker", aggfunc="count", fill_value=0)
table(status_counts, "status_counts")

# %%
arrival_by_worker = workers.dropna(subset=["arrival"]).pivot_table(index="run", columns="worker", values="arrival",
                                                                    aggfunc="mean")
table(arrival_by_worker.round(4), "mean_arrival_per_worker")

# %%
if len(arrival_by_worker):
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.45 * len(arrival_by_worker)), layout="constrained")
    im = ax.imshow(arrival_by_worker.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(arrival_by_worker)), [runs.loc[r, "label"] for r in arrival_by_worker.index])
    ax.set_xticks(range(arrival_by_worker.shape[1]), arrival_by_worker.columns)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("worker")
    fig.colorbar(im, ax=ax, label="mean arrival after iteration start (s)")
    save(fig, "mean_arrival_per_worker")

# %% [markdown]
# ## Time to a target loss
#
# The first `elapsed` at which each run's training loss reaches the target.

# %%
final = metrics.groupby("run")["train_loss"].last()
target = float(TARGET_LOSS) if TARGET_LOSS not in (None, "") else float(final[np.isfinite(final)].max())
reached = metrics[metrics["train_loss"] <= target].groupby("run")["elapsed"].min()
time_to_target = per_run[["label", *tables.options]].assign(seconds_to_target=reached)
print(f"target training loss {target:.6g}")
table(time_to_target.sort_values("seconds_to_target"), "time_to_target")

# %%
assert np.isfinite(per_run["mean_s"]).all()
