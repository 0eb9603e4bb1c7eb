#!/usr/bin/env python
"""The Elastic Gossip thesis's neural networks (iris, digits; MNIST when prepared): all-reduce,
elastic gossip, push-sum, local SGD and no communication against uncoded, frc and approx.

Launch: `make experiment NAME=thesis`
(or `.venv/bin/python experiments/thesis.py [--quick] [--out DIR]`).

The runs, options and figures are in `experiments/thesis.toml`; the machinery (runs, simulator
predictions, figures, `results.md`) in `experiments/runner.py`. Output: `--out`
(default `experiment-results/thesis`). `--dataset DIR` runs it on a prepared dataset;
`--setup mnist` runs the thesis's MNIST network on `prepared/mnist` (`gdcode prepare mnist`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("thesis", __doc__))
