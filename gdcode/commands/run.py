"""Train one model: ``gdcode run [CONFIG.toml] [--option value ...]``.

Outside an MPI job it checks every option, then launches itself as
``mpiexec -n W+1 python -m mpi4py -m gdcode run ...``; inside one, the world size must be W+1.
Exit codes: 0 done, 2 bad input, 3 ``--timeout`` reached.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gdcode import config
from gdcode.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_run_arguments(parser)


#: set by the launcher in the job it starts: the options were checked before the job started
LAUNCHED = "GDCODE_LAUNCHED"


def resolve_args(args: argparse.Namespace, check_code: bool = True):
    """The run's config: defaults, TOML, command line; or, with ``--resume``, the run's own options."""
    if args.resume:
        return resolve_resume(args, check_code)
    toml = config.load_toml(args.config) if args.config else {}
    return config.resolve(config.merge(args, toml), check_code=check_code)


def resolve_resume(args: argparse.Namespace, check_code: bool = True):
    """Options of a resumed run: those in its ``metadata.json``, with the few that may change."""
    from gdcode.runtime import checkpoint

    run_dir = Path(args.resume)
    meta = checkpoint.read_metadata(run_dir)
    changed = [f"--{o.name}" for o in config.OPTIONS
               if getattr(args, o.dest, None) is not None and o.dest not in config.RESUME_OVERRIDES]
    if changed or args.config:
        allowed = ", ".join("--" + d.replace("_", "-") for d in config.RESUME_OVERRIDES if d != "resume")
        raise ConfigError(f"--resume continues a run with its own options; {' '.join(changed) or args.config} "
                          f"cannot be given (only {allowed} may)")
    stored = {k: v for k, v in meta.get("options", {}).items() if k in config.OPTION_BY_DEST}
    values = config.merge(args, None, **stored)
    for dest in config.RESUME_OVERRIDES:
        given = getattr(args, dest, None)
        if given is not None:
            values[dest] = config._convert(config.OPTION_BY_DEST[dest], given, "command line")
    values.update(resume=str(run_dir), out=str(run_dir.parent), name=run_dir.name)
    state = checkpoint.load(run_dir)
    if values["iterations"] <= state["iteration"]:
        raise ConfigError(f"--resume {run_dir}: its checkpoint is at iteration {state['iteration']}; "
                          f"give --iterations above that (now {values['iterations']})")
    return config.resolve(values, check_code=check_code)


def main(args: argparse.Namespace) -> int:
    from gdcode.runtime.launch import in_mpi_job, launch

    argv = [a for a in args._argv if a != "run"] if args._argv[:1] == ["run"] else args._argv
    if not in_mpi_job():
        cfg = resolve_args(args)
        # the ranks' output is a pipe under mpiexec: tell rank 0 whether the user sees a terminal
        os.environ.setdefault("GDCODE_PROGRESS", "1" if sys.stderr.isatty() else "0")
        if not cfg.resume:
            run_dir = _run_dir(cfg)
            if cfg.name is None:
                argv = [*argv, "--name", run_dir.name]
        os.environ[LAUNCHED] = "1"
        return launch(cfg.workers + 1, ["run", *argv], timeout=cfg.timeout)

    try:
        cfg = resolve_args(args, check_code=os.environ.get(LAUNCHED) != "1")
    except ConfigError as exc:
        if _mpi_rank() == 0:
            print(f"gdcode run: error: {exc}", file=sys.stderr)
        return 2
    from gdcode.runtime import session

    return session.run(cfg, ["run", *argv], None)


def _run_dir(cfg) -> Path:
    from gdcode.runtime.session import choose_run_dir

    path = choose_run_dir(cfg)
    check_new_run_dir(path)
    return path


def check_new_run_dir(path: Path) -> None:
    """Refuse to start a run over an existing one, so that nothing written is lost."""
    if (path / "metrics.jsonl").exists() or (path / "summary.json").exists():
        raise ConfigError(f"the run directory {path} already holds a run; choose another --name "
                          "or --out (nothing was overwritten)")


def _mpi_rank() -> int:
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0
