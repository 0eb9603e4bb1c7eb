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
# Launch: `GDCODE_RUNS=experiment-results/erasurehead/runs .venv/bin/python experiments/analysis.py`, or open
# it as a notebook (`jupytext --to notebook experiments/analysis.py`, or Jupyter with jupytext installed).
#
# `GDCODE_RUNS` names a run directory, a folder of run directories, or several of either separated by
# `:` (default: `experiment-results`, searched recursively). `GDCODE_FIGURES`, if set, is a folder where
# the figures are saved as PNG as well as shown.
#
# The run directory is the contract of docs/run-directory.md: `metadata.json` (options), `metrics.jsonl`
# (one line per iteration), `workers.csv` (iteration, worker, arrival, status) and `summary.json`.

# %%
import json
import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

RUNS = os.environ.get("GDCODE_RUNS", "experiment-results")
FIGURES = os.environ.get("GDCODE_FIGURES")


def find_run_dirs(spec: str) -> list[Path]:
    """Every run directory (a folder holding metrics.jsonl) named by or under the paths in ``spec``."""
    found = []
    for part in filter(None, spec.split(":")):
        p = Path(part)
        if (p / "metrics.jsonl").is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(q.parent for q in p.rglob("metrics.jsonl")))
    if not found:
        raise SystemExit(f"no run directories under {spec!r}; set GDCODE_RUNS to a run directory or a folder of them")
    return found


def save(fig, name: str) -> None:
    """Show the figure, and save it under GDCODE_FIGURES when that is set."""
    if FIGURES:
        Path(FIGURES).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(FIGURES) / f"{name}.png", dpi=110)
    if matplotlib.get_backend().lower() == "agg":  # run as a script without a display
        plt.close(fig)
    else:
        plt.show()


run_dirs = find_run_dirs(RUNS)
print(f"{len(run_dirs)} run(s):", ", ".join(str(p) for p in run_dirs))

# %% [markdown]
# ## One table per file
#
# `runs` has one row per run (its options and summary); `metrics` one row per iteration; `workers` one row
# per (iteration, worker). The `run` column (the directory name) joins them.

# %%
KEY_OPTIONS = ["mode", "scheme", "workers", "stragglers", "collect", "delay", "delay_scale_with_load",
               "dataset", "model", "update", "lr", "iterations", "seed"]

rows, metric_frames, worker_frames = [], [], []
for d in run_dirs:
    meta = json.loads((d / "metadata.json").read_text()) if (d / "metadata.json").exists() else {}
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    opts = meta.get("options", {})
    label = opts.get("scheme", "?") if opts.get("mode", "coded") == "coded" else opts.get("mode")
    if opts.get("stragglers"):
        label += f" S={opts['stragglers']}"
    if opts.get("collect"):
        label += f" collect={opts['collect']}"
    rows.append({"run": d.name, "label": label, **{k: opts.get(k) for k in KEY_OPTIONS},
                 **{f"summary_{k}": v for k, v in summary.items() if not isinstance(v, (list, dict))}})
    m = pd.read_json(d / "metrics.jsonl", lines=True)
    m.insert(0, "run", d.name)
    metric_frames.append(m)
    if (d / "workers.csv").exists():
        w = pd.read_csv(d / "workers.csv")
        w.insert(0, "run", d.name)
        worker_frames.append(w)

runs = pd.DataFrame(rows).set_index("run")
metrics = pd.concat(metric_frames, ignore_index=True)
workers = pd.concat(worker_frames, ignore_index=True) if worker_frames else pd.DataFrame(
    columns=["run", "iteration", "worker", "arrival", "status"])
metrics = metrics.merge(runs[["label", "workers"]], left_on="run", right_index=True)
runs[["label", "workers", "delay", "summary_iterations", "summary_elapsed", "summary_train_loss"]]

# %% [markdown]
# ## Seconds per iteration, and how they spread
#
# An iteration's wall-clock time is the difference of consecutive `elapsed` values (evaluation is off the
# clock, so it is not in them); every run's first line is its initial model, at elapsed 0.

# %%
metrics = metrics.sort_values(["run", "iteration"])
metrics["iteration_seconds"] = metrics.groupby("run")["elapsed"].diff()
per_run = metrics.dropna(subset=["iteration_seconds"]).groupby("run").agg(label=("label", "first"), W=("workers", "first"),
                                     iterations=("iteration", "max"),
                                     mean_s=("iteration_seconds", "mean"),
                                     p50_s=("iteration_seconds", "median"),
                                     p90_s=("iteration_seconds", lambda s: s.quantile(0.9)),
                                     final_loss=("train_loss", "last"))
per_run  # noqa: B018 (a notebook cell's value is displayed)

# %%
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
order = per_run.sort_values(["W", "mean_s"]).index
ax.boxplot([metrics.loc[metrics.run == r, "iteration_seconds"] for r in order])
ax.set_xticks(range(1, len(order) + 1), [f"{per_run.loc[r, 'label']}, W={per_run.loc[r, 'W']}" for r in order])
ax.set_ylabel("iteration time (s)")
ax.tick_params(axis="x", labelrotation=30)
ax.set_title("distribution of iteration times")
save(fig, "iteration_times")

# %% [markdown]
# ## Training loss against wall-clock time
#
# One line per run; log scale when the loss spans a decade.

# %%
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for run, g in metrics.groupby("run", sort=False):
    label = f"{runs.loc[run, 'label']}, W={runs.loc[run, 'workers']}"
    ax.plot(g["elapsed"], g["train_loss"], marker=".", ms=3, label=label)
loss = metrics["train_loss"].dropna()
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
status_counts  # noqa: B018

# %%
arrival_by_worker = workers.dropna(subset=["arrival"]).pivot_table(index="run", columns="worker", values="arrival",
                                                                    aggfunc="mean")
arrival_by_worker.round(4)

# %%
if len(arrival_by_worker):
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(arrival_by_worker)), layout="constrained")
    im = ax.imshow(arrival_by_worker.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(arrival_by_worker)), [runs.loc[r, "label"] for r in arrival_by_worker.index])
    ax.set_xticks(range(arrival_by_worker.shape[1]), arrival_by_worker.columns)
    ax.set_xlabel("worker")
    fig.colorbar(im, ax=ax, label="mean arrival after iteration start (s)")
    save(fig, "mean_arrival_per_worker")

# %% [markdown]
# ## Time to a target loss
#
# The first `elapsed` at which each run's training loss reaches the target (by default the largest of the
# runs' final losses, which every run reaches).

# %%
target = float(os.environ.get("GDCODE_TARGET_LOSS", metrics.groupby("run")["train_loss"].last().max()))
reached = metrics[metrics["train_loss"] <= target].groupby("run")["elapsed"].min()
time_to_target = per_run[["label", "W"]].assign(seconds_to_target=reached)
print(f"target training loss {target:.6g}")
time_to_target.sort_values(["W", "seconds_to_target"])

# %%
assert np.isfinite(per_run["mean_s"]).all()
