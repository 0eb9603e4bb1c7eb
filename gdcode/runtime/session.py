"""One run inside the MPI job: the world size, the run's parts, and the mode's loop on each rank."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from gdcode import problem
from gdcode.errors import EXIT_FAILED, ConfigError, OptionError
from gdcode.modes import get as get_mode
from gdcode.options import RunOptions
from gdcode.rundir import Claim
from gdcode.runtime import doorbell, phases, signals, transport
from gdcode.runtime.context import Context
from gdcode.runtime.roll import Roll, SetupFailed, answer
from gdcode.runtime.traffic import CountingComm, Traffic
from gdcode.runtime.worker import fail_in_setup


def world_size() -> int:
    """The size of ``MPI.COMM_WORLD`` (initialises MPI)."""
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.Get_size())


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


def run_handoff(options: RunOptions, run_dir: Path, command: list[str]) -> int:
    """A rank of a job the launcher started: its options come from the claimed run directory."""
    from mpi4py import MPI

    phases.mark("mpi_ready")
    return run(options, run_dir, command, MPI.COMM_WORLD)


def run_by_hand(start: Callable[[], tuple[RunOptions, Claim]], command: list[str]) -> int:
    """A rank of a job started by hand: rank 0 resolves, checks and claims (``start()``) and
    broadcasts the options; a bad input ends every rank, rank 0 with exit code 2 and one line."""
    from mpi4py import MPI

    phases.mark("mpi_ready")
    comm = MPI.COMM_WORLD
    claim = None
    message: tuple = ("error", "")
    if comm.Get_rank() == 0:
        try:
            options, claim = start()
            message = ("ok", options.to_dict(), str(claim.path))
        except OptionError as exc:
            message = ("error", f"gdcode run: error: {exc.flag_message()}")
        except ConfigError as exc:
            message = ("error", f"gdcode run: error: {exc}")
    message = comm.bcast(message, root=0)
    if message[0] == "error":
        if comm.Get_rank() == 0:
            print(message[1], file=sys.stderr)
            return 2
        return 0
    try:
        return run(RunOptions.from_dict(message[1]), Path(message[2]), command, comm)
    finally:
        if claim is not None:
            claim.release()


def run(options: RunOptions, run_dir: Path, command: list[str], comm: Any) -> int:
    """Run on every rank of ``comm``; return this rank's exit code.

    Every rank builds the run's parts once (:func:`gdcode.problem.build`) and runs its mode's
    loop: ``coordinate`` on rank 0, ``work`` on ranks 1..W.
    """
    try:
        check_world(options, comm.Get_size())
    except OptionError as exc:
        # only rank 0 reports the failure, so the launcher sees one clean exit code
        if comm.Get_rank() == 0:
            print(f"gdcode run: error: {exc.flag_message()}", file=sys.stderr)
        comm.Barrier()
        return 2 if comm.Get_rank() == 0 else 0
    transport.tune_timers()
    if comm.Get_rank() == 0:
        signals.install()  # SIGTERM/SIGHUP: rank 0 stops the workers and writes the summary
    if options.tolerate_failures:
        return _tolerant(options, run_dir, command, comm)
    try:
        ctx = _context(options, run_dir, command, comm)
        phases.mark("built")
        loop = importlib.import_module(ctx.problem.mode.runtime)
        return loop.coordinate(ctx) if comm.Get_rank() == 0 else _work(loop, ctx)
    except SetupFailed as exc:
        _setup_failed(exc, options, comm)


def _setup_failed(exc: SetupFailed, options: RunOptions, comm: Any) -> NoReturn:
    """Rank 0 found a worker dead before the first iteration: one line, and the job ends (the
    set-up's collectives cannot complete without it)."""
    hint = "; --tolerate-failures goes on without a worker only once training has begun" \
        if options.tolerate_failures else ""
    print(f"gdcode run: error: {exc} (its error, if it raised one, is above); ending the job{hint}",
          file=sys.stderr, flush=True)
    comm.Abort(EXIT_FAILED)
    raise SystemExit(EXIT_FAILED)  # not reached: Abort ends this process too


def _context(options: RunOptions, run_dir: Path, command: list[str], comm: Any) -> Context:
    """This rank's view of the run: the workers' roll call (:mod:`gdcode.runtime.roll`, first,
    so that rank 0 can tell a worker dead in what follows), the job's communicator counting bytes
    and, if the mode may use them, ringing doorbells (collective: :func:`doorbell.connect`, run
    before the parts are built, whose failure on one rank then comes after it), and its parts built.

    Raises
    ------
    SetupFailed
        On rank 0, when a worker on its host dies in the doorbell's collectives.
    """
    rank = comm.Get_rank()
    roll = Roll(comm, options.workers) if rank == 0 else None
    call = answer(comm) if rank > 0 else None
    bell = doorbell.connect(comm, roll.check if roll is not None else None) if get_mode(options.mode).doorbell \
        else None
    transport.use_doorbell(bell)
    counting = CountingComm(comm, Traffic(comm.Get_size()), bell=bell)
    ctx = Context(problem=problem.build(options), comm=counting, run_dir=Path(run_dir), command=list(command),
                  roll=roll)
    if call is not None:
        fail_in_setup(rank - 1, options.workers)
        transport.poll_until(call.Test)
    return ctx


def _work(loop: Any, ctx: Context) -> int:
    """A worker's loop, then its table of bytes sent to rank 0 (its last message)."""
    from gdcode.runtime.protocol import Tag
    from gdcode.runtime.transport import poll_until

    code = loop.work(ctx)
    phases.mark("loop_end")
    report = np.concatenate([ctx.comm.traffic.report(), phases.vector()])
    req = ctx.comm.Isend_uncounted(report, dest=0, tag=Tag.TRAFFIC)
    poll_until(req.Test)
    return int(code)


def _tolerant(options: RunOptions, run_dir: Path, command: list[str], comm: Any) -> int:
    """A rank of a ``--tolerate-failures`` job, which runs without ``python -m mpi4py``.

    A worker that raises reports it and exits on its own (rank 0 then finds it dead); an error
    on rank 0 still ends the whole job, as ``-m mpi4py`` would.
    """
    import os
    import traceback

    try:
        ctx = _context(options, run_dir, command, comm)
        loop = importlib.import_module(ctx.problem.mode.runtime)
        return loop.coordinate(ctx) if comm.Get_rank() == 0 else _work(loop, ctx)
    except SetupFailed as exc:
        _setup_failed(exc, options, comm)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        sys.stdout.flush()
        if comm.Get_rank() == 0:
            comm.Abort(1)
        os._exit(1)
