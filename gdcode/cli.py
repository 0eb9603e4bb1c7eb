"""The ``gdcode`` command: one subcommand per module in :mod:`gdcode.commands`.

Adding a subcommand is one module with ``add_arguments(parser)`` and ``main(args) -> int``,
plus one line in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gdcode import __version__
from gdcode.errors import ConfigError, OptionError

#: subcommand name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("gdcode.commands.info", "versions, MPI library and whether compiled kernels are used"),
    "run": ("gdcode.commands.run", "one training run (launches itself under mpiexec)"),
    "prepare": ("gdcode.commands.prepare", "write a prepared dataset directory from a raw file"),
    "hostfile": ("gdcode.commands.hostfile", "write a hostfile for MPICH or Open MPI"),
    "ec2": ("gdcode.commands.ec2", "launch, inspect, set up and tear down an EC2 cluster"),
    "cluster": ("gdcode.commands.cluster", "emulate a cluster on this machine: network namespaces, shaped links"),
    "codes": ("gdcode.commands.codes", "a gradient code's decode diagnostics (gdcode codes --list)"),
    "simulate": ("gdcode.commands.simulate", "predict a scheme's iteration times under a delay model (no MPI)"),
    "trace": ("gdcode.commands.trace", "convert public per-worker time traces to gdcode's format; their statistics"),
    "plot": ("gdcode.commands.plot", "figures from run directories (loss curves, worker arrivals, iteration times)"),
    "bench": ("gdcode.commands.bench", "benchmarks: compiled kernels against their references"),
}

EXIT_USAGE = 2


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, with every registered subcommand (or, with ``only``, that one alone:
    a rank of a job imports just what its command needs)."""
    parser = argparse.ArgumentParser(
        prog="gdcode",
        description="Straggler-tolerant distributed gradient descent over MPI.",
    )
    parser.add_argument("--version", action="version", version=f"gdcode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or "").strip())
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    args._argv = list(argv)
    try:
        return int(args._module.main(args) or 0)
    except OptionError as exc:
        print(f"gdcode {args.command}: error: {exc.flag_message()}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"gdcode {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
