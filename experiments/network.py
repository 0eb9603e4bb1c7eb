#!/usr/bin/env python
"""Emulated hosts: uncoded, frc, approx, Hogwild, gossip and all-reduce over TCP links shaped to
three network settings (and unshaped), real seconds per iteration against the network-aware simulator.

Launch (as root): `make experiment NAME=network`
(or `.venv/bin/python experiments/network.py [--quick] [--out DIR]`).

The runs, options and figures are in `experiments/network.toml`; the machinery (runs, simulator
predictions, figures, `results.md`) in `experiments/runner.py`. Output: `--out`
(default `experiment-results/network`). It makes each emulated cluster
(`gdcode cluster up`) before its runs and removes it after them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("network", __doc__))
