"""Train one model: ``gdcode run [CONFIG.toml] [--option value ...]``.

Outside an MPI job it resolves the options (defaults, the TOML file, the command line), checks
everything that needs no MPI, claims the run directory, writes the resolved options into it
and launches ``mpiexec -n W+1 python -m mpi4py -m gdcode run`` on that directory; the ranks
read the options from there. Started by hand inside an MPI job, rank 0 does the same resolve,
check and claim and hands the options to the other ranks.

Exit codes: 0 done, 2 bad input, 3 ``--timeout`` reached.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gdcode import options as opts
from gdcode import problem, rundir
from gdcode.errors import ConfigError
from gdcode.options import RunOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="TOML file of options (command-line options override it)")
    opts.add_arguments(parser)
    # the launcher's handoff to the ranks: a claimed run directory holding options.json
    parser.add_argument("--handoff", default=None, help=argparse.SUPPRESS)


def resolve(args: argparse.Namespace) -> RunOptions:
    """The run's options: defaults, TOML and command line; or, with ``--resume``, the run's own."""
    cli = opts.given(args)
    if cli.get("resume"):
        if args.config:
            raise ConfigError(f"--resume continues a run with its own options; a config file ({args.config}) "
                              "cannot be given")
        return rundir.resume_options(cli["resume"], cli)
    toml = opts.load_toml(args.config) if args.config else {}
    if toml.get("resume"):
        raise ConfigError(f"config file {args.config}: resume cannot be set in a config file; continue a run with "
                          "`gdcode run --resume RUN_DIR` (it keeps the run's own options)")
    return opts.from_sources(toml, cli)


def prepare(args: argparse.Namespace) -> tuple[RunOptions, rundir.Claim]:
    """Resolve, check and claim: the options to run (name set) and the claimed run directory.

    Raises
    ------
    ConfigError
        For any bad input; nothing is written then.
    """
    return prepare_resolved(resolve(args))


def main(args: argparse.Namespace) -> int:
    from gdcode.runtime.launch import in_mpi_job, launch

    command = ["gdcode", *args._argv]
    if in_mpi_job():
        return _in_job(args, command)
    if args.handoff:
        raise ConfigError("--handoff is how the launcher starts the ranks; run `gdcode run` without it")
    options, claim = prepare(args)
    try:
        rundir.write_options(claim.path, options, command)
        # the ranks' output is a pipe under mpiexec: tell rank 0 whether the user sees a terminal
        os.environ.setdefault("GDCODE_PROGRESS", "1" if sys.stderr.isatty() else "0")
        calibrate_kernels()
        return launch(options.workers + 1, ["run", "--handoff", str(claim.path)], timeout=options.timeout,
                      run_dir=claim.path, tolerate_failures=options.tolerate_failures)
    finally:
        claim.release()


def calibrate_kernels() -> None:
    """Calibrate the compiled kernels' prefetch distances here, in the launcher, when this
    machine and build have none cached, so that the ranks read them from the cache instead of
    each measuring at start-up (gdcode.kernels.tuning). A failure only costs speed: the
    built-in defaults then serve."""
    try:
        from gdcode.kernels import calibrate

        calibrate.ensure(log=lambda message: print(message, file=sys.stderr))
    except Exception as exc:  # noqa: BLE001 - calibration must never stop a run
        print(f"gdcode run: kernel calibration failed ({exc}); the built-in prefetch distances "
              "serve", file=sys.stderr)


def _in_job(args: argparse.Namespace, command: list[str]) -> int:
    """Inside the MPI job: the options from the launcher's run directory, or resolved by rank 0."""
    from gdcode.runtime import session

    if args.handoff:
        run_dir = Path(args.handoff)
        return session.run_handoff(rundir.read_options(run_dir), run_dir, rundir.read_command(run_dir) or command)

    def start() -> tuple[RunOptions, rundir.Claim]:
        options = resolve(args)
        session.check_world(options, session.world_size())
        options, claim = prepare_resolved(options)
        rundir.write_options(claim.path, options, command)
        return options, claim

    return session.run_by_hand(start, command)


def prepare_resolved(options: RunOptions) -> tuple[RunOptions, rundir.Claim]:
    """Check resolved options and claim their run directory (see :func:`prepare`)."""
    problem.check(options)
    check_fault_injection(options.workers)
    if options.tolerate_failures:
        from gdcode.runtime.launch import check_tolerant_launcher, in_mpi_job

        if in_mpi_job():
            raise ConfigError("--tolerate-failures needs the job started by `gdcode run` (it launches the ranks "
                              "so that a dead one does not end the job); run it outside mpiexec")
        check_tolerant_launcher()
    if options.resume:
        claim = rundir.claim_resume(options.resume)
        rundir.mark_stale(claim.path)
        return options, claim
    claim, options = rundir.claim_new(options)
    return options, claim


def check_fault_injection(workers: int) -> None:
    """Refuse a malformed ``GDCODE_FAIL_WORKER`` (the tests' fault injection) before launch."""
    from gdcode.runtime.worker import parse_failure

    text = os.environ.get("GDCODE_FAIL_WORKER")
    if text:
        try:
            parse_failure(text, workers)
        except ValueError as exc:
            raise ConfigError(f"GDCODE_FAIL_WORKER={text!r}: {exc}") from None
