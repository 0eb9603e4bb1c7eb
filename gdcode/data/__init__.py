"""Datasets: the synthetic generator, dataset specs and partitioning.

``open_dataset(spec, seed, test_fraction)`` returns a :class:`DataSource` for a spec of
``synthetic:ROWSxCOLS`` (more kinds: ``sklearn:NAME`` and prepared directories).
"""

from __future__ import annotations

import re

from gdcode.data.partition import partition_bounds, partition_sizes, stack_rows, worker_rows
from gdcode.data.source import DataSource
from gdcode.data.synthetic import SyntheticSource
from gdcode.errors import ConfigError

__all__ = ["DataSource", "SyntheticSource", "open_dataset", "parse_dataset_spec",
           "partition_bounds", "partition_sizes", "stack_rows", "worker_rows"]

_SYNTHETIC = re.compile(r"^synthetic:(-?\d+)x(-?\d+)$")


def parse_dataset_spec(spec: str) -> tuple[str, dict]:
    """Check a dataset spec and split it into ``(kind, arguments)``.

    Raises
    ------
    ConfigError
        For a malformed or unknown spec, naming the forms that are allowed.
    """
    if spec.startswith("synthetic:"):
        m = _SYNTHETIC.match(spec)
        if not m:
            raise ConfigError(f"--dataset {spec!r}: write synthetic:ROWSxCOLS, e.g. synthetic:4000x100")
        rows, cols = int(m.group(1)), int(m.group(2))
        if rows <= 0 or cols <= 0:
            raise ConfigError(f"--dataset {spec!r}: ROWS and COLS must be positive integers")
        return "synthetic", {"rows": rows, "cols": cols}
    raise ConfigError(f"--dataset {spec!r} is not a known dataset; use synthetic:ROWSxCOLS")


def open_dataset(spec: str, seed: int = 0, test_fraction: float = 0.2) -> DataSource:
    """Open the dataset named by ``spec`` (see :func:`parse_dataset_spec`)."""
    kind, args = parse_dataset_spec(spec)
    if kind == "synthetic":
        try:
            return SyntheticSource(args["rows"], args["cols"], seed=seed, test_fraction=test_fraction)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    raise AssertionError(kind)
