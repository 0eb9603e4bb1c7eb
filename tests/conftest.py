"""Shared fixtures: launching gdcode under mpiexec as a subprocess and reading its run directory."""

from __future__ import annotations

import subprocess

import pytest
from e2e import train_run

from gdcode.results import Run


@pytest.fixture
def train(tmp_path):
    """Run ``gdcode run`` on W+1 ranks under mpiexec and return the run directory read back."""

    def _train(workers: int, *args: str, name: str = "run", expect_ok: bool = True) -> Run:
        return train_run(tmp_path, workers, *args, name=name, expect_ok=expect_ok)

    return _train


@pytest.fixture
def popens(monkeypatch):
    """Every ``subprocess.Popen`` the test starts, in order (to check each has ended)."""
    started: list[subprocess.Popen] = []
    real = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    return started
