"""One rank's view of a run: its parts (a :class:`~gdcode.problem.Problem`), the communicator and the run directory.

Set-up (data generation or loading, the evaluation copy, metadata) is outside the timed
path; ``elapsed`` starts with the first iteration.
"""

from __future__ import annotations

import datetime
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gdcode
from gdcode import delays, kernels, models
from gdcode.codes import GradientCode
from gdcode.data import DataSource
from gdcode.options import RunOptions
from gdcode.problem import Problem
from gdcode.provenance import provenance
from gdcode.runtime.roll import Roll


@dataclass
class Context:
    """One rank's view of a run.

    Attributes
    ----------
    problem : gdcode.problem.Problem
        The run's parts, built once on this rank.
    comm : mpi4py.MPI.Comm
        The job's communicator: rank 0 coordinates, ranks 1..W work.
    run_dir : Path
        The run directory (written by rank 0 only).
    command : list of str
        The command line that started the run (for ``metadata.json``).
    roll : gdcode.runtime.roll.Roll or None
        Rank 0's record of the workers' hosts and pids (None on the workers).
    """

    problem: Problem
    comm: Any
    run_dir: Path
    command: list[str] = field(default_factory=list)
    roll: Roll | None = None

    @property
    def options(self) -> RunOptions:
        return self.problem.options

    @property
    def rank(self) -> int:
        return int(self.comm.Get_rank())

    @property
    def worker(self) -> int:
        """0-based worker index of this rank (rank - 1)."""
        return self.rank - 1

    @property
    def source(self) -> DataSource:
        return self.problem.source

    @property
    def model(self) -> models.Model:
        return self.problem.model

    @property
    def code(self) -> GradientCode:
        """The gradient code (coded mode)."""
        assert self.problem.code is not None, "only coded mode has a code"
        return self.problem.code

    @property
    def l2(self) -> float:
        return self.problem.l2

    @property
    def w0(self) -> np.ndarray:
        return self.problem.w0

    @property
    def delay(self) -> delays.DelayModel:
        return self.problem.delay

    @property
    def n_params(self) -> int:
        return self.problem.n_params

    def rows(self, start: int, stop: int) -> tuple[Any, np.ndarray]:
        """Training rows ``start:stop`` (:meth:`gdcode.problem.Problem.rows`)."""
        return self.problem.rows(start, stop)

    def test_set(self) -> tuple[Any, np.ndarray]:
        return self.problem.test_set()


def metadata(ctx: Context, extra: dict | None = None) -> dict:
    """``metadata.json``: options, command line, versions, MPI library, each rank's host and pid, start time, seed.

    Rank 0 only: the hosts and pids are the workers' roll calls (:mod:`gdcode.runtime.roll`),
    waited for here.

    Raises
    ------
    gdcode.runtime.roll.SetupFailed
        When a worker on rank 0's host dies before it has reported.
    """
    import mpi4py
    from mpi4py import MPI

    assert ctx.roll is not None, "metadata is rank 0's"
    ranks = ctx.roll.wait()
    meta = {
        "gdcode_version": gdcode.__version__,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "mpi4py_version": mpi4py.__version__,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
        "mpi_version": "{}.{}".format(*MPI.Get_version()),
        "compiled_kernels": kernels.COMPILED,
        "command": list(ctx.command),
        "executable": sys.executable,
        "start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": ctx.options.seed,
        "options": ctx.options.to_dict(),
        "l2": ctx.l2,
        "n_params": ctx.n_params,
        "dataset": ctx.source.metadata(),
        "world_size": ctx.comm.Get_size(),
        "hosts": {str(rank): host for rank, (host, _) in ranks.items()},
        "pids": {str(rank): pid for rank, (_, pid) in ranks.items()},
    }
    meta["provenance"] = provenance()
    meta.update(extra or {})
    return meta

