"""What a run leaves behind for a researcher: how it ended, where it came from, its errors, divergence, --init."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from e2e import assert_clean_ending, run_cli

from gdcode import problem
from gdcode.errors import EXIT_DIVERGED, EXIT_FAILED, OptionError
from gdcode.options import RunOptions
from gdcode.provenance import provenance

pytestmark = pytest.mark.mpi

SMALL = ["--workers", "2", "--dataset", "synthetic:400x10", "--iterations", "4"]


def test_a_run_says_how_it_ended_unless_quiet(tmp_path):
    res = run_cli(["run", *SMALL, "--out", str(tmp_path), "--name", "said"], cwd=tmp_path)
    assert res.returncode == 0
    assert_clean_ending(res)  # every rank left through MPI_Finalize and the C library's exit
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"gdcode run: {tmp_path / 'said'}: ok") and "4 iterations" in last
    res = run_cli(["run", *SMALL, "--out", str(tmp_path), "--name", "quiet", "--quiet"], cwd=tmp_path)
    assert res.returncode == 0 and "gdcode run:" not in res.stderr


def test_a_failed_run_leaves_a_summary_and_every_ranks_errors(tmp_path):
    env = {**os.environ, "GDCODE_FAIL_WORKER": "2:3"}
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "gdcode", "run", *SMALL, "--out", str(tmp_path), "--name", "boom"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode not in (0, EXIT_FAILED)  # mpiexec's code: the job aborted
    summary = json.loads((tmp_path / "boom" / "summary.json").read_text())
    assert summary["status"] == "failed" and "failure injected" in summary["error"]
    assert summary["iterations"] == 2
    log = (tmp_path / "boom" / "ranks.log").read_text()
    assert "Traceback" in log and "failure injected at iteration 3" in log
    assert "failure injected" in res.stderr  # the terminal got it too


def test_metadata_records_where_the_run_came_from(tmp_path):
    res = run_cli(["run", *SMALL, "--out", str(tmp_path), "--name", "prov", "--quiet"], cwd=tmp_path)
    assert res.returncode == 0
    prov = json.loads((tmp_path / "prov" / "metadata.json").read_text())["provenance"]
    assert prov["libraries"]["numpy"] == np.__version__ and prov["libraries"]["scipy"]
    assert prov["cpu_count"] == os.cpu_count() and prov["cpu_model"]
    here = provenance()
    assert prov["git"] == here["git"]  # a checkout's commit and whether it was dirty, or None
    assert (tmp_path / "prov" / "ranks.log").exists()


def test_library_versions_are_those_importlib_metadata_finds(monkeypatch, tmp_path):
    import importlib.metadata
    import sys

    from gdcode.provenance import LIBRARIES, library_versions

    def reference() -> dict:
        out = {}
        for name in LIBRARIES:
            try:
                out[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                out[name] = None
        return out

    assert library_versions() == reference()
    # the first on the path wins, under its normalised name; a legacy egg-info goes to importlib
    (tmp_path / "scikit_learn-0.0.1.dist-info").mkdir()
    (tmp_path / "scikit_learn-0.0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: scikit-learn\nVersion: 0.0.1\n")
    (tmp_path / "pandas.egg-info").mkdir()
    (tmp_path / "pandas.egg-info" / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: pandas\nVersion: 0.0.2\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    versions = library_versions()
    assert versions["scikit-learn"] == "0.0.1" == reference()["scikit-learn"]
    assert versions["pandas"] == "0.0.2" == reference()["pandas"]
    assert versions["numpy"] == np.__version__


def test_divergence_is_not_ok(tmp_path):
    res = run_cli(["run", "--workers", "2", "--dataset", "synthetic:400x10", "--iterations", "50", "--model",
                   "least-squares", "--lr", "50", "--out", str(tmp_path), "--name", "div"], cwd=tmp_path)
    assert res.returncode == EXIT_DIVERGED, res.stderr
    summary = json.loads((tmp_path / "div" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "--lr" in summary["error"]
    assert summary["iterations"] < 50


@pytest.mark.parametrize("spec", ["zeros", "normal:1.5"])
def test_init(spec, tmp_path):
    built = problem.build(RunOptions(init=spec, dataset="synthetic:400x10"))
    if spec == "zeros":
        assert not built.w0.any()
    else:
        assert 1.2 < built.w0.std() < 1.8 or built.w0.size < 20
        again = problem.build(RunOptions(init=spec, dataset="synthetic:400x10"))
        assert np.array_equal(built.w0, again.w0)
    np.save(tmp_path / "w.npy", np.arange(10.0))
    assert np.array_equal(problem.build(RunOptions(init=str(tmp_path / "w.npy"), dataset="synthetic:400x10")).w0,
                          np.arange(10.0))


@pytest.mark.parametrize("spec", ["ones", "normal:-1", "normal:x", "missing.npy"])
def test_bad_init(spec):
    with pytest.raises(OptionError) as info:
        problem.build(RunOptions(init=spec, dataset="synthetic:400x10"))
    assert info.value.option == "init"


def test_init_of_the_wrong_length(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3))
    with pytest.raises(OptionError):
        problem.build(RunOptions(init=str(tmp_path / "w.npy"), dataset="synthetic:400x10"))
