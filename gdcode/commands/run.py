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
from gdcode.errors import ConfigError, OptionError
from gdcode.options import RunOptions
from gdcode.runtime.launch import LOG_FILE

#: the Examples section of the help page
EXAMPLES = """\
gdcode run --workers 4 --dataset synthetic:4000x100 --iterations 50
gdcode run --scheme cyclic-mds --workers 6 --stragglers 1 --delay exp:0.25 --name mds
gdcode run experiments/run-example.toml --iterations 20      # command-line options override the file
gdcode run --workers 4 --iterations 100 --checkpoint-every 10 --name long
gdcode run --resume results/long --iterations 200
MPIEXEC_ARGS="-f hostfile.mpich" gdcode run --workers 8 --dataset prepared/covtype
"""


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
    from gdcode.runtime import phases
    from gdcode.runtime.launch import in_mpi_job, launch

    phases.mark("imported")
    command = ["gdcode", *args._argv]
    if in_mpi_job():
        return _in_job(args, command)
    if args.handoff:
        raise ConfigError("--handoff is how the launcher starts the ranks; run `gdcode run` without it")
    options, claim = prepare(args)
    try:
        calibrate_kernels()  # before options.json's time stamp, which bench startup takes as the handoff
        rundir.write_options(claim.path, options, command)
        # the ranks' output is a pipe under mpiexec: tell rank 0 whether the user sees a terminal
        os.environ.setdefault("GDCODE_PROGRESS", "1" if sys.stderr.isatty() else "0")
        spec = None
        if options.cluster is not None:
            from gdcode.cluster.emulate import launch_spec

            spec = launch_spec(options.cluster, options.workers)
        code = launch(options.workers + 1, ["run", "--handoff", str(claim.path)], timeout=options.timeout,
                      run_dir=claim.path, tolerate_failures=options.tolerate_failures,
                      mpiexec_args=spec.mpiexec_args if spec else (), env=spec.env if spec else None)
        summary = record_ending(claim.path, code)
        if not options.quiet:
            print(closing_line(claim.path, summary), file=sys.stderr)
        return code
    finally:
        claim.release()


def record_ending(run_dir: Path, code: int) -> dict:
    """The run's ``summary.json``; when the job wrote none (a rank raised, the job was killed),
    one is written now with status ``failed`` (or ``terminated`` after a signal), the first error
    line of ``ranks.log`` and the last finished iteration."""
    import json
    import signal

    from gdcode.results import read_metrics, write_json

    path = run_dir / "summary.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    lines = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    signals = {128 + int(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    status = "terminated" if code in signals else "failed"
    try:
        log = (run_dir / LOG_FILE).read_text(errors="replace")
    except OSError:
        log = ""
    summary = {"status": status, "iterations": int(lines[-1]["iteration"]) if lines else 0,
               "elapsed": float(lines[-1]["elapsed"]) if lines else 0.0, "exit_code": int(code),
               "error": first_error_line(log) or f"the MPI job ended with exit code {code}",
               "written_by": "launcher"}
    try:
        write_json(path, summary)
    except OSError:
        pass
    return summary


def first_error_line(log: str) -> str | None:
    """The first line of a job's standard error that states an error: gdcode's own, or the last line of
    a Python traceback (``ValueError: ...``)."""
    import re

    lines = log.splitlines()
    for line in lines:
        if line.startswith("gdcode run: error:"):
            return line[len("gdcode run: error:"):].strip()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            for later in lines[i + 1:]:
                if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", later):
                    return later.strip()
    return None


def closing_line(run_dir: Path, summary: dict) -> str:
    """One line: where the run is, how it ended, how far it got, its final losses."""
    parts = [f"gdcode run: {run_dir}: {summary.get('status', '?')}",
             f"{summary.get('iterations', 0)} iterations in {float(summary.get('elapsed', 0.0)):.3g} s"]
    if "train_loss" in summary:
        parts.append(f"train loss {summary['train_loss']:.6g}")
    for key in ("test_accuracy", "test_auc", "test_rmse"):
        if summary.get(key) is not None:
            parts.append(f"{key.replace('_', ' ')} {summary[key]:.4g}")
            break
    if summary.get("status") not in ("ok", None) and summary.get("error"):
        parts.append(str(summary["error"]))
    return "; ".join(parts)


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
    if options.cluster is not None:
        check_cluster(options)
    if options.resume:
        claim = rundir.claim_resume(options.resume)
        rundir.mark_stale(claim.path)
        return options, claim
    claim, options = rundir.claim_new(options)
    return options, claim


def check_fault_injection(workers: int) -> None:
    """Refuse a malformed ``GDCODE_FAIL_WORKER`` (the tests' fault injection) before launch."""
    text = os.environ.get("GDCODE_FAIL_WORKER")
    if text:
        from gdcode.runtime.worker import parse_failure  # with the transport: not for every launch

        try:
            parse_failure(text, workers)
        except ValueError as exc:
            raise ConfigError(f"GDCODE_FAIL_WORKER={text!r}: {exc}") from None


#: MPIEXEC_ARGS options that would contradict an emulated cluster's launcher and placement
_PLACEMENT_ARGS = ("-f", "-hostfile", "-machinefile", "-hosts", "-host", "-launcher", "-launcher-exec", "-bootstrap",
                   "-bootstrap-exec", "-localhost", "-ppn")


def check_cluster(options: RunOptions) -> None:
    """Refuse ``--cluster NAME`` unless that emulated cluster is up and has room for the workers.

    Also refused: inside an MPI job (the launcher must place the ranks), with
    ``--tolerate-failures``, with a launcher other than hydra, and with ``$MPIEXEC_ARGS`` that
    place ranks themselves.

    Raises
    ------
    OptionError
        Naming ``cluster``.
    """
    from gdcode.cluster.emulate import launch_spec
    from gdcode.runtime.launch import check_tolerant_launcher, in_mpi_job

    name = options.cluster
    if in_mpi_job():
        raise OptionError("cluster", name, "gdcode run starts the ranks on the cluster's hosts itself; run it "
                                           "outside mpiexec")
    if options.tolerate_failures:
        raise OptionError("cluster", name, "cannot be combined with --tolerate-failures (its launch keeps the "
                                           "ranks on rank 0's host)")
    clash = [a for a in os.environ.get("MPIEXEC_ARGS", "").split() if a in _PLACEMENT_ARGS]
    if clash:
        raise OptionError("cluster", name, f"places the ranks itself; MPIEXEC_ARGS has {' '.join(clash)}: unset it")
    try:
        launch_spec(name or "", options.workers)
    except ConfigError as exc:
        raise OptionError("cluster", name, str(exc)) from None
    check_tolerant_launcher("cluster", name)
