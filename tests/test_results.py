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


# ----------------------------------------------------------------------------- load_runs


def _fake_run(path, seed=0, scheme="uncoded", iterations=3, finished=True, **opts):
    w = RunWriter(path)
    options = {"mode": "coded", "scheme": scheme, "workers": 2, "stragglers": 0, "lr": 0.5, "seed": seed,
               "out": str(path.parent), "name": path.name, **opts}
    w.write_metadata({"options": options})
    for t in range(iterations + 1):
        line = {"iteration": t, "elapsed": 0.1 * t, "train_loss": 1.0 / (t + 1 + seed)}
        if t:
            line["bytes_sent"] = {"model": 100 * t} if t % 2 else {"model": 100 * t, "stop": 8}
        w.append_metrics(line)
    w.append_metrics({"iteration": iterations + 1, "elapsed": 0.5, "train_loss": float("inf")})
    w.append_workers([(t, k, None if k == 2 else 0.01, "cancelled" if k == 2 else "used")
                      for t in range(1, iterations + 1) for k in (1, 2)])
    if finished:
        w.write_summary({"status": "ok", "iterations": iterations, "elapsed": 0.3, "train_loss": 0.25,
                         "worker_cpu_seconds": [0.1, 0.2],
                         "bytes": {"sent": [10, 20, 30], "received": [5, 5, 5],
                                   "by_kind": {"sent": {"model": [10, 0, 0], "gradient": [0, 20, 30]}}}})
    w.close()


def test_load_runs_frames(tmp_path):
    pytest.importorskip("pandas")
    from gdcode.results import load_runs

    exp = tmp_path / "exp" / "runs"
    for seed in (0, 1):
        _fake_run(exp / f"w2-uncoded-seed{seed}", seed=seed)
    _fake_run(exp / f"w2-ignore-seed{seed}", seed=1, scheme="ignore", finished=False)
    (exp / ".hidden" / "x").mkdir(parents=True)
    t = load_runs(tmp_path / "exp")  # found at any depth
    assert t.options == ["scheme", "seed"]  # out and name differ too, but never tell runs apart
    assert sorted(t.runs.index) == ["w2-ignore-seed1", "w2-uncoded-seed0", "w2-uncoded-seed1"]
    r = t.runs.loc["w2-uncoded-seed1"]
    assert (r["scheme"], r["seed"], r["status"], r["summary_iterations"]) == ("uncoded", 1, "ok", 3)
    assert r["bytes_sent"] == 60 and r["bytes_sent_gradient"] == 50 and "worker_cpu_seconds" not in t.runs
    assert t.runs.loc["w2-ignore-seed1", "status"] == "unfinished"
    m = t.metrics
    assert len(m) == 3 * 5 and list(m.columns[:4]) == ["run", "label", "scheme", "seed"]
    one = m[m.run == "w2-uncoded-seed0"].set_index("iteration")
    assert one.loc[2, "bytes_sent"] == 208 and one.loc[3, "bytes_sent_stop"] == 0  # no stop bytes that line
    assert np.isnan(one.loc[0, "bytes_sent"]) and one.loc[4, "train_loss"] == np.inf
    w = t.workers
    assert len(w) == 3 * 6 and w["arrival"].isna().sum() == 9 and set(w["status"]) == {"used", "cancelled"}
    assert [r.path.name for r in t.loaded] == list(t.runs.index)
    # several paths; runs with the same name in two folders get their paths as ids
    _fake_run(tmp_path / "other" / "w2-uncoded-seed0", seed=0, lr=0.1)
    t2 = load_runs([exp / "w2-uncoded-seed0", tmp_path / "other", exp / "w2-uncoded-seed0"])
    assert list(t2.runs.index) == ["exp/runs/w2-uncoded-seed0", "other/w2-uncoded-seed0"]
    assert t2.options == ["lr"] and list(t2.runs["lr"]) == [0.5, 0.1]
    with pytest.raises(FileNotFoundError):
        load_runs(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        load_runs(tmp_path / "exp" / "runs" / ".hidden")


def test_load_runs_without_pandas_names_the_extra(tmp_path):
    import subprocess
    import sys

    _fake_run(tmp_path / "r")
    code = ("import sys; sys.modules['pandas'] = None\n"
            "from gdcode.results import load_runs\n"
            "try:\n    load_runs(sys.argv[1])\nexcept ImportError as exc:\n    print(exc); sys.exit(7)\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True)
    assert res.returncode == 7 and "gdcode[analysis]" in res.stdout


def test_seed_groups_and_differing_options(tmp_path):
    from gdcode.results import differing_options, seed_groups

    for seed in (0, 1, 2):
        _fake_run(tmp_path / f"a{seed}", seed=seed)
        _fake_run(tmp_path / f"b{seed}", seed=seed, scheme="ignore")
    runs = [load_run(tmp_path / f"{x}{s}") for x in "ab" for s in (0, 1, 2)]
    assert differing_options(runs) == ["scheme", "seed"]
    groups = seed_groups(runs)
    assert [[r.path.name for r in g] for g in groups] == [["a0", "a1", "a2"], ["b0", "b1", "b2"]]
