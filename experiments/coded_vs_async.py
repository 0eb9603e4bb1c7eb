#!/usr/bin/env python
"""Coded schemes (uncoded, ignore, frc, cyclic-mds) vs the asynchronous modes (hogwild, gossip,
allreduce, local) under persistent stragglers.

Launch: `make experiment NAME=coded_vs_async`
(or `.venv/bin/python experiments/coded_vs_async.py [--quick] [--out DIR]`).

The runs, options and figures are in `experiments/coded_vs_async.toml`; the machinery (runs, simulator
predictions, figures, `results.md`) in `experiments/runner.py`. Output: `--out`
(default `experiment-results/coded_vs_async`). `--dataset DIR` runs it on a prepared dataset.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("coded_vs_async", __doc__))
