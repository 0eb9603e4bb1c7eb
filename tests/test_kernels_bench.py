"""``gdcode bench kernels`` on a tiny block: the JSON rows and the bad-input exit code.

Speed itself is not asserted (a benchmark, not a timed test)."""

from __future__ import annotations

import json

import pytest

from gdcode import cli, kernels
from gdcode.bench import kernels as bench

#: a tiny network for the MLP rows, so that these tests stay quick
TINY_MLP = ["--mlp-sizes", "30,16,5", "--mlp-batch", "8"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """The bench calibrates (or reads) the prefetch distances: into a private cache, not the
    user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("gdcode.kernels.calibrate.MIN_BYTES", 1 << 20)
    monkeypatch.setattr("gdcode.kernels.calibrate.MAX_BYTES", 1 << 20)
    monkeypatch.setattr("gdcode.kernels.calibrate.ROUNDS", 1)


@pytest.mark.skipif(not kernels.COMPILED, reason="compiled kernels not built")
def test_bench_kernels_json(capsys):
    assert cli.main(["bench", "kernels", "--json", "--rows", "300", "--rounds", "2",
                     "--repeat", "2", *TINY_MLP]) == 0
    rows = json.loads(capsys.readouterr().out)
    mlp_rows = [r for r in rows if r["kernel"] == "mlp"]  # checked in tests/test_mlp.py
    rows = [r for r in rows if r["kernel"] != "mlp"]
    assert [r["dtype"] for r in mlp_rows] == (["float64", "float32"] if kernels.MLP_COMPILED else [])
    cases = [(obj, layout, dtype) for obj in bench.OBJECTIVES for layout, dtype in bench.CASES]
    assert [(r["repeat"], r["kernel"], r["layout"], r["dtype"]) for r in rows] == [
        (rep, *case) for rep in (1, 2) for case in cases]
    for r in rows:
        assert set(r) == set(bench.JSON_KEYS)
        assert r["rounds"] == 2
        for key in ("seconds", "gbps", "reference_seconds", "speedup", "bandwidth_gbps",
                    "read_fraction"):
            assert r[key] > 0
        for name in ("speedup", "read_fraction"):
            assert r[f"{name}_min"] <= r[name] <= r[f"{name}_max"]


@pytest.mark.skipif(not kernels.COMPILED, reason="compiled kernels not built")
def test_bench_kernels_table(capsys):
    assert cli.main(["bench", "kernels", "--rows", "200", "--rounds", "1", "--repeat", "2",
                     *TINY_MLP]) == 0
    out = capsys.readouterr().out
    assert "least-squares  csr" in out and "targets" in out
    assert out.count("repeat 1:") == 1 and out.count("repeat 2:") == 1
    assert "prefetch distances: " in out and "load average" in out
    # every kernel has a speedup target; dense float64/float32 logistic and least squares
    # also a read-bandwidth one; mlp float64/float32: ratio to the twin and fraction of matmul
    linear, _, mlp = out.partition("mlp targets:")
    n_targets = len(bench.OBJECTIVES) * len(bench.CASES) + 4
    assert linear.count("MISSED on repeat") + linear.count(": met)") == n_targets
    assert mlp.count("MISSED)") + mlp.count(": met)") == (2 * 2 if kernels.MLP_COMPILED else 0)


def test_targets_mark_a_miss_on_any_repeat():
    """A target below its goal on one repeat of three is MISSED, naming that repeat."""
    def row(rep, speedup, read):
        return {"repeat": rep, "kernel": "least-squares", "layout": "dense", "dtype": "float64",
                "speedup": speedup, "read_fraction": read}

    results = [row(1, 2.5, 0.9), row(2, 1.9, 0.9), row(3, 2.4, 0.74)]
    got = {t["measure"]: t for t in bench.targets(results)}
    assert got["speedup"]["goal"] == 2.0 and got["speedup"]["missed"] == [2]
    assert got["read_fraction"]["goal"] == 0.75 and got["read_fraction"]["missed"] == [3]
    lines = bench.target_lines(results, threads=1)
    assert any("MISSED on repeat 2" in line for line in lines)
    assert any("MISSED on repeat 3" in line for line in lines)
    hinge = [{**row(1, 1.1, 0.5), "kernel": "hinge"}]
    (only,) = bench.targets(hinge)
    assert only["goal"] == bench.MIN_SPEEDUP and only["missed"] == [1]


@pytest.mark.parametrize("argv", [["--rows", "0"], ["--rounds", "0"], ["--repeat", "0"],
                                  ["--threads", "0"]])
def test_bench_bad_options_exit_2(argv, capsys):
    assert cli.main(["bench", "kernels", *argv]) == 2
    assert "must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(not kernels.COMPILED, reason="compiled kernels not built")
def test_bench_cpu_clock(capsys):
    assert cli.main(["bench", "kernels", "--rows", "200", "--rounds", "1", "--repeat", "1",
                     "--clock", "cpu"]) == 0
    assert "cpu clock" in capsys.readouterr().out
    assert cli.main(["bench", "kernels", "--clock", "cpu", "--threads", "2"]) == 2
    assert "--clock cpu" in capsys.readouterr().err


def test_bench_reference_is_the_twin():
    """The benchmark's two-pass reference computes what the kernels compute."""
    import numpy as np

    X = bench.dense_data(50, 0)
    for objective in bench.OBJECTIVES:
        y = bench.labels(objective, X, 0)
        w = bench.parameters(objective, X.shape[1], 0.1, 0)
        coef = np.ones(50)
        g_ref, g_twin = np.zeros_like(w), np.zeros_like(w)
        loss_ref = bench.reference(objective, X, y, coef, w, g_ref)
        twin = kernels.get(f"{kernels.OBJECTIVES[objective]}_dense", compiled=False)
        loss_twin = twin(X, y, coef, w, g_twin)
        assert loss_ref == pytest.approx(loss_twin, rel=1e-12)
        np.testing.assert_allclose(g_ref, g_twin, rtol=1e-12, atol=1e-12)


def test_bench_registry_lists_every_target():
    """Each registered target imports and has an entry point the command can call."""
    import importlib

    from gdcode.commands import bench as command

    assert {"kernels", "engine"} <= set(command.TARGETS)
    for module_name in command.TARGETS.values():
        module = importlib.import_module(module_name)
        assert hasattr(module, "main") or hasattr(module, "run")


@pytest.mark.skipif(not kernels.COMPILED, reason="compiled kernels not built")
def test_bench_only_times_the_rows_it_names(capsys):
    assert cli.main(["bench", "kernels", "--json", "--rows", "200", "--rounds", "1", "--repeat", "1",
                     "--only", "logistic:csr,softmax:float32,mlp:float32", *TINY_MLP]) == 0
    rows = json.loads(capsys.readouterr().out)
    got = [(r["kernel"], r.get("layout"), r["dtype"]) for r in rows]
    assert got == [("logistic", "csr", "float64"), ("softmax", "dense", "float32")] + (
        [("mlp", "dense", "float32")] if kernels.MLP_COMPILED else [])
    assert cli.main(["bench", "kernels", "--rows", "200", "--rounds", "1", "--repeat", "1",
                     "--only", "csr:hinge", *TINY_MLP]) == 0
    out = capsys.readouterr().out
    assert "hinge          csr" in out and "logistic" not in out and "mlp" not in out


def test_bench_only_refuses_an_unknown_word(capsys):
    assert cli.main(["bench", "kernels", "--only", "logistic:sparse"]) == 2
    err = capsys.readouterr().err
    assert "unknown word 'sparse'" in err and "logistic:csr" in err and err.count("\n") == 1
    assert cli.main(["bench", "kernels", "--only", "csr,,"]) == 2
    assert "empty selection" in capsys.readouterr().err
