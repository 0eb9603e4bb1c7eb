"""``gdcode bench faults``: a frozen worker's cost to tolerant codes, against their ideal.

For each of ``ignore``, ``frc``, ``cyclic-mds`` and ``approx`` (S=1, ``--delay exp:MEAN``, the
same seed), one run in which worker 2 is stopped with SIGSTOP after :data:`FREEZE_AT`
iterations and stays stopped to the end. Printed per scheme, over the iterations after the
freeze: the real seconds per iteration, the ideal (per iteration, the earliest time the code
can decode given every live worker's measured compute and injected pause, worker 2 removed
from the decode; :func:`gdcode.bench.engine.ideal_seconds_per_iteration`) and their ratio.
Everything is measured in one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: iterations before worker 2 is stopped
FREEZE_AT = 20
SCHEMES = (("ignore", 3), ("frc", 4), ("cyclic-mds", 3), ("approx", 4))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=int, default=340, help="iterations per run (default 340)")
    parser.add_argument("--delay", default="exp:0.05", help="delay of every run (default exp:0.05)")


def frozen_run(out: Path, scheme: str, workers: int, iterations: int, delay: str) -> dict:
    """One run with worker 2 stopped after :data:`FREEZE_AT` iterations; its real and ideal times."""
    from gdcode.bench.engine import ideal_seconds_per_iteration
    from gdcode.results import load_run

    run_dir = out / scheme
    cmd = [sys.executable, "-m", "gdcode", "run", "--out", str(out), "--name", scheme, "--quiet",
           "--scheme", scheme, "--workers", str(workers), "--stragglers", "1", "--delay", delay,
           "--dataset", "synthetic:6000x100", "--iterations", str(iterations), "--seed", "0",
           "--record-delays", str(out / f"{scheme}.compute.csv")]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    pid = None
    try:
        while pid is None and proc.poll() is None:  # once frozen, nothing more to watch
            try:
                lines = (run_dir / "metrics.jsonl").read_text().count("\n")
                if lines > FREEZE_AT:  # the initial model's line, then FREEZE_AT iterations
                    pid = int(json.loads((run_dir / "metadata.json").read_text())["pids"]["2"])
                    os.kill(pid, signal.SIGSTOP)
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if pid is not None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
    if proc.returncode != 0 or pid is None:
        raise RuntimeError(f"benchmark run {scheme} failed (exit {proc.returncode})")
    run = load_run(run_dir)
    assert run.summary is not None
    elapsed = dict(zip(run.column("iteration").astype(int), run.column("elapsed"), strict=True))
    first = min(r["iteration"] for r in run.workers if r["worker"] == 2 and r["status"] == "cancelled"
                and r["iteration"] > FREEZE_AT)
    last = run.summary["iterations"]
    real = (elapsed[last] - elapsed[first - 1]) / (last - first + 1)
    ideal_all = ideal_seconds_per_iteration(run_dir, absent={2: first}, per_iteration=True)
    ideal = float(np.mean(ideal_all[first - 1:last]))
    return {"scheme": scheme, "workers": workers, "frozen_from": first, "iterations": last,
            "seconds_per_iteration": real, "ideal_seconds_per_iteration": ideal, "ratio_to_ideal": real / ideal}


def main(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="gdcode-bench-faults-") as tmp:
        for scheme, workers in SCHEMES:
            if not args.json:
                print(f"running {scheme} with worker 2 frozen ...", file=sys.stderr, flush=True)
            rows.append(frozen_run(Path(tmp), scheme, workers, args.iterations, args.delay))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"frozen-worker benchmark (worker 2 SIGSTOPped after {FREEZE_AT} iterations; S=1, {args.delay}, "
          f"synthetic 6000x100; {os.cpu_count()} cores)")
    print(f"{'scheme':<12}{'W':>3}{'frozen its':>12}{'s/iteration':>13}{'ideal s/it':>12}{'real/ideal':>12}")
    for r in rows:
        print(f"{r['scheme']:<12}{r['workers']:>3}{r['iterations'] - r['frozen_from'] + 1:>12}"
              f"{r['seconds_per_iteration']:>13.4f}{r['ideal_seconds_per_iteration']:>12.4f}{r['ratio_to_ideal']:>12.3f}")
    return 0
