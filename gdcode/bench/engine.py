"""``gdcode bench engine``: real elapsed time of coded schemes against uncoded and their ideal.

Everything is measured in one invocation, on the same data and the same delays:

1. W=6, S=1, ``--delay exp:0.5``, synthetic 6000x100, 20 iterations each of uncoded, frc and
   approx (collect=3). For each scheme: real elapsed seconds per iteration, the ratio to
   uncoded, and the ideal -- per iteration, the time at which the scheme's code could first
   decode given each worker's finish time (its measured compute plus its injected pause,
   both known exactly), averaged over the iterations.
2. ``--delay none``, 4000x100, W=4, uncoded: the coordinator's overhead per iteration, the
   elapsed time minus the slowest worker's measured compute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

DELAY_SCHEMES = [("uncoded", []), ("frc", []), ("approx", ["--collect", "3"])]


def _run(out: Path, name: str, args: list[str]) -> Path:
    cmd = [sys.executable, "-m", "gdcode", "run", "--out", str(out), "--name", name,
           "--record-delays", str(out / f"{name}.compute.csv"), *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"benchmark run {name} failed (exit {res.returncode}):\n{res.stderr}")
    return out / name


def _compute_table(path: Path, n_workers: int, iterations: int) -> np.ndarray:
    """Measured compute seconds per (worker, iteration); a worker cancelled before replying gets
    its median compute time (it is cancelled only when it was not needed)."""
    table = np.full((n_workers, iterations), np.nan)
    with path.open() as fh:
        next(fh)
        for line in fh:
            worker, it, sec = line.strip().split(",")
            if int(it) <= iterations:
                table[int(worker) - 1, int(it) - 1] = float(sec)
    for w in range(n_workers):
        row = table[w]
        row[np.isnan(row)] = np.nanmedian(row) if np.isfinite(row).any() else 0.0
    return table


def ideal_seconds_per_iteration(run_dir: Path, compute: np.ndarray | None = None,
                                absent: dict[int, int] | None = None, per_iteration: bool = False) -> Any:
    """Mean over iterations of the earliest decode time the run's code allows.

    Each worker finishes after its measured compute (``compute``, shape ``(W, iterations)``; by
    default read from the run's ``--record-delays`` file) plus its injected pause; a worker in
    ``absent`` (1-based worker -> first iteration) never replies from that iteration on: the
    ideal of a run in which it is removed from the decode. With ``per_iteration`` the ideal of
    every iteration (an array) instead of their mean.
    """
    from gdcode import problem, rundir
    from gdcode.results import load_run
    from gdcode.simulate import decode_time

    run = load_run(run_dir)
    options = rundir.read_options(run_dir)
    assert run.summary is not None, f"{run_dir} has no summary.json"
    W, T = options.workers, run.summary["iterations"]
    if compute is None:
        assert options.record_delays, f"{run_dir} was run without --record-delays"
        compute = _compute_table(Path(options.record_delays), W, T)
    code = problem.build_code(options)
    model = problem.build_delay(options)
    load = code.load()
    gone = absent or {}
    times = []
    for t in range(1, T + 1):
        finish = np.array([np.inf if w + 1 in gone and t >= gone[w + 1]
                           else compute[w, t - 1] + model.draw(w, t, load[w], compute[w, t - 1]) for w in range(W)])
        times.append(decode_time(code, finish)[0])
    return np.array(times) if per_iteration else float(np.mean(times))


def run(as_json: bool = False, workdir: str | None = None) -> int:
    """Run the benchmark and print its table (or JSON); return the exit code."""
    with tempfile.TemporaryDirectory(prefix="gdcode-bench-", dir=workdir) as tmp:
        out = Path(tmp)
        rows = []
        common = ["--workers", "6", "--stragglers", "1", "--delay", "exp:0.5", "--dataset", "synthetic:6000x100",
                  "--iterations", "20", "--seed", "0"]
        for scheme, extra in DELAY_SCHEMES:
            if not as_json:
                print(f"running {scheme} ...", file=sys.stderr, flush=True)
            run_dir = _run(out, scheme, ["--scheme", scheme, *common, *extra])
            summary = json.loads((run_dir / "summary.json").read_text())
            per_it = summary["elapsed"] / summary["iterations"]
            compute = _compute_table(out / f"{scheme}.compute.csv", 6, summary["iterations"])
            rows.append({"scheme": scheme + (" collect=3" if extra else ""), "seconds_per_iteration": per_it,
                         "ideal_seconds_per_iteration": ideal_seconds_per_iteration(run_dir, compute)})
        base = rows[0]["seconds_per_iteration"]
        for r in rows:
            r["speedup_vs_uncoded"] = base / r["seconds_per_iteration"]
            r["ratio_to_ideal"] = r["seconds_per_iteration"] / r["ideal_seconds_per_iteration"]

        if not as_json:
            print("running uncoded without delays ...", file=sys.stderr, flush=True)
        iterations = 300
        run_dir = _run(out, "overhead", ["--workers", "4", "--delay", "none", "--dataset", "synthetic:4000x100",
                                         "--iterations", str(iterations)])
        summary = json.loads((run_dir / "summary.json").read_text())
        compute = _compute_table(out / "overhead.compute.csv", 4, iterations)
        per_it = summary["elapsed"] / iterations
        overhead = per_it - float(np.mean(compute.max(axis=0)))
        rows.append({"scheme": "uncoded (delay none, W=4, 4000x100)", "seconds_per_iteration": per_it,
                     "speedup_vs_uncoded": None, "ideal_seconds_per_iteration": float(np.mean(compute.max(axis=0))),
                     "overhead_seconds_per_iteration": overhead})

    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"engine benchmark (one invocation; W=6, S=1, exp:0.5, synthetic 6000x100, 20 iterations; "
          f"{os.cpu_count()} cores)")
    print(f"{'scheme':<20}{'s/iteration':>13}{'ideal s/it':>12}{'real/ideal':>12}{'speedup':>10}")
    for r in rows[:-1]:
        print(f"{r['scheme']:<20}{r['seconds_per_iteration']:>13.4f}{r['ideal_seconds_per_iteration']:>12.4f}"
              f"{r['ratio_to_ideal']:>12.3f}{r['speedup_vs_uncoded']:>9.2f}x")
    o = rows[-1]
    print(f"\ncoordinator overhead, {o['scheme']}: {o['seconds_per_iteration'] * 1e3:.3f} ms per iteration, "
          f"slowest worker's compute {o['ideal_seconds_per_iteration'] * 1e3:.3f} ms, "
          f"overhead {o['overhead_seconds_per_iteration'] * 1e3:.3f} ms")
    return 0
