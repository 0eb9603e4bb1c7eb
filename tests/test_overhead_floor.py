"""gdcode.runtime.floor and tools/overhead_floor.c: the leanest synchronous loop, behind the README's
overhead floor and the lean-loop line of ``gdcode bench engine``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import E2E_TIMEOUT, mpiexec

TOOLS = Path(__file__).resolve().parent.parent / "tools"
LINE = re.compile(r"^(python|c) W=(\d+) wait=(sleep|yield) yield-us=(\d+): ([\d.]+) ms per iteration, "
                  r"slowest worker's compute ([\d.]+) ms, overhead (-?[\d.]+) ms$")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="doorbells are Linux's")


def _check(stdout: str, language: str, wait: str, window_us: int = 0) -> None:
    lines = [ln for ln in stdout.splitlines() if LINE.match(ln)]
    assert len(lines) == 1, stdout
    lang, workers, mode, window, per_it, compute, overhead = LINE.match(lines[0]).groups()
    assert (lang, int(workers), mode, int(window)) == (language, 2, wait, window_us)
    assert float(per_it) > float(compute) > 0
    assert float(overhead) == pytest.approx(float(per_it) - float(compute), abs=2e-3)


@pytest.mark.parametrize(("wait", "window_us"), [("sleep", 0), ("yield", 0), ("sleep", 300)])
def test_python_floor_runs_its_loop(wait, window_us):
    res = subprocess.run([mpiexec(), "-n", "3", sys.executable, "-m", "gdcode.runtime.floor",
                          "--iterations", "30", "--wait", wait, "--yield-us", str(window_us)],
                         capture_output=True, text=True, timeout=E2E_TIMEOUT)
    assert res.returncode == 0, res.stderr
    _check(res.stdout, "python", wait, window_us)


@pytest.fixture(scope="module")
def floor_binary(tmp_path_factory):
    mpicc = Path(sys.executable).parent / "mpicc"
    if not mpicc.exists() or shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no mpicc beside this Python, or no C compiler")
    out = tmp_path_factory.mktemp("floor") / "overhead_floor"
    res = subprocess.run([str(mpicc), "-O3", "-ffast-math", "-o", str(out), str(TOOLS / "overhead_floor.c"), "-lm"],
                         capture_output=True, text=True, timeout=E2E_TIMEOUT)
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.parametrize(("wait", "window_us"), [("sleep", 0), ("yield", 0), ("sleep", 300)])
def test_c_floor_runs_its_loop(floor_binary, wait, window_us):
    res = subprocess.run([mpiexec(), "-n", "3", str(floor_binary), "--iterations", "30", "--wait", wait,
                          "--yield-us", str(window_us)], capture_output=True, text=True, timeout=E2E_TIMEOUT)
    assert res.returncode == 0, res.stderr
    _check(res.stdout, "c", wait, window_us)


def test_c_floor_refuses_a_bad_option(floor_binary):
    res = subprocess.run([str(floor_binary), "--wait", "spin"], capture_output=True, text=True, timeout=E2E_TIMEOUT)
    assert res.returncode == 2 and "usage" in res.stderr


def test_bench_engine_runs_the_python_floor():
    from gdcode.bench import engine

    overhead = engine._floor(30)
    assert overhead is not None and 0 < overhead < 1.0


def test_a_floor_that_outlives_its_timeout_is_ended_with_all_its_ranks(monkeypatch, popens):
    import os

    from gdcode.bench import engine

    monkeypatch.setattr(engine, "FLOOR_TIMEOUT", 0.5)  # far less than the ranks take to start
    assert engine._floor(100000) is None
    assert len(popens) == 1 and popens[0].returncode is not None
    with pytest.raises(ProcessLookupError):  # mpiexec's session: nothing of the job is left
        os.killpg(popens[0].pid, 0)


def _overhead_row(**changes):
    row = {"scheme": "uncoded (delay none, W=4, 4000x100)", "seconds_per_iteration": 9e-4,
           "ideal_seconds_per_iteration": 1e-4, "overhead_seconds_per_iteration": 8e-4,
           "compute_on_cores_seconds_per_iteration": 2e-4, "cores": 2,
           "wakeup_round_trip_seconds": {"across_cores": {"median": 7e-5, "p10": 5e-5, "p90": 9e-5, "n": 1000},
                                         "same_core": {"median": 1.1e-5, "p10": 1e-5, "p90": 1.3e-5, "n": 1000}},
           "lean_python_overhead_seconds_per_iteration": {"sleeping": 4e-4, "yielding_300us_first": 3e-4}}
    row.update(changes)
    return row


def test_bench_engine_reports_the_overhead_beside_its_floors():
    from gdcode.bench.engine import overhead_lines

    target, machine, lean = overhead_lines(_overhead_row())
    assert "overhead 0.800 ms (target 0.2 ms: MISSED)" in target
    assert "0.070 ms (p10-p90 0.050-0.090) across two cores, 0.011 ms" in machine and "0.200 ms an iteration" in machine
    assert "0.400 ms sleeping" in lean and "0.300 ms yielding" in lean and "2.00x the sleeping loop's" in lean
    met, _, _ = overhead_lines(_overhead_row(overhead_seconds_per_iteration=1.5e-4))
    assert "target 0.2 ms: met" in met


def test_bench_engine_says_which_floor_it_could_not_measure():
    from gdcode.bench.engine import overhead_lines

    row = _overhead_row(cores=1, wakeup_round_trip_seconds={"across_cores": None, "same_core": None},
                        lean_python_overhead_seconds_per_iteration={"sleeping": None, "yielding_300us_first": None})
    _, machine, lean = overhead_lines(row)
    assert "(not measurable here) across two cores" in machine and "shared by 1 core " in machine
    assert lean.count("(could not run)") == 2 and "x the sleeping loop's" not in lean
