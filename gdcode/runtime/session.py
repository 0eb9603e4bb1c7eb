"""One run inside the MPI job: the world size, the run's parts, and the mode's loop on each rank."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from gdcode import problem
from gdcode.errors import OptionError
from gdcode.options import RunOptions
from gdcode.runtime.context import Context


def check_world(options: RunOptions, size: int) -> None:
    """Refuse a job whose world size is not W+1.

    Raises
    ------
    OptionError
        Naming ``workers`` and the two ways to fix it.
    """
    if size != options.workers + 1:
        raise OptionError("workers", options.workers,
                          f"needs {options.workers + 1} ranks (one coordinator and W workers) but the MPI job "
                          f"has {size}; launch with `mpiexec -n {options.workers + 1}` or set --workers {size - 1}")


def run(options: RunOptions, run_dir: Path, command: list[str], comm: Any) -> int:
    """Run on every rank of ``comm``; return this rank's exit code.

    Every rank builds the run's parts once (:func:`gdcode.problem.build`) and runs its mode's
    loop: ``coordinate`` on rank 0, ``work`` on ranks 1..W.
    """
    import sys

    try:
        check_world(options, comm.Get_size())
    except OptionError as exc:
        # only rank 0 reports the failure, so the launcher sees one clean exit code
        if comm.Get_rank() == 0:
            print(f"gdcode run: error: {exc.flag_message()}", file=sys.stderr)
        comm.Barrier()
        return 2 if comm.Get_rank() == 0 else 0
    ctx = Context(problem=problem.build(options), comm=comm, run_dir=Path(run_dir), command=list(command))
    loop = importlib.import_module(ctx.problem.mode.runtime)
    return loop.coordinate(ctx) if comm.Get_rank() == 0 else loop.work(ctx)
