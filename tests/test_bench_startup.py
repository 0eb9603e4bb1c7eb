"""What start-up depends on: ``gdcode bench startup``'s count of the modules every process compiles
again, and the one BLAS thread of a rank (its timings are a benchmark's, not asserted)."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
import time

import pytest

import gdcode
from gdcode.bench import startup


def test_modules_without_up_to_date_bytecode_are_counted(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "sub/b.py"):
        (pkg / name).write_text("X = 1\n")
    monkeypatch.setattr(gdcode, "__file__", str(pkg / "__init__.py"))
    assert startup.uncompiled_modules() == 3
    py_compile.compile(str(pkg / "__init__.py"))
    py_compile.compile(str(pkg / "sub" / "b.py"))
    assert startup.uncompiled_modules() == 1
    time.sleep(0.01)
    (pkg / "sub" / "b.py").write_text("X = 2\n")  # edited after it was compiled
    assert startup.uncompiled_modules() == 2


# Imports gdcode's entry module as ``python -m gdcode`` does (its main is not called), then
# numpy, and prints the BLAS thread counts numpy's OpenBLAS started with.
_BLAS_THREADS = """
import sys
import gdcode.__main__
assert "numpy" not in sys.modules, "numpy loaded before the entry module set its threads"
import numpy
from threadpoolctl import threadpool_info
print(*sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}))
"""


@pytest.mark.parametrize(("env", "threads"), [
    ({"PMI_RANK": "1"}, "1"),  # a rank under hydra: one thread
    ({"PMI_RANK": "1", "OPENBLAS_NUM_THREADS": "2"}, "2"),  # the user's choice is kept
    ({}, None),  # not a rank (the launcher, a notebook): OpenBLAS's default, one per core
])
def test_a_rank_starts_one_blas_thread_unless_the_user_chose(env, threads):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("OpenBLAS starts one thread on a one-core machine anyway")
    base = {k: v for k, v in os.environ.items()
            if k not in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS",
                         "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    res = subprocess.run([sys.executable, "-c", _BLAS_THREADS], env={**base, **env}, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    if threads is None:
        assert int(res.stdout) > 1
    else:
        assert res.stdout.split() == [threads]
