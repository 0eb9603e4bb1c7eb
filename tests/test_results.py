"""The run directory writer and reader."""

import json

import numpy as np
import pytest

from gdcode.results import RunWriter, load_run, read_metrics


def test_round_trip(tmp_path):
    w = RunWriter(tmp_path / "r")
    w.write_metadata({"seed": 1, "x": np.float64(2.0)})
    w.append_metrics({"iteration": 1, "elapsed": 0.1, "train_loss": float("nan")})
    w.append_metrics({"iteration": 2, "elapsed": 0.2, "train_loss": 0.5})
    w.append_workers([(1, 1, 0.01, "used"), (1, 2, None, "cancelled")])
    w.write_summary({"status": "ok", "iterations": 2})
    w.save_model(np.arange(3.0))
    w.close()
    run = load_run(tmp_path / "r")
    assert run.metadata == {"seed": 1, "x": 2.0}
    assert [m["iteration"] for m in run.metrics] == [1, 2]
    assert np.isnan(run.column("train_loss")[0]) and run.column("train_loss")[1] == 0.5
    assert run.workers[1] == {"iteration": 1, "worker": 2, "arrival": None, "status": "cancelled"}
    assert run.summary["status"] == "ok"
    assert np.array_equal(run.model, np.arange(3.0))


def test_metrics_are_readable_while_running_and_torn_line_skipped(tmp_path):
    w = RunWriter(tmp_path)
    w.append_metrics({"iteration": 1, "train_loss": 1.0})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"iteration": 1, "train_loss": 1.0}]
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write('{"iteration": 2, "tra')  # a run killed mid-write
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 1
    w.close()


def test_append_mode_continues(tmp_path):
    w = RunWriter(tmp_path)
    w.append_metrics({"iteration": 1})
    w.append_workers([(1, 1, 0.5, "used")])
    w.close()
    w = RunWriter(tmp_path, append=True)
    w.append_metrics({"iteration": 2})
    w.append_workers([(2, 1, 0.5, "late")])
    w.close()
    run = load_run(tmp_path)
    assert [m["iteration"] for m in run.metrics] == [1, 2]
    assert [r["status"] for r in run.workers] == ["used", "late"]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1]) == {"iteration": 2}


def test_rejects_unknown_status_and_missing_dir(tmp_path):
    w = RunWriter(tmp_path)
    with pytest.raises(AssertionError):
        w.append_workers([(1, 1, None, "lost")])
    w.close()
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path / "nope")
