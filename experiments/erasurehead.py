#!/usr/bin/env python
"""ErasureHead: uncoded vs exact (frc) vs approximate gradient coding under exponential delays,
for several W and collect.

Launch: `make experiment NAME=erasurehead`
(or `.venv/bin/python experiments/erasurehead.py [--quick] [--out DIR]`).

The runs, options and figures are in `experiments/erasurehead.toml`; the machinery (runs, simulator
predictions, figures, `results.md`) in `experiments/runner.py`. Output: `--out`
(default `experiment-results/erasurehead`). `--dataset DIR` runs it on a prepared dataset.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("erasurehead", __doc__))
