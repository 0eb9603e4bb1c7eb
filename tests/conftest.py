"""Shared fixtures: launching gdcode under mpiexec as a subprocess and reading its run directory."""

from __future__ import annotations

import pytest
from e2e import train_run

from gdcode.results import Run


@pytest.fixture
def train(tmp_path):
    """Run ``gdcode run`` on W+1 ranks under mpiexec and return the run directory read back."""

    def _train(workers: int, *args: str, name: str = "run", expect_ok: bool = True) -> Run:
        return train_run(tmp_path, workers, *args, name=name, expect_ok=expect_ok)

    return _train
