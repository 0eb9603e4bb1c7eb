#!/usr/bin/env python
"""The demo: uncoded GD against exact and approximate gradient codes under exponential delays.

Launch: ``make demo`` (or ``.venv/bin/python experiments/demo.py --out demo-results``).

Every scheme trains the same logistic model on the same synthetic data from the same start,
and meets the same per-worker delays (``--delay exp:MEAN`` streams derived from the seed).
It prints a table (real time per iteration, final loss, speedup over uncoded) and writes
``loss_vs_time.png``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SCHEMES = [
    ("uncoded", []),
    ("frc", ["--stragglers", "1"]),
    ("cyclic-mds", ["--stragglers", "1"]),
    ("approx", ["--stragglers", "1", "--collect", "3"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo-results")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--delay", default="exp:0.25")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--dataset", default="synthetic:6000x100")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from gdcode.plot import plot_metric, run_label
    from gdcode.results import load_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--workers", str(args.workers), "--delay", args.delay, "--iterations", str(args.iterations),
              "--dataset", args.dataset, "--seed", str(args.seed), "--lr", "1.0", "--out", str(out)]
    runs = []
    for scheme, extra in SCHEMES:
        name = scheme
        if (out / name).exists():
            import shutil

            shutil.rmtree(out / name)
        print(f"running {scheme} ...", flush=True)
        cmd = [sys.executable, "-m", "gdcode", "run", "--scheme", scheme, *extra, *common, "--name", name]
        res = subprocess.run(cmd)
        if res.returncode != 0:
            print(f"demo: {scheme} failed with exit code {res.returncode}", file=sys.stderr)
            return res.returncode
        runs.append(load_run(out / name))

    base = runs[0].summary["elapsed"] / runs[0].summary["iterations"]
    print()
    print(f"W={args.workers}, delay {args.delay}, {args.dataset}, {args.iterations} iterations")
    print(f"{'scheme':<22}{'s/iteration':>12}{'final loss':>12}{'test acc':>10}{'speedup':>9}")
    for run in runs:
        s = run.summary
        per_it = s["elapsed"] / s["iterations"]
        label = run_label(run)
        print(f"{label:<22}{per_it:>12.4f}{s['train_loss']:>12.5f}{s.get('test_accuracy', float('nan')):>10.4f}"
              f"{base / per_it:>8.2f}x")
    fig = out / "loss_vs_time.png"
    plot_metric(runs, fig, x="elapsed", y="train_loss",
                title=f"logistic regression, W={args.workers}, delay {args.delay}")
    print(f"\nfigure: {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
