"""Benchmarks: ``gdcode bench TARGET [--json] [options]``.

Targets (:data:`TARGETS`): ``kernels``, the compiled gradient kernels against the numpy/scipy
two-pass reference and the machine's read bandwidth; ``engine``, the real elapsed time of the
coded schemes against uncoded and their ideal; ``faults``, tolerant codes with a frozen worker
against their ideal; ``simulator``, the simulator at W=1000 against the closed forms;
``startup``, where a run's set-up time goes. Every target takes ``--json`` (a JSON list of
result rows); ``gdcode bench TARGET --help`` lists a target's own options.
"""

from __future__ import annotations

import argparse
import importlib

#: the Examples section of the help page
EXAMPLES = """\
gdcode bench kernels
gdcode bench engine --json
gdcode bench faults
"""

#: target name -> module implementing it. Adding a target is one line here, naming a module that has
#: either ``main(args) -> int`` (and optionally ``add_arguments(parser)`` for its own options, on its
#: own sub-parser) or ``run(as_json: bool) -> int``.
TARGETS: dict[str, str] = {
    "kernels": "gdcode.bench.kernels",
    "engine": "gdcode.bench.engine",
    "faults": "gdcode.bench.faults",
    "simulator": "gdcode.bench.simulator",
    "startup": "gdcode.bench.startup",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET")
    sub.required = True
    for name, module_name in TARGETS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0],
                           description=(module.__doc__ or "").strip())
        p.add_argument("--json", action="store_true",
                       help="print a JSON list of result rows instead of a table")
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)


def main(args: argparse.Namespace) -> int:
    module = importlib.import_module(TARGETS[args.target])
    if hasattr(module, "main"):
        return int(module.main(args) or 0)
    return int(module.run(as_json=args.json) or 0)
