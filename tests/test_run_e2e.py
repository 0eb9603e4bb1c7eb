"""End to end: gdcode run under mpiexec, asserting on the run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from e2e import run_cli, run_mpi

from gdcode import models
from gdcode.data import SyntheticSource

pytestmark = pytest.mark.mpi


def test_uncoded_run_writes_complete_run_directory_and_loss_decreases(train):
    run = train(4, "--dataset", "synthetic:4000x100", "--iterations", "30")
    losses = run.column("train_loss")
    assert len(run.metrics) == 31
    assert [m["iteration"] for m in run.metrics] == list(range(0, 31))  # 0: the initial model, at elapsed 0
    assert run.metrics[0]["elapsed"] == 0.0
    assert losses[-1] < 0.7 * losses[0]
    assert np.all(np.diff(run.column("elapsed")) > 0)
    for key in ("test_loss", "test_accuracy", "test_auc", "responders", "decode_seconds"):
        assert key in run.metrics[-1]
    assert run.summary["status"] == "ok" and run.summary["iterations"] == 30
    assert run.summary["train_loss"] == pytest.approx(losses[-1])
    meta = run.metadata
    for key in ("options", "command", "gdcode_version", "python_version", "numpy_version",
                "mpi4py_version", "mpi_library", "hosts", "start_time", "seed"):
        assert key in meta
    assert meta["options"]["workers"] == 4 and len(meta["hosts"]) == 5
    assert run.model.shape == (100,)
    assert {r["status"] for r in run.workers} == {"used"}
    assert len(run.workers) == 4 * 30


def test_same_seed_gives_identical_metrics_apart_from_timings(train):
    args = ("--dataset", "synthetic:2000x30", "--iterations", "10", "--update", "agd",
            "--seed", "7", "--delay", "exp:0.002")
    a = train(3, *args, name="a")
    b = train(3, *args, name="b")
    timing = {"elapsed", "decode_seconds"}

    def strip(run):
        return [{k: v for k, v in m.items() if k not in timing} for m in run.metrics]

    assert strip(a) == strip(b)
    assert np.array_equal(a.model, b.model)
    other = train(3, *args[:-4], "--seed", "8", name="c")
    assert strip(other) != strip(a)


def test_least_squares_gd_reaches_ridge_closed_form(train):
    rows, cols, l2 = 2000, 20, 1e-3
    run = train(3, "--dataset", f"synthetic:{rows}x{cols}", "--model", "least-squares",
                "--update", "gd", "--lr", "0.15", "--iterations", "80", "--l2", str(l2))
    src = SyntheticSource(rows, cols, seed=0, test_fraction=0.2)
    X, y = src.train_set()
    n = X.shape[0]
    w_star = np.linalg.solve(X.T @ X / n + l2 * np.eye(cols), X.T @ y / n)
    f_star = models.get("least-squares").objective(X, y, w_star, l2)
    assert run.summary["train_loss"] == pytest.approx(f_star, rel=1e-6)
    assert run.summary["train_loss"] >= f_star * (1 - 1e-12)


def test_ignore_stragglers_cancels_slow_workers(train):
    run = train(4, "--scheme", "ignore", "--stragglers", "1", "--delay", "exp:0.05",
                "--iterations", "8", "--dataset", "synthetic:2000x20")
    statuses = [r["status"] for r in run.workers]
    assert len(run.workers) == 4 * 8
    assert statuses.count("used") == 3 * 8
    assert all(m["responders"] >= 3 for m in run.metrics[1:])


@pytest.mark.parametrize("args, flag", [
    (["--workers", "4", "--stragglers", "4"], "--stragglers"),
    (["--workers", "4", "--stragglers", "-1"], "--stragglers"),
    (["--scheme", "nonesuch"], "--scheme"),
    (["--model", "nonesuch"], "--model"),
    (["--update", "nonesuch"], "--update"),
    (["--delay", "nonesuch"], "--delay"),
    (["--delay", "exp:-1"], "--delay"),
    (["--dataset", "nonesuch"], "--dataset"),
    (["--dataset", "synthetic:0x10"], "--dataset"),
    (["--dataset", "synthetic:100x-3"], "--dataset"),
    (["--iterations", "0"], "--iterations"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.5"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--seed", "-3"], "--seed"),
    (["--workers", "2", "--model", "softmax", "--dataset", "synthetic:400x10"], "--model"),
])
def test_bad_input_exits_2_before_mpi(tmp_path, args, flag):
    res = run_cli(["run", "--out", str(tmp_path / "out"), *args], cwd=tmp_path, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"gdcode run: error: {flag}"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not any((tmp_path / "out").glob("*/metrics.jsonl"))


def test_unwritable_out_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = run_cli(["run", "--out", str(blocker / "sub")], cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert "--out" in res.stderr and "not a writable directory" in res.stderr


def test_existing_run_directory_is_not_overwritten(tmp_path, train):
    train(2, "--iterations", "2", "--dataset", "synthetic:500x10", name="keep")
    before = (tmp_path / "keep" / "metrics.jsonl").read_text()
    res = run_cli(["run", "--workers", "2", "--out", str(tmp_path), "--name", "keep"], cwd=tmp_path)
    assert res.returncode == 2 and "already holds a run" in res.stderr
    assert (tmp_path / "keep" / "metrics.jsonl").read_text() == before


def test_world_size_mismatch_exits_2(tmp_path):
    res = run_mpi(3, ["run", "--workers", "4", "--out", str(tmp_path)], cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("gdcode run: error: --workers 4") and res.stderr.count("\n") == 1


def test_timeout_ends_run_with_status_timeout(tmp_path):
    res = run_cli(["run", "--workers", "2", "--delay", "exp:2", "--iterations", "1000",
                   "--timeout", "1.5", "--out", str(tmp_path), "--name", "slow",
                   "--dataset", "synthetic:500x10"], cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    summary = json.loads((tmp_path / "slow" / "summary.json").read_text())
    assert summary["status"] == "timeout"
    lines = (tmp_path / "slow" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == summary["iterations"] + 1  # and the initial model
    for line in lines:
        json.loads(line)


def test_launcher_runs_itself_under_mpiexec(tmp_path):
    res = run_cli(["run", "--workers", "2", "--iterations", "3", "--dataset", "synthetic:600x10",
                   "--out", str(tmp_path), "--name", "self"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "self" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["iterations"] == 3


def test_waiting_ranks_do_not_spin(train):
    """5 ranks on a 2-core machine under 0.3 s mean delays: workers mostly wait, and waiting is cheap."""
    run = train(4, "--delay", "exp:0.3", "--iterations", "6", "--dataset", "synthetic:2000x20")
    cpu = np.array(run.summary["worker_cpu_seconds"])
    wall = np.array(run.summary["worker_wall_seconds"])
    assert np.all(wall > 1.0)
    assert np.all(cpu / wall < 0.2), cpu / wall


def test_a_check_that_needs_no_mpi_starts_no_mpi_process(tmp_path):
    """The model/dataset task is checked by the launcher: mpiexec is never called."""
    marker = tmp_path / "mpiexec-was-called"
    fake = tmp_path / "fake-mpiexec"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(0o755)
    env_cmd = ["env", f"MPIEXEC={fake}"]
    import subprocess
    import sys

    res = subprocess.run([*env_cmd, sys.executable, "-m", "gdcode", "run", "--workers", "2", "--model", "softmax",
                          "--dataset", "synthetic:400x10", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
