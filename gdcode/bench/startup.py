"""``gdcode bench startup``: the wall time of a one-iteration run, and where it goes.

Runs ``gdcode run --workers 4 --dataset synthetic:4000x100 --iterations 1`` (W and the dataset
can be changed) ``--repeat`` times and splits each run's wall time with the times the launcher
and every rank note (``options.json``'s ``written_at``, ``summary.json``'s ``phases``):

* launcher: its Python start, imports, the checks, claiming the run directory;
* mpiexec: from the handoff until the first rank's process exists;
* imports: a rank's Python start and imports, until its command is parsed (the slowest rank);
* MPI init: ``MPI_Init`` (the slowest rank);
* set-up: building the run's parts, reading or generating rows, metadata, the initial
  evaluation, until the barrier that starts the clock (the slowest rank);
* training: the loop on rank 0;
* teardown: from the last rank's end of loop until the launcher returns (finalising, the
  summary, the closing line).

Every figure is the median over the repeats, with the range. With ``PYTHONDONTWRITEBYTECODE``
set, Python never writes the bytecode of gdcode's modules, and a note says how many every
process compiles again (``make install`` writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the phases printed, in order
PARTS = ("launcher", "mpiexec", "imports", "mpi_init", "set_up", "training", "teardown", "total")
TARGET_SECONDS = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=4, help="W (default 4)")
    parser.add_argument("--dataset", default="synthetic:4000x100", help="dataset (default synthetic:4000x100)")
    parser.add_argument("--repeat", type=int, default=5, help="runs (default 5)")


def one_run(out: Path, name: str, workers: int, dataset: str) -> dict[str, float]:
    """One run's wall time, split into :data:`PARTS`."""
    cmd = [sys.executable, "-m", "gdcode", "run", "--workers", str(workers), "--dataset", dataset,
           "--iterations", "1", "--quiet", "--out", str(out), "--name", name]
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True)
    end = time.time()
    if res.returncode != 0:
        raise RuntimeError(f"benchmark run failed (exit {res.returncode}):\n{res.stderr}")
    written = json.loads((out / name / "options.json").read_text())["written_at"]
    ph = json.loads((out / name / "summary.json").read_text())["phases"]

    def last(phase: str) -> float:
        return max(v for v in ph[phase] if v is not None)

    started = min(v for v in ph["process_start"] if v is not None)
    imports = max(i - s for s, i in zip(ph["process_start"], ph["imported"], strict=True)
                  if s is not None and i is not None)
    mpi = max(m - i for i, m in zip(ph["imported"], ph["mpi_ready"], strict=True) if i is not None and m is not None)
    return {"launcher": written - t0, "mpiexec": max(started - written, 0.0),  # /proc's start is in 10 ms ticks
            "imports": imports, "mpi_init": mpi,
            "set_up": last("ready") - last("mpi_ready"), "training": ph["loop_end"][0] - ph["ready"][0],
            "teardown": end - last("loop_end"), "total": end - t0}


def uncompiled_modules() -> int:
    """How many of gdcode's modules have no bytecode as new as their source: with
    ``PYTHONDONTWRITEBYTECODE`` set, every process of every run compiles those again."""
    import importlib.util

    import gdcode

    n = 0
    for src in Path(gdcode.__file__).parent.rglob("*.py"):
        try:
            n += Path(importlib.util.cache_from_source(str(src))).stat().st_mtime < src.stat().st_mtime
        except (OSError, ValueError, NotImplementedError):
            n += 1
    return n


def main(args: argparse.Namespace) -> int:
    runs = []
    with tempfile.TemporaryDirectory(prefix="gdcode-bench-startup-") as tmp:
        for i in range(args.repeat):
            if not args.json:
                print(f"run {i + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            runs.append(one_run(Path(tmp), f"r{i}", args.workers, args.dataset))
    summary = {part: {"median": statistics.median(r[part] for r in runs), "min": min(r[part] for r in runs),
                      "max": max(r[part] for r in runs)} for part in PARTS}
    met = summary["total"]["max"] <= TARGET_SECONDS
    no_bytecode = uncompiled_modules() if os.environ.get("PYTHONDONTWRITEBYTECODE") else 0
    if args.json:
        print(json.dumps({"workers": args.workers, "dataset": args.dataset, "runs": runs, "summary": summary,
                          "target_seconds": TARGET_SECONDS, "target_met": met,
                          "modules_compiled_per_process": no_bytecode}, indent=2))
        return 0
    print(f"start-up benchmark: gdcode run --workers {args.workers} --dataset {args.dataset} --iterations 1, "
          f"{args.repeat} runs; {os.cpu_count()} cores; seconds, median (range)")
    for part in PARTS:
        s = summary[part]
        print(f"  {part:<10}{s['median']:>8.3f}  ({s['min']:.3f}-{s['max']:.3f})")
    print(f"target: the whole run within {TARGET_SECONDS:g} s on every run: {'met' if met else 'MISSED'}")
    if no_bytecode:
        print(f"note: PYTHONDONTWRITEBYTECODE is set and {no_bytecode} of gdcode's modules have no up-to-date "
              "bytecode, so every process compiles them (make install, or python -m compileall on the gdcode "
              "package, writes it)")
    return 0
