"""End to end: the asynchronous modes and the allreduce/local baselines under mpiexec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from e2e import run_cli

from gdcode import models
from gdcode.data import SyntheticSource

pytestmark = pytest.mark.mpi

ROWS, COLS, L2 = 2000, 20, 1e-3
RIDGE = ("--dataset", f"synthetic:{ROWS}x{COLS}", "--model", "least-squares", "--l2", str(L2))


@pytest.fixture(scope="module")
def f_star():
    """The ridge optimum's objective on the training rows (the closed form of docs/objectives.md)."""
    X, y = SyntheticSource(ROWS, COLS, seed=0, test_fraction=0.2).train_set()
    n = X.shape[0]
    w = np.linalg.solve(X.T @ X / n + L2 * np.eye(COLS), X.T @ y / n)
    return models.get("least-squares").objective(X, y, w, L2)


def check_async_run_directory(run, workers):
    """The contract of an asynchronous run directory (docs/run-directory.md)."""
    first = run.metrics[0]
    assert first["iteration"] == 0 and first["elapsed"] == 0.0
    assert np.all(np.diff(run.column("iteration")) >= 0)
    assert np.all(np.diff(run.column("elapsed")) >= 0)
    assert run.summary["status"] == "ok"
    assert run.summary["iterations"] == run.metrics[-1]["iteration"]
    assert run.summary["train_loss"] == pytest.approx(run.metrics[-1]["train_loss"])
    assert "test_loss" in run.metrics[-1] and "test_rmse" in run.summary
    assert len(run.summary["worker_cpu_seconds"]) == workers
    assert run.model.shape == (COLS,)
    assert run.metadata["options"]["mode"] == run.metadata["mode"]
    assert {r["worker"] for r in run.workers} == set(range(1, workers + 1))


def test_allreduce_gd_equals_coded_uncoded_gd(train):
    args = ("--dataset", "synthetic:3000x30", "--iterations", "15", "--update", "agd", "--lr", "0.5",
            "--delay", "exp:0.001")
    coded = train(3, *args, name="coded")
    allred = train(3, "--mode", "allreduce", *args, name="allreduce")
    assert [m["iteration"] for m in allred.metrics] == list(range(0, 16))
    np.testing.assert_allclose(allred.column("train_loss"), coded.column("train_loss"), rtol=0, atol=1e-9)
    np.testing.assert_allclose(allred.column("test_loss"), coded.column("test_loss"), rtol=0, atol=1e-9)
    np.testing.assert_allclose(allred.model, coded.model, rtol=0, atol=1e-9)
    assert allred.summary["status"] == "ok" and allred.summary["iterations"] == 15
    assert len(allred.workers) == 3 * 15 and {r["status"] for r in allred.workers} == {"used"}
    assert np.all(np.diff(allred.column("elapsed")) > 0)
    # ranks on one host sleep until rung, except where collectives need every rank polling
    assert coded.summary["waits"] == "doorbell" and allred.summary["waits"] == "polling"


def test_allreduce_minibatch_sgd_loss_decreases(train, f_star):
    run = train(3, "--mode", "allreduce", *RIDGE, "--batch-size", "64", "--lr", "0.05", "--iterations", "60",
                name="sgd")
    losses = run.column("train_loss")
    assert len(losses) == 61 and losses[-1] < 0.6 * losses[0]
    assert losses[-1] < 1.1 * f_star


def test_hogwild_reaches_the_optimum_and_records_every_update(train, f_star):
    run = train(3, "--mode", "hogwild", *RIDGE, "--lr", "0.05", "--iterations", "150",
                "--delay", "exp:0.001", "--eval-every", "0.05", name="hogwild")
    check_async_run_directory(run, 3)
    losses = run.column("train_loss")
    assert losses[-1] < 0.5 * losses[0]
    assert run.summary["train_loss"] <= 1.05 * f_star
    s = run.summary
    assert s["worker_pushes"] == [150, 150, 150] and s["dropped_stale"] == [0, 0, 0]
    assert sum(s["worker_updates"]) == s["iterations"] == 450
    assert len(run.workers) == 450 and {r["status"] for r in run.workers} == {"used"}
    for w in (1, 2, 3):
        assert sorted(r["iteration"] for r in run.workers if r["worker"] == w) == list(range(1, 151))


def test_hogwild_max_staleness_drops_and_counts(train):
    run = train(3, "--mode", "hogwild", *RIDGE, "--lr", "0.05", "--iterations", "40", "--pull-every", "4",
                "--max-staleness", "1", name="stale")
    s = run.summary
    dropped, applied = sum(s["dropped_stale"]), sum(s["worker_updates"])
    assert dropped > 0 and dropped + applied == 3 * 40
    assert s["iterations"] == applied
    assert sum(r["status"] == "ignored" for r in run.workers) == dropped
    assert sum(r["status"] == "used" for r in run.workers) == applied


@pytest.mark.parametrize("mixing", [
    ("pairwise",),
    ("pairwise", "--interpolation", "loss", "--peer-selection", "flow", "--gossip-prob", "1"),
    ("pairwise", "--interpolation", "constant", "--batch-size", "200"),
    ("elastic", "--gossip-period", "2", "--alpha", "0.3"),
    ("push-sum",),
], ids=["pairwise", "pairwise-loss-flow", "pairwise-constant-sgd", "elastic", "push-sum"])
def test_gossip_reaches_the_optimum(train, f_star, mixing):
    run = train(3, "--mode", "gossip", "--mixing", *mixing, *RIDGE, "--lr", "0.05", "--iterations", "120",
                "--delay", "exp:0.001", "--eval-every", "0.05", name="gossip")
    check_async_run_directory(run, 3)
    losses = run.column("train_loss")
    assert losses[-1] < 0.5 * losses[0]
    assert run.summary["train_loss"] <= 1.05 * f_star
    s = run.summary
    assert s["worker_steps"] == [120, 120, 120] and s["iterations"] == 360
    assert len(run.workers) == 360
    assert sum(s["worker_gossips"]) > 0 and sum(s["worker_mixed"]) > 0
    if mixing[0] == "push-sum":
        assert sum(s["push_sum_weights"]) == pytest.approx(3.0, abs=1e-12)
        assert min(s["push_sum_weights"]) < 1.0


def test_local_sgd_averages_every_k_steps(train, f_star):
    run = train(3, "--mode", "local", *RIDGE, "--lr", "0.05", "--batch-size", "100", "--iterations", "60",
                "--average-every", "5", name="local")
    assert [m["iteration"] for m in run.metrics] == [0] + [3 * k for k in range(5, 61, 5)]
    losses = run.column("train_loss")
    assert losses[-1] < 0.5 * losses[0] and losses[-1] < 1.1 * f_star
    assert run.summary["worker_steps"] == [60, 60, 60]
    never = train(3, "--mode", "local", *RIDGE, "--lr", "0.05", "--iterations", "40", "--average-every", "0",
                  name="never")
    assert [m["iteration"] for m in never.metrics] == [0, 120]
    assert never.summary["train_loss"] < 1.1 * f_star


@pytest.mark.parametrize("mode", ["hogwild", "gossip"])
def test_a_persistent_straggler_does_not_hold_the_others_back(train, mode):
    """One worker 10x slower: the others finish all their steps while it has done a fraction of its own."""
    run = train(3, "--mode", mode, *RIDGE, "--lr", "0.02", "--batch-size", "64", "--iterations", "40",
                "--delay", "persistent:1,10,0.005", name="straggler")
    slow = run.metadata["delay"]["slow_workers"]
    assert len(slow) == 1
    finish = {w: max(r["arrival"] for r in run.workers if r["worker"] == w) for w in (1, 2, 3)}
    fast = [w for w in (1, 2, 3) if w not in slow]
    slow_times = sorted(r["arrival"] for r in run.workers if r["worker"] == slow[0])
    for w in fast:
        times = sorted(r["arrival"] for r in run.workers if r["worker"] == w)
        assert len(times) == 40
        assert finish[w] < slow_times[19]  # done before the straggler is half-way
        first, second = times[19] - times[0], times[39] - times[20]
        assert second < 2.5 * first + 0.05  # its own pace, not the straggler's
    steps = "worker_pushes" if mode == "hogwild" else "worker_steps"
    assert run.summary[steps] == [40, 40, 40]
    cpu, wall = np.array(run.summary["worker_cpu_seconds"]), np.array(run.summary["worker_wall_seconds"])
    assert cpu[slow[0] - 1] / wall[slow[0] - 1] < 0.3  # pausing and answering do not spin


@pytest.mark.parametrize("mode, args", [("local", ("--average-every", "5")), ("hogwild", ("--lr", "0.05"))])
def test_target_loss_stops_every_worker(train, f_star, mode, args):
    run = train(3, "--mode", mode, *RIDGE, *args, "--lr", "0.05", "--iterations", "2000", "--delay", "exp:0.002",
                "--target-loss", str(1.02 * f_star), "--eval-every", "0.02", name="target")
    s = run.summary
    assert s["status"] == "ok" and s["target_loss_reached"] and s["train_loss"] <= 1.02 * f_star
    steps = s["worker_steps"] if mode == "local" else s["worker_pushes"]
    assert max(steps) < 2000
    if mode == "local":  # the stop travels in an average, so every worker stops after the same step
        assert len(set(steps)) == 1 and steps[0] % 5 == 0


@pytest.mark.parametrize("mode", ["hogwild", "gossip", "allreduce"])
def test_timeout_ends_an_async_run_with_status_timeout(tmp_path, mode):
    res = run_cli(["run", "--mode", mode, "--workers", "2", "--delay", "exp:1", "--iterations", "1000",
                   "--timeout", "1.5", "--out", str(tmp_path), "--name", "slow", "--dataset", "synthetic:500x10",
                   "--eval-every", "0.2"], cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "--timeout 1.5 s reached" in res.stderr
    summary = json.loads((tmp_path / "slow" / "summary.json").read_text())
    assert summary["status"] == "timeout"
    for line in (tmp_path / "slow" / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_hogwild_on_sparse_rows(tmp_path, train):
    res = run_cli(["prepare", "synthetic", "--rows", "3000", "--cols", "2000", "--sparse", "--nnz-per-row", "10",
                   "--out", str(tmp_path / "sparse")], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = train(3, "--mode", "hogwild", "--dataset", str(tmp_path / "sparse"), "--batch-size", "32",
                "--lr", "0.5", "--iterations", "100", name="sp")
    losses = run.column("train_loss")
    assert losses[-1] < 0.85 * losses[0]
    assert run.summary["worker_updates"] == [100, 100, 100]


def test_bad_async_option_exits_2_before_mpi(tmp_path):
    res = run_cli(["run", "--mode", "gossip", "--workers", "1", "--out", str(tmp_path)], cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "--workers 1" in res.stderr


def _hogwild_built() -> bool:
    from gdcode import kernels

    return bool(kernels.COMPILED and kernels.OPENMP and "hogwild_dense" in kernels.KERNEL_NAMES)


@pytest.mark.skipif(not _hogwild_built(), reason="this build has no compiled Hogwild kernel with OpenMP")
def test_hogwild_threads_run_the_lock_free_kernel(train, f_star):
    run = train(2, "--mode", "hogwild", *RIDGE, "--threads", "2", "--batch-size", "100", "--lr", "0.02",
                "--iterations", "60", name="threads")
    losses = run.column("train_loss")
    assert losses[-1] < 0.5 * losses[0] and run.summary["train_loss"] < 1.1 * f_star
    assert run.summary["worker_updates"] == [60, 60]
