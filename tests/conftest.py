"""Shared fixtures: launching gdcode under mpiexec as a subprocess and reading its run directory."""

from __future__ import annotations

import pytest
from e2e import run_mpi

from gdcode.results import Run, load_run


@pytest.fixture
def train(tmp_path):
    """Run ``gdcode run`` on W+1 ranks under mpiexec and return the run directory read back."""

    def _train(workers: int, *args: str, name: str = "run", expect_ok: bool = True) -> Run:
        res = run_mpi(workers + 1, ["run", "--workers", str(workers), "--out", str(tmp_path),
                                    "--name", name, *args], cwd=tmp_path)
        if expect_ok:
            assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
        return load_run(tmp_path / name)

    return _train
