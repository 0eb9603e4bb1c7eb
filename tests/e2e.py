"""Launching gdcode under mpiexec (or its own launcher) as a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: seconds an end-to-end job may take before the test fails (and the job is killed)
E2E_TIMEOUT = float(os.environ.get("GDCODE_TEST_TIMEOUT", "120"))


def mpiexec() -> str:
    """``$MPIEXEC``, else the mpiexec beside this Python (the venv's MPI wheel)."""
    env = os.environ.get("MPIEXEC")
    if env:
        return env
    return str(Path(sys.executable).parent / "mpiexec")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_mpi(n_ranks: int, args: list[str], cwd: Path, timeout: float = E2E_TIMEOUT
            ) -> subprocess.CompletedProcess:
    """``mpiexec -n N python -u -m mpi4py -m gdcode ARGS`` in ``cwd``."""
    cmd = [mpiexec(), "-n", str(n_ranks), sys.executable, "-u", "-m", "mpi4py", "-m", "gdcode", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def run_cli(args: list[str], cwd: Path, timeout: float = E2E_TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m gdcode ARGS`` outside MPI (``run`` launches itself)."""
    cmd = [sys.executable, "-u", "-m", "gdcode", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def train_run(out: Path, workers: int, *args: str, name: str = "run", expect_ok: bool = True):
    """``gdcode run --workers W ARGS`` on W+1 ranks under mpiexec into ``out/name``; the run read back."""
    from gdcode.results import load_run

    res = run_mpi(workers + 1, ["run", "--workers", str(workers), "--out", str(out), "--name", name, *args], cwd=out)
    if expect_ok:
        assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
        assert_clean_ending(res)
    return load_run(out / name)


def assert_clean_ending(res: subprocess.CompletedProcess) -> None:
    """No rank of a job that succeeded looked to hydra like a crash (its banner names one that did)."""
    assert "BAD TERMINATION" not in res.stdout + res.stderr, res.stdout + res.stderr
