"""Starting the MPI job: detecting whether we are inside one, and launching ourselves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from gdcode.errors import ConfigError

# Environment variables that MPICH (Hydra), Open MPI, PMIx and Slurm set in every rank.
_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def in_mpi_job() -> bool:
    """True when this process was started by an MPI launcher (checked without initialising MPI)."""
    return any(var in os.environ for var in _MPI_ENV)


def find_mpiexec() -> str:
    """The launcher: ``$MPIEXEC``, else ``mpiexec`` beside this Python (the venv's MPI wheel), else PATH."""
    env = os.environ.get("MPIEXEC")
    if env:
        return env
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise ConfigError("no mpiexec found: install the MPI wheel (`pip install mpich`) or set MPIEXEC")
    return found


def launch_command(n_ranks: int, argv: list[str], extra_mpiexec_args: list[str] | None = None) -> list[str]:
    """``mpiexec -n N python -m mpi4py -m gdcode ARGV...``; ``$MPIEXEC_ARGS`` adds launcher options."""
    extra = list(extra_mpiexec_args or []) + os.environ.get("MPIEXEC_ARGS", "").split()
    return [find_mpiexec(), "-n", str(n_ranks), *extra, sys.executable, "-u", "-m", "mpi4py", "-m",
            "gdcode", *argv]


def launch(n_ranks: int, argv: list[str], timeout: float | None = None) -> int:
    """Run ``gdcode ARGV`` on ``n_ranks`` ranks and return the job's exit code.

    With ``timeout``, the launcher itself ends a job that outlives it by a grace period (the
    coordinator normally stops the run first and writes ``summary.json``).
    """
    cmd = launch_command(n_ranks, argv)
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return proc.wait(timeout=None if timeout is None else timeout + 30.0)
    except subprocess.TimeoutExpired:
        print(f"gdcode: error: the MPI job outlived --timeout {timeout:g} s by 30 s; killing it",
              file=sys.stderr)
        return _kill(proc)
    except KeyboardInterrupt:
        _kill(proc)
        raise


def _kill(proc: subprocess.Popen) -> int:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return 124
