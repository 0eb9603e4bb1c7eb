#!/usr/bin/env python
"""Coded (uncoded, frc, approx) against asynchronous training (hogwild, gossip with each mixing,
allreduce, local SGD) under the same persistent and exponential delays.

Launch: `make experiment NAME=compare_async`
(or `.venv/bin/python experiments/compare_async.py [--quick] [--out DIR]`).

The runs, options and figures are in `experiments/compare_async.toml`; the machinery (runs, simulator
predictions, figures, `results.md`) in `experiments/runner.py`. Output: `--out`
(default `experiment-results/compare_async`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("compare_async", __doc__))
