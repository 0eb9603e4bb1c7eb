"""Show versions of gdcode, Python, numpy and mpi4py, the MPI library, the kernels in use, and the plug-ins."""

from __future__ import annotations

import argparse
import json
import platform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def collect() -> dict:
    """The facts ``gdcode info`` prints."""
    import numpy as np

    import gdcode
    from gdcode import kernels

    facts = {
        "gdcode": gdcode.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "compiled_kernels": kernels.COMPILED,
        "kernels": "compiled (Cython)" if kernels.COMPILED else "numpy reference (extension not built)",
        "kernel_tuning": kernels.tuning.describe(kernels._linear),
    }
    try:
        import mpi4py

        facts["mpi4py"] = mpi4py.__version__
        from mpi4py import MPI

        facts["mpi_library"] = MPI.Get_library_version().strip().splitlines()[0]
        facts["mpi_standard"] = "{}.{}".format(*MPI.Get_version())
    except ImportError as exc:  # pragma: no cover - mpi4py is a dependency
        facts["mpi4py"] = f"not importable: {exc}"
    from gdcode.runtime.launch import find_mpiexec

    try:
        facts["mpiexec"] = find_mpiexec()
    except Exception as exc:  # noqa: BLE001
        facts["mpiexec"] = f"not found: {exc}"
    facts["plug-ins"] = plugins()
    return facts


def plugins() -> dict[str, list[dict[str, str]]]:
    """The plug-ins of every registry: ``{"codes": [{"name": ..., "source": ...}], ...}``."""
    from gdcode import codes, delays, models, modes, optim

    return {reg.plural: [{"name": name, "source": source} for name, source in reg.plugins()]
            for reg in (codes.CODES, models.MODELS, optim.UPDATES, delays.DELAYS, modes.MODES)}


def _text(value) -> str:
    if isinstance(value, dict):  # the plug-ins
        found = [f"{kind}: " + ", ".join(f"{p['name']} ({p['source']})" for p in items)
                 for kind, items in value.items() if items]
        return "; ".join(found) or "none"
    return str(value)


def main(args: argparse.Namespace) -> int:
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            print(f"{key:<{width}}  {_text(value)}")
    return 0
