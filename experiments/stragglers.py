#!/usr/bin/env python
"""Stragglers that persist (Markov slow spells, correlated hosts, a recorded trace) against uncoded,
ignore, frc, approx, stale-gradient reuse, K-batch SGD and adaptive waiting.

Launch: `make experiment NAME=stragglers`
(or `.venv/bin/python experiments/stragglers.py [--quick] [--out DIR]`).

The runs, options and figures are in `experiments/stragglers.toml`; the machinery (runs, simulator
predictions, figures, `results.md`) in `experiments/runner.py`. Output: `--out`
(default `experiment-results/stragglers`). `--dataset DIR` runs it on a prepared dataset.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("stragglers", __doc__))
