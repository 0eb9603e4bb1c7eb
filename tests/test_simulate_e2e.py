"""End to end: the simulator predicts real MPI runs on the same delays, and fits their reply times."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from e2e import run_cli

from gdcode.cli import main as cli_main

pytestmark = pytest.mark.mpi


def _simulate(argv: list[str]) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["simulate", *argv, "--json"]) == 0
    return json.loads(buf.getvalue())


@pytest.mark.parametrize(("scheme", "stragglers"), [("uncoded", 0), ("ignore", 1)])
def test_simulate_predicts_a_real_runs_mean_iteration_time(tmp_path, train, scheme, stragglers):
    compute = tmp_path / "compute.csv"
    args = ["--scheme", scheme, "--stragglers", str(stragglers), "--delay", "exp:0.1", "--seed", "3"]
    run = train(4, *args, "--iterations", "8", "--dataset", "synthetic:2000x20", "--record-delays", str(compute))
    real = run.summary["elapsed"] / run.summary["iterations"]
    sim = _simulate(["--workers", "4", *args, "--replay", "--draws", "8", "--compute", f"trace:{compute}"])
    assert sim["replay"] and sim["draws"] == 8
    assert sim["mean_iteration_seconds"] == pytest.approx(real, rel=0.20)
    # the fitted delay model says what the run's delays were
    fit = _simulate(["--fit", str(run.path), "--compute", f"trace:{compute}", "--bootstrap", "100"])
    by = {m["model"]: m for m in fit["models"]}
    assert fit["observed"] + fit["censored"] == 32 and (fit["censored"] > 0) == (stragglers > 0)
    assert 0.05 < by["exp"]["params"][0] < 0.2  # the pauses' mean, 0.1 s, from 32 values (some censored)
    assert by["exp"]["aic"] < by["pareto"]["aic"] and fit["best"] in ("exp", "shifted-exp")


def test_progress_line_only_when_asked_for_and_never_with_quiet(tmp_path):
    import os

    from e2e import run_mpi

    env = dict(os.environ)
    try:
        os.environ["GDCODE_PROGRESS"] = "1"
        res = run_mpi(3, ["run", "--workers", "2", "--iterations", "3", "--dataset", "synthetic:500x10",
                          "--out", str(tmp_path), "--name", "p"], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "gdcode: iteration 3/3 (100%)  elapsed" in res.stderr and "loss" in res.stderr
        res = run_mpi(3, ["run", "--workers", "2", "--iterations", "3", "--dataset", "synthetic:500x10",
                          "--out", str(tmp_path), "--name", "q", "--quiet"], cwd=tmp_path)
        assert res.returncode == 0 and "iteration 3/3" not in res.stderr
        del os.environ["GDCODE_PROGRESS"]
        # launched by gdcode with its output captured (not a terminal): no progress line, the closing line only
        res = run_cli(["run", "--workers", "2", "--iterations", "3", "--dataset", "synthetic:500x10",
                       "--out", str(tmp_path), "--name", "r"], cwd=tmp_path)
        assert res.returncode == 0 and "gdcode: iteration" not in res.stderr
        assert res.stderr.strip().splitlines()[-1].startswith("gdcode run: ")
    finally:
        os.environ.clear()
        os.environ.update(env)


def test_progress_line_draws_in_place_and_throttles():
    import io

    from gdcode.runtime import progress

    buf = io.StringIO()
    line = progress.Progress(100, True, buf)
    for t in range(1, 101):
        line.update(t, 0.01 * t, 1.0 / t)
    line.close()
    text = buf.getvalue()
    assert text.startswith("\rgdcode: iteration 1/100 (1%)  elapsed 0.01 s  loss 1")
    assert "iteration 100/100 (100%)  elapsed 1.00 s  loss 0.01" in text and text.endswith("\n")
    assert text.count("\r") < 10  # at most a few redraws a second
    off = io.StringIO()
    quiet = progress.Progress(5, False, off)
    quiet.update(5, 1.0, 0.5)
    quiet.close()
    assert off.getvalue() == ""


def test_progress_wanted(monkeypatch):
    import io

    from gdcode.runtime import progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("GDCODE_PROGRESS", raising=False)
    assert progress.wanted(False, Tty()) and not progress.wanted(False, io.StringIO())
    assert not progress.wanted(True, Tty())
    monkeypatch.setenv("GDCODE_PROGRESS", "0")
    assert not progress.wanted(False, Tty())
    monkeypatch.setenv("GDCODE_PROGRESS", "1")
    assert progress.wanted(False, io.StringIO()) and not progress.wanted(True, io.StringIO())


def test_progress_line_says_how_long_is_left():
    import io

    from gdcode.runtime import progress

    buf = io.StringIO()
    line = progress.Progress(10, True, buf)
    line.update(1, 0.1, 1.0)
    line._start -= 10.0  # as if the first iteration took 10 s
    line._last = -float("inf")
    line.update(2, 0.2, 0.5)
    assert "left ~1 min 20 s" in buf.getvalue()  # 10 s an iteration, 8 to go
