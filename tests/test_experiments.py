"""The experiments: configs, one tiny experiment end to end, and the analysis notebook run on it."""

from __future__ import annotations

import csv
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from gdcode import codes

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import runner  # noqa: E402

#: the experiment configs (run-example.toml is one run's config, not an experiment)
NAMES = sorted(p.stem for p in EXPERIMENTS.glob("*.toml") if "[[runs]]" in p.read_text())

TINY = """
[experiment]
title = "tiny"
group_by = "workers"
target_loss = 0.45
heatmap = ["ignore", "approx"]
figures = [{ x = "elapsed", y = "train_loss" }, { x = "iteration", y = "test_auc" }]

[common]
dataset = "synthetic:800x10"
delay = "exp:0.02"
iterations = 4
lr = 1.0
seed = 2

[sweep]
workers = [4]

[[runs]]
scheme = "uncoded"

[[runs]]
scheme = "ignore"
stragglers = 1

[[runs]]
scheme = "approx"
stragglers = 1
collect_fraction = 0.5

[[runs]]
scheme = "no-such-code"
"""


def test_every_experiment_has_a_script_with_its_launch_line_and_a_valid_config():
    assert {"erasurehead", "tandon", "coded_vs_async"} <= set(NAMES)
    for name in NAMES:
        script = EXPERIMENTS / f"{name}.py"
        head = script.read_text().splitlines()[:6]
        assert any(f"make experiment NAME={name}" in line for line in head), name
        for quick in (False, True):
            cfg = runner.load_config(EXPERIMENTS / f"{name}.toml", quick=quick)
            specs = runner.expand(cfg)  # raises on an unknown option or clashing names
            assert specs
            if quick:  # the quick variant is what CI and a first try run: it stays short
                assert all(s.options.get("iterations", 100) <= 60 for s in specs), name
        assert "Launch: make experiment NAME=" + name in (EXPERIMENTS / f"{name}.toml").read_text()


def test_unknown_schemes_and_modes_are_skipped_with_a_reason(tmp_path):
    cfg = {"experiment": {}, "common": {"workers": 4}, "sweep": {},
           "runs": [{"scheme": "no-such-code"}, {"mode": "hogwild"}, {"scheme": "uncoded"}]}
    specs = runner.expand(cfg)
    for s in specs:
        runner.check_runnable(s, tmp_path)
    assert "not in this gdcode" in specs[0].skip
    assert specs[2].skip is None
    from gdcode import problem
    from gdcode.errors import ConfigError
    from gdcode.options import RunOptions

    try:
        problem.check(RunOptions(mode="hogwild", workers=4, out=str(tmp_path)))
        assert specs[1].skip is None
    except ConfigError as exc:
        assert specs[1].skip == str(exc)


def test_a_mistake_in_a_config_is_an_error_not_a_skip(tmp_path):
    from gdcode.errors import ConfigError

    cfg = {"experiment": {}, "common": {"workers": 4}, "sweep": {}, "runs": [{"scheme": "uncoded", "lr": -1}]}
    spec = runner.expand(cfg)[0]
    with pytest.raises(ConfigError, match="lr"):
        runner.check_runnable(spec, tmp_path)
    with pytest.raises(ConfigError, match="unknown run option"):
        runner.expand({"experiment": {}, "common": {"wrokers": 4}, "sweep": {}, "runs": [{}]})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny experiment, run once through its script."""
    tmp = tmp_path_factory.mktemp("tiny")
    (tmp / "tiny.toml").write_text(TINY)
    cmd = [sys.executable, str(EXPERIMENTS / "erasurehead.py"), "--config", str(tmp / "tiny.toml"),
           "--out", str(tmp / "out")]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp, env=env)
    return tmp, cmd, env, res


@pytest.mark.mpi
def test_tiny_experiment_end_to_end(tiny):
    tmp, cmd, env, res = tiny
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp / "out"
    md = (out / "results.md").read_text()
    result = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in result["rows"]]
    expected = ["w4-uncoded", "w4-ignore-s1"] + (["w4-approx-s1-c2"] if "approx" in codes.names() else [])
    assert names == expected
    assert "w4-no-such-code" in result["skipped"] and "skipping w4-no-such-code" in res.stdout
    for row in result["rows"]:
        assert row["iterations"] == 4 and row["seconds_per_iteration"] > 0
        # the simulator, replaying the run's own delays, predicts its seconds per iteration
        assert row["sim_same_delays"] == pytest.approx(row["seconds_per_iteration"], rel=0.5)
    assert "| workers | run |" in md and "ignore S=1" in md and "Not run:" in md
    for fig in ["train_loss_vs_elapsed_workers4.png", "test_auc_vs_iteration_workers4.png",
                "iteration_times_workers4.png", "workers_workers4.png"]:
        assert (out / fig).stat().st_size > 5000, fig
        assert f"]({fig})" in md
    # run again: the finished runs are kept, the report rewritten
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp, env=env)
    assert again.returncode == 0 and again.stdout.count("kept (already done") == len(expected)


def _check_analysis_output(out: Path, n_runs: int) -> None:
    per_run = list(csv.DictReader((out / "per_run.csv").open()))
    assert len(per_run) == n_runs and {r["iterations"] for r in per_run} == {"4"}
    counts = list(csv.DictReader((out / "status_counts.csv").open()))
    assert sum(int(v) for r in counts for k, v in r.items() if k != "run") == 4 * 4 * n_runs
    assert all(r["seconds_to_target"] for r in csv.DictReader((out / "time_to_target.csv").open()))
    assert len(list(csv.DictReader((out / "over_seeds.csv").open()))) == n_runs  # one seed each
    for name in ["iteration_times", "loss_vs_time", "mean_arrival_per_worker"]:
        assert (out / f"{name}.png").stat().st_size > 5000


@pytest.mark.mpi
def test_analysis_runs_as_a_script_on_the_tiny_experiment(tiny, tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    tmp, _, _, res = tiny
    assert res.returncode == 0, res.stderr
    monkeypatch.setenv("GDCODE_RUNS", str(tmp / "out" / "runs"))
    monkeypatch.setenv("GDCODE_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    ns = runpy.run_path(str(EXPERIMENTS / "analysis.py"), run_name="__main__")
    n_runs = 3 if "approx" in codes.names() else 2
    assert len(ns["runs"]) == n_runs and len(ns["metrics"]) == (1 + 4) * n_runs  # the initial model, 4 iterations
    _check_analysis_output(tmp_path, n_runs)


@pytest.fixture(scope="module")
def kernel():
    """The python3 Jupyter kernel can start here (skip with the reason when it cannot)."""
    pytest.importorskip("jupytext", reason="the notebook extra is not installed: pip install 'gdcode[notebook]'")
    pytest.importorskip("papermill", reason="the notebook extra is not installed: pip install 'gdcode[notebook]'")
    from jupyter_client.manager import start_new_kernel

    try:
        manager, client = start_new_kernel(kernel_name="python3", startup_timeout=120)
    except Exception as exc:  # noqa: BLE001 - any failure to start is a reason to skip, not a test failure
        pytest.skip(f"the python3 Jupyter kernel cannot start: {type(exc).__name__}: {exc}")
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    return "python3"


@pytest.mark.mpi
def test_analysis_notebook_executes_with_parameters(tiny, kernel, tmp_path):
    import jupytext
    import papermill

    tmp, _, _, res = tiny
    assert res.returncode == 0, res.stderr
    notebook = tmp_path / "analysis.ipynb"
    jupytext.write(jupytext.read(EXPERIMENTS / "analysis.py"), notebook)
    out = tmp_path / "out"
    papermill.execute_notebook(str(notebook), str(tmp_path / "executed.ipynb"), kernel_name=kernel,
                               parameters={"RUNS": str(tmp / "out" / "runs"), "OUT": str(out)},
                               cwd=str(tmp_path), progress_bar=False, start_timeout=120)
    executed = json.loads((tmp_path / "executed.ipynb").read_text())
    tags = [c.get("metadata", {}).get("tags", []) for c in executed["cells"]]
    assert ["parameters"] in tags and ["injected-parameters"] in tags
    assert not [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    _check_analysis_output(out, 3 if "approx" in codes.names() else 2)


def test_notebook_is_in_jupytext_percent_format():
    text = (EXPERIMENTS / "analysis.py").read_text()
    assert "format_name: percent" in text and text.count("# %%") >= 5


def test_seeds_repeat_every_run_and_name_it():
    from gdcode.errors import ConfigError

    cfg = {"experiment": {"seeds": [3, 5]}, "common": {"workers": 4, "seed": 0}, "sweep": {},
           "runs": [{"scheme": "uncoded"}, {"scheme": "ignore", "stragglers": 1}]}
    specs = runner.expand(cfg)
    assert [(s.name, s.key, s.options["seed"]) for s in specs] == [
        ("w4-uncoded-seed3", "w4-uncoded", 3), ("w4-uncoded-seed5", "w4-uncoded", 5),
        ("w4-ignore-s1-seed3", "w4-ignore-s1", 3), ("w4-ignore-s1-seed5", "w4-ignore-s1", 5)]
    for bad in ([], [1, 1], [-1], [True], "0,1"):
        with pytest.raises(ConfigError, match="seeds"):
            runner.expand({**cfg, "experiment": {"seeds": bad}})
    rows = [{"name": s.name, "key": s.key, "seed": s.seed, "group": 4, "label": s.label, "mode": "coded",
             "scheme": s.options["scheme"], "iterations": 10, "seconds_per_iteration": 0.1 * (i + 1),
             "final_train_loss": 0.5, "time_to_target": None if i == 3 else 1.0} for i, s in enumerate(specs)]
    conf = runner.aggregate(rows)
    assert [c["seeds"] for c in conf] == [2, 2]
    assert conf[0]["seconds_per_iteration"] == pytest.approx(0.15)
    assert conf[0]["seconds_per_iteration_sd"] == pytest.approx(0.1 / 2 ** 0.5)
    assert conf[1]["reached"] == 1 and conf[0]["final_train_loss_sd"] == 0
    table = runner.markdown_table(rows, 0.3, "workers")
    assert "| workers | run | seeds |" in table and "0.15 ± 0.071" in table and "(1/2 reached)" in table
    path = EXPERIMENTS / "erasurehead.toml"
    assert runner.seeds_of(runner.load_config(path)) == [0, 1, 2]
    assert runner.seeds_of(runner.load_config(path, quick=True)) == [0]
    assert runner.seeds_of(runner.load_config(path, overrides={"seed": 4})) is None


TINY_SEEDS = """
[experiment]
title = "tiny, over seeds"
seeds = [1, 2]
heatmap = ["ignore"]
figures = [{ x = "iteration", y = "train_loss" }]

[common]
dataset = "synthetic:800x10"
delay = "exp:0.02"
iterations = 3
lr = 1.0

[sweep]
workers = [4]

[[runs]]
scheme = "uncoded"

[[runs]]
scheme = "ignore"
stragglers = 1
"""


@pytest.mark.mpi
def test_tiny_experiment_over_seeds(tmp_path):
    (tmp_path / "seeds.toml").write_text(TINY_SEEDS)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    res = subprocess.run([sys.executable, str(EXPERIMENTS / "erasurehead.py"), "--config", str(tmp_path / "seeds.toml"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "out"
    result = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["w4-uncoded-seed1", "w4-uncoded-seed2", "w4-ignore-s1-seed1",
                                                   "w4-ignore-s1-seed2"]
    assert result["seeds"] == [1, 2] and [c["seeds"] for c in result["configurations"]] == [2, 2]
    for r in result["rows"]:
        meta = json.loads((out / "runs" / r["name"] / "metadata.json").read_text())
        assert meta["options"]["seed"] == r["seed"] == int(r["name"][-1])
    md = (out / "results.md").read_text()
    assert "| seeds |" in md and "±" in md
    for fig in ["train_loss_vs_iteration_workers4.png", "iteration_times_workers4.png", "workers_workers4.png"]:
        assert (out / fig).stat().st_size > 5000 and f"]({fig})" in md


def _setups_cfg(**experiment) -> dict:
    return {"experiment": {"group_by": "setup", **experiment}, "common": {"workers": 4, "lr": 0.5},
            "sweep": {}, "clusters": {},
            "setups": [{"label": "small", "dataset": "synthetic:400x5", "batch-size": 4, "coded": {"batch-size": 16}},
                       {"label": "big", "dataset": "synthetic:800x5", "lr": 0.1},
                       {"label": "extra", "optional": True, "dataset": "synthetic:100x5"}],
            "runs": [{"mode": "allreduce"}, {"scheme": "uncoded"}, {"scheme": "frc", "stragglers": 1, "batch-size": 8}]}


def test_setups_repeat_every_run_with_their_own_options():
    from gdcode.errors import ConfigError

    specs = runner.expand(_setups_cfg())
    assert [s.name for s in specs] == ["small-allreduce", "small-uncoded", "small-frc-s1",
                                       "big-allreduce", "big-uncoded", "big-frc-s1"]
    by = {s.name: s for s in specs}
    assert [s.group for s in specs[:3]] == ["small"] * 3
    assert by["small-allreduce"].options["batch_size"] == 4      # the setup's
    assert by["small-uncoded"].options["batch_size"] == 16       # the setup's table for coded runs
    assert by["small-frc-s1"].options["batch_size"] == 8         # the run's own wins
    assert by["big-uncoded"].options["lr"] == 0.1 and by["small-uncoded"].options["lr"] == 0.5
    assert "batch_size" not in by["big-uncoded"].options
    # an optional setup runs only when asked for; --setup picks
    assert [s.name for s in runner.expand(_setups_cfg(chosen_setups=["extra"]))][0] == "extra-allreduce"
    with pytest.raises(ConfigError, match="nope not in the config; it has: small, big, extra"):
        runner.expand(_setups_cfg(chosen_setups=["nope"]))
    bad = _setups_cfg()
    bad["setups"][1]["label"] = "small"
    with pytest.raises(ConfigError, match="its own label"):
        runner.expand(bad)


def test_command_line_and_quick_options_win_over_a_setup(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("""
[experiment]
group_by = "setup"
[common]
workers = 4
[[setups]]
label = "a"
iterations = 300
lr = 0.1
[[setups]]
label = "b"
iterations = 200
[[runs]]
scheme = "uncoded"
[quick]
setups = ["b"]
iterations = 5
""")
    specs = runner.expand(runner.load_config(path, quick=True, overrides={"lr": 0.7}))
    assert [(s.name, s.options["iterations"], s.options["lr"]) for s in specs] == [("b-uncoded", 5, 0.7)]
    specs = runner.expand(runner.load_config(path, overrides={"lr": 0.7}))
    assert [(s.name, s.options["iterations"], s.options["lr"]) for s in specs] == [
        ("a-uncoded", 300, 0.7), ("b-uncoded", 200, 0.7)]


def test_time_to_a_loss_goes_down_to_it_and_to_an_accuracy_up_to_it():
    class Run:
        metrics = [{"elapsed": 0.0, "train_loss": 0.9, "test_accuracy": 0.3},
                   {"elapsed": 1.0, "train_loss": 0.5, "test_accuracy": 0.8},
                   {"elapsed": 2.0, "train_loss": 0.2, "test_accuracy": None},
                   {"elapsed": 3.0, "train_loss": 0.1, "test_accuracy": 0.95}]

    assert runner.time_to(Run, 0.5) == 1.0 and runner.time_to(Run, 0.05) is None
    assert runner.time_to(Run, 0.9, "test_accuracy") == 3.0 and runner.time_to(Run, 0.8, "test_accuracy") == 1.0
    assert runner.time_to(Run, None, "test_accuracy") is None
    rows = [{"name": "u", "group": 4, "label": "uncoded", "mode": "coded", "scheme": "uncoded", "iterations": 3,
             "seconds_per_iteration": 1.0, "final_train_loss": 0.1, "test_accuracy": 0.95, "time_to_accuracy": 3.0},
            {"name": "a", "group": 4, "label": "allreduce", "mode": "allreduce", "iterations": 3,
             "seconds_per_iteration": 0.5, "final_train_loss": 0.1, "test_accuracy": 0.9, "time_to_accuracy": 1.5}]
    table = runner.markdown_table(rows, None, "workers", target_accuracy=0.9)
    assert "time to accuracy 0.9 (s)" in table and "speedup vs uncoded (time to accuracy 0.9)" in table
    assert table.splitlines()[-1].endswith("| 1.5 | 2.00× | 2.00× |")


def test_a_cluster_table_is_checked_before_anything_runs():
    from gdcode.errors import ConfigError

    cfg = {"experiment": {}, "common": {"workers": 4, "cluster": "lab"}, "sweep": {},
           "clusters": {"lab": {"hosts": 5, "bandwith": "1gbit"}}, "runs": [{"scheme": "uncoded"}]}
    with pytest.raises(ConfigError, match=r"\[clusters.lab\]: give hosts .* unknown: bandwith"):
        runner.used_clusters(cfg, runner.expand(cfg))
    cfg["clusters"]["lab"] = {"hosts": 5, "bandwidth": "1gbit", "latency": 0.0005}
    spec = runner.expand(cfg)[0]
    assert runner.used_clusters(cfg, [spec]) == ["lab"]
    net = runner.network_of(spec, cfg, 400_000)
    assert net.bandwidth == 125e6 and net.latency == 0.0005 and net.reply_bytes == 400_000
    cfg["clusters"]["lab"] = {"hosts": 5}  # unshaped: the simulator adds no links
    assert runner.network_of(spec, cfg, 400_000) is None


@pytest.mark.mpi
def test_thesis_quick(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    res = subprocess.run([sys.executable, str(EXPERIMENTS / "thesis.py"), "--quick", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=420, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "out"
    result = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert len(rows) == 10 and all(name.startswith("iris-") for name in rows)
    assert {r["mode"] for r in rows.values()} == {"allreduce", "gossip", "local", "coded"}
    for r in rows.values():
        assert r["test_accuracy"] is not None and 0 <= r["test_accuracy"] <= 1
        meta = json.loads((out / "runs" / r["name"] / "metadata.json").read_text())
        assert meta["options"]["model"] == "mlp" and meta["options"]["iterations"] == 30
        assert meta["options"]["batch_size"] == (16 if r["mode"] == "coded" else 4)
    # exact codes decode the same minibatch gradient as uncoded: the same final model's loss
    assert rows["iris-frc-s1"]["final_train_loss"] == pytest.approx(rows["iris-uncoded"]["final_train_loss"],
                                                                    rel=1e-9)
    md = (out / "results.md").read_text()
    assert "time to accuracy 0.9 (s)" in md and "test_accuracy_vs_elapsed_setupiris.png" in md
