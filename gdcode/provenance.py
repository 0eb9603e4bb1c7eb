"""Where a run came from: the code's version and checkout, the libraries, the machine, the MPI settings.

:func:`provenance` is what ``metadata.json`` records beside the options and what ``gdcode info``
shows. It imports nothing heavy: library versions come from the installed distributions'
metadata, so a rank does not import matplotlib or scikit-learn to record them.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import gdcode

#: distributions whose versions a run records
LIBRARIES = ("numpy", "scipy", "scikit-learn", "mpi4py", "mpich", "openmpi", "matplotlib", "pandas")
#: environment variables that change how MPI or the kernels behave; a run records those set
ENV_PREFIXES = ("MPIR_CVAR_", "MPICH_", "HYDRA_", "UCX_", "FI_", "OMPI_", "PMIX_MCA_", "OMP_", "OPENBLAS_",
                "MKL_", "GDCODE_")
ENV_NAMES = ("MPIEXEC", "MPIEXEC_ARGS", "PYTHONHASHSEED")


def library_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`LIBRARIES` (None when not installed).

    Read from the names of the ``NAME-VERSION.dist-info`` directories on ``sys.path``, the
    first one found winning as for an import: one directory listing each, where
    :mod:`importlib.metadata` would scan every distribution and parse its metadata for each
    library (tens of milliseconds of rank 0's set-up). With a legacy ``.egg-info`` install on
    the path, :mod:`importlib.metadata` reads them all.
    """
    found: dict[str, str] = {}
    legacy = False
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info"):
                dist, _, version = name[: -len(".dist-info")].rpartition("-")
                found.setdefault(_canonical(dist), version)
            elif name.endswith(".egg-info"):
                legacy = True
    if not legacy:
        return {name: found.get(_canonical(name)) for name in LIBRARIES}
    import importlib.metadata

    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (``scikit_learn`` is ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def git_state(path: Path | None = None) -> dict[str, Any] | None:
    """The commit and whether the tree is dirty, when gdcode runs from a git checkout (else None)."""
    root = Path(path) if path is not None else Path(gdcode.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not commit or status.returncode != 0:
        return None
    return {"commit": commit, "dirty": bool(status.stdout.strip())}


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mpi_environment() -> dict[str, str]:
    """The environment variables that change MPI's or the kernels' behaviour, as set now."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}


def provenance() -> dict[str, Any]:
    """gdcode's version and checkout, Python, the libraries, the CPU and the MPI-related environment."""
    return {"gdcode_version": gdcode.__version__, "git": git_state(), "python_version": platform.python_version(),
            "libraries": library_versions(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "environment": mpi_environment()}
