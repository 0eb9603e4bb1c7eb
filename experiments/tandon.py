#!/usr/bin/env python
"""Tandon et al. (ICML 2017): naive vs fractional repetition vs cyclic vs ignore-stragglers under
a persistent straggler.

Launch: `make experiment NAME=tandon`
(or `.venv/bin/python experiments/tandon.py [--quick] [--out DIR]`).

The runs, options and figures are in `experiments/tandon.toml`; the machinery (runs, simulator
predictions, figures, `results.md`) in `experiments/runner.py`. Output: `--out`
(default `experiment-results/tandon`). `--dataset DIR` runs it on a prepared dataset.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("tandon", __doc__))
