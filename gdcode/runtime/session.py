"""One run inside the MPI job: checks, set-up, and the mode's coordinator and worker loops."""

from __future__ import annotations

import sys
from pathlib import Path

from gdcode.config import RunConfig


def run(cfg: RunConfig, argv: list[str], run_dir: Path | None) -> int:
    """Run on every rank of ``MPI.COMM_WORLD``; return this rank's exit code.

    ``run_dir`` is the directory the launcher chose, or None when the job was started by
    hand (rank 0 then chooses it and tells the others).
    """
    from mpi4py import MPI

    from gdcode.runtime import allreduce, coded, gossip, hogwild
    from gdcode.runtime.context import make_context

    comm = MPI.COMM_WORLD
    if comm.Get_size() != cfg.workers + 1:
        if comm.Get_rank() == 0:
            print(f"gdcode run: error: the MPI job has {comm.Get_size()} ranks but --workers "
                  f"{cfg.workers} needs {cfg.workers + 1} (one coordinator and W workers); launch with "
                  f"`mpiexec -n {cfg.workers + 1}` or set --workers {comm.Get_size() - 1}",
                  file=sys.stderr)
        # only rank 0 reports the failure, so the launcher sees one clean exit code
        comm.Barrier()
        return 2 if comm.Get_rank() == 0 else 0
    if run_dir is None:
        run_dir = comm.bcast(choose_run_dir(cfg) if comm.Get_rank() == 0 else None, root=0)
    ctx = make_context(cfg, comm, run_dir, argv)
    modes = {"coded": (coded.coordinate, coded.work), "hogwild": (hogwild.coordinate, hogwild.work),
             "gossip": (gossip.coordinate, gossip.work), "allreduce": (allreduce.coordinate, allreduce.work),
             "local": (allreduce.coordinate, allreduce.work)}
    coordinate, work = modes[cfg.mode]
    return coordinate(ctx) if comm.Get_rank() == 0 else work(ctx)


def choose_run_dir(cfg: RunConfig) -> Path:
    """``OUT/NAME``; NAME defaults to scheme (or mode), workers and the time, made unique."""
    import datetime

    out = Path(cfg.out)
    if cfg.name:
        return out / cfg.name
    label = cfg.scheme if cfg.mode == "coded" else cfg.mode
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{label}-w{cfg.workers}-s{cfg.stragglers}-{stamp}"
    path, k = out / base, 1
    while path.exists():
        k += 1
        path = out / f"{base}-{k}"
    return path
