"""The ``gdcode`` command: one subcommand per module in :mod:`gdcode.commands`.

Adding a subcommand is one module with ``add_arguments(parser)`` and ``main(args) -> int``,
plus one line in :data:`SUBCOMMANDS`. The module's docstring is its help page's description
and its ``EXAMPLES`` (command lines, one a line) the page's Examples section; both are shown
as written, line breaks kept, with reST markup (double backquotes, roles such as ``:func:``)
removed (:func:`plain`).
"""

from __future__ import annotations

import argparse
import importlib
import re
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


_ROLE = re.compile(r":[A-Za-z_]+(?::[A-Za-z_]+)?:`(~?)([^`<]+?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(text: str | None) -> str | None:
    """``text`` without reST markup, for a help page.

    A double-backquoted literal loses its backquotes; a role (``:func:``, ``:data:``, ...) with
    its target becomes the target, or the target's last dotted name when it starts with a tilde.
    """
    if not text:
        return text

    def role(m: re.Match) -> str:
        target = m.group(2).strip()
        return target.rsplit(".", 1)[-1] if m.group(1) else target

    return _LITERAL.sub(r"\1", _ROLE.sub(role, text))


def examples_epilog(examples: str, epilog: str | None = None) -> str:
    """An epilog ending in an ``Examples:`` section of the command lines in ``examples``."""
    lines = [f"  {line}" if line.strip() else "" for line in examples.strip("\n").splitlines()]
    section = "Examples:\n" + "\n".join(lines)
    return f"{epilog.rstrip()}\n\n{section}" if epilog else section


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Strip reST markup from every text of ``parser`` and of its sub-parsers, kept as written."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)
    for action in parser._actions:
        if action.help and action.help is not argparse.SUPPRESS:
            action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help)
            for sub in dict.fromkeys(action.choices.values()):
                _plain_help(sub)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, with every registered subcommand (or, with ``only``, that one alone:
    a rank of a job imports just what its command needs)."""
    parser = argparse.ArgumentParser(
        prog="gdcode",
        description="Straggler-tolerant distributed gradient descent over MPI.",
        epilog="gdcode COMMAND --help shows a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"gdcode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or "").strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        if getattr(module, "EXAMPLES", None):
            p.epilog = examples_epilog(module.EXAMPLES, p.epilog)
        _plain_help(p)
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
