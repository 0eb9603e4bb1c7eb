"""Show versions of gdcode, Python and the libraries, the MPI library, the kernels in use, the git
checkout, the CPU, the MPI-related environment variables, and the plug-ins: what a run's
metadata.json records as its provenance."""

from __future__ import annotations

import argparse
import json
import platform

#: the Examples section of the help page
EXAMPLES = """\
gdcode info
gdcode info --json
"""


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
        "mlp_kernel": "compiled (Cython, scipy BLAS)" if kernels.MLP_COMPILED else "numpy reference (not built)",
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
    from gdcode.provenance import provenance

    prov = provenance()
    facts["git"] = prov["git"] or "not a checkout"
    facts["libraries"] = {k: v for k, v in prov["libraries"].items() if v is not None}
    facts["cpu"] = f"{prov['cpu_model']} ({prov['cpu_count']} cores)"
    facts["platform"] = prov["platform"]
    facts["environment"] = prov["environment"] or "no MPI-related variables set"
    facts["plug-ins"] = plugins()
    return facts


def plugins() -> dict[str, list[dict[str, str]]]:
    """The plug-ins of every registry: ``{"codes": [{"name": ..., "source": ...}], ...}``."""
    from gdcode import codes, delays, models, modes, optim

    return {reg.plural: [{"name": name, "source": source} for name, source in reg.plugins()]
            for reg in (codes.CODES, models.MODELS, optim.UPDATES, delays.DELAYS, modes.MODES)}


def _text(value) -> str:
    if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):  # the plug-ins
        found = [f"{kind}: " + ", ".join(f"{p['name']} ({p['source']})" for p in items)
                 for kind, items in value.items() if items]
        return "; ".join(found) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
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
