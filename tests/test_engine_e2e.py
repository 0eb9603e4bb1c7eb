"""End to end: the coded engine's features (resume, failures, delays, update rules, stopping)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from e2e import run_cli, run_mpi

from gdcode.results import load_run

pytestmark = pytest.mark.mpi

TIMING = {"elapsed", "decode_seconds", "bytes_sent", "bytes_received"}  # late replies' bytes vary


def strip(run):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in run.metrics]


def test_resumed_run_equals_uninterrupted(tmp_path, train):
    args = ("--dataset", "synthetic:1500x20", "--update", "adam", "--lr", "0.05", "--delay", "exp:0.003",
            "--checkpoint-every", "4", "--seed", "3")
    full = train(3, *args, "--iterations", "10", name="full")
    train(3, *args, "--iterations", "6", name="part")
    # a run killed after its checkpoint at 4 but with iterations 5 and 6 written: they are redone
    res = run_cli(["run", "--resume", str(tmp_path / "part"), "--iterations", "10"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    part = load_run(tmp_path / "part")
    assert strip(part) == strip(full)
    assert np.array_equal(part.model, full.model)
    assert [m["iteration"] for m in part.metrics] == list(range(0, 11))
    assert part.column("elapsed")[5] > part.column("elapsed")[4]
    assert part.metadata["resumed"][0]["from_iteration"] == 4
    assert sorted({r["iteration"] for r in part.workers}) == list(range(1, 11))
    assert len(part.workers) == 3 * 10


def test_resume_errors(tmp_path, train):
    train(2, "--iterations", "3", "--dataset", "synthetic:500x10", name="nockpt")
    res = run_cli(["run", "--resume", str(tmp_path / "nockpt"), "--iterations", "5"], cwd=tmp_path)
    assert res.returncode == 2 and "no checkpoint.npz" in res.stderr
    res = run_cli(["run", "--resume", str(tmp_path / "nockpt"), "--lr", "3"], cwd=tmp_path)
    assert res.returncode == 2 and "--lr cannot be given" in res.stderr
    res = run_cli(["run", "--resume", str(tmp_path / "nothing")], cwd=tmp_path)
    assert res.returncode == 2 and "not a gdcode run directory" in res.stderr


def test_a_worker_that_raises_aborts_the_job_quickly(tmp_path):
    env_before = os.environ.get("GDCODE_FAIL_WORKER")
    os.environ["GDCODE_FAIL_WORKER"] = "2:3"
    try:
        t0 = time.monotonic()
        res = run_mpi(4, ["run", "--workers", "3", "--iterations", "50", "--delay", "exp:0.05",
                          "--out", str(tmp_path), "--name", "boom", "--dataset", "synthetic:600x10"],
                      cwd=tmp_path, timeout=60)
        took = time.monotonic() - t0
    finally:
        if env_before is None:
            del os.environ["GDCODE_FAIL_WORKER"]
        else:
            os.environ["GDCODE_FAIL_WORKER"] = env_before
    assert res.returncode != 0
    assert "failure injected at iteration 3" in res.stderr
    assert took < 20
    lines = (tmp_path / "boom" / "metrics.jsonl").read_text().splitlines()
    assert 1 <= len(lines) <= 3
    for line in lines:
        json.loads(line)


def test_target_loss_stops_the_run(train):
    run = train(2, "--dataset", "synthetic:1000x10", "--iterations", "200", "--target-loss", "0.2")
    assert run.summary["target_loss_reached"] is True
    assert run.summary["iterations"] < 200
    assert run.metrics[-1]["train_loss"] <= 0.2 < run.metrics[-2]["train_loss"]


@pytest.mark.parametrize("update", ["momentum", "adam"])
def test_other_update_rules_decrease_the_loss(train, update):
    run = train(2, "--dataset", "synthetic:1000x10", "--iterations", "15", "--update", update,
                "--lr", "0.1", "--lr-schedule", "inv-sqrt")
    loss = run.column("train_loss")
    assert loss[-1] < loss[0]


def test_recorded_delays_replay_as_a_trace(tmp_path, train):
    trace = tmp_path / "delays.csv"
    train(2, "--dataset", "synthetic:800x10", "--iterations", "4", "--record-delays", str(trace), name="rec")
    rows = trace.read_text().splitlines()
    assert rows[0] == "worker,iteration,seconds" and len(rows) == 1 + 2 * 4
    replay = train(2, "--dataset", "synthetic:800x10", "--iterations", "6", "--delay", f"trace:{trace}",
                   name="replay")
    assert replay.summary["status"] == "ok"
    assert replay.metadata["delay"]["spec"] == f"trace:{trace}"


def test_persistent_straggler_is_waited_for_by_uncoded(train):
    run = train(3, "--dataset", "synthetic:900x10", "--iterations", "4", "--delay", "persistent:1,4,0.02")
    slow = run.metadata["delay"]["slow_workers"]
    assert len(slow) == 1
    arrivals = {}
    for r in run.workers:
        arrivals.setdefault(r["worker"], []).append(r["arrival"])
    fast = [np.mean(v) for w, v in arrivals.items() if w not in slow]
    assert np.mean(arrivals[slow[0]]) > 2.5 * max(fast)


def test_summary_reports_every_ranks_peak_memory(train):
    run = train(2, "--dataset", "synthetic:400x10", "--iterations", "3")
    rss = run.summary["worker_max_rss_mb"]
    # a Python process with numpy and mpi4py holds tens of MB; none holds a GB for this problem
    assert len(rss) == 2 and all(20 < r < 1000 for r in rss)
    assert 20 < run.summary["coordinator_max_rss_mb"] < 1000


def test_without_doorbells_the_ranks_poll_and_train_the_same(train, monkeypatch):
    args = ("--dataset", "synthetic:600x10", "--iterations", "5", "--scheme", "frc", "--stragglers", "1",
            "--delay", "exp:0.002")
    rung = train(2, *args, name="rung")
    monkeypatch.setenv("GDCODE_DOORBELL", "0")
    polled = train(2, *args, name="polled")
    assert rung.summary["waits"] == "doorbell" and polled.summary["waits"] == "polling"
    np.testing.assert_array_equal(polled.model, rung.model)
