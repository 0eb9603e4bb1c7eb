"""``gdcode bench kernels`` on a tiny block: the JSON rows and the bad-input exit code.

Speed itself is not asserted (a benchmark, not a timed test)."""

from __future__ import annotations

import json

import pytest

from gdcode import cli, kernels
from gdcode.bench import kernels as bench

#: a tiny network for the MLP rows, so that these tests stay quick
TINY_MLP = ["--mlp-sizes", "30,16,5", "--mlp-batch", "8"]


@pytest.mark.skipif(not kernels.COMPILED, reason="compiled kernels not built")
def test_bench_kernels_json(capsys):
    assert cli.main(["bench", "kernels", "--json", "--rows", "300", "--repeats", "1", *TINY_MLP]) == 0
    rows = json.loads(capsys.readouterr().out)
    mlp_rows = [r for r in rows if r["kernel"] == "mlp"]  # checked in tests/test_mlp.py
    rows = [r for r in rows if r["kernel"] != "mlp"]
    assert [r["dtype"] for r in mlp_rows] == (["float64", "float32"] if kernels.MLP_COMPILED else [])
    assert [(r["kernel"], r["layout"], r["dtype"]) for r in rows] == [
        (obj, layout, dtype) for obj in bench.OBJECTIVES for layout, dtype in bench.CASES]
    for r in rows:
        assert set(r) == set(bench.JSON_KEYS)
        for key in ("seconds", "gbps", "reference_seconds", "speedup", "bandwidth_gbps"):
            assert r[key] > 0
        assert r["speedup"] == pytest.approx(r["reference_seconds"] / r["seconds"])


@pytest.mark.skipif(not kernels.COMPILED, reason="compiled kernels not built")
def test_bench_kernels_table(capsys):
    assert cli.main(["bench", "kernels", "--rows", "200", "--repeats", "1", *TINY_MLP]) == 0
    out = capsys.readouterr().out
    assert "least-squares  csr" in out and "targets:" in out
    # dense float64/float32 x logistic/least-squares: speedup and bandwidth; csr: speedup;
    # mlp float64/float32: ratio to the twin and fraction of matmul
    mlp = 2 * 2 if kernels.MLP_COMPILED else 0
    assert out.count("MISSED") + out.count(": met") == 4 * 2 + 2 * 1 + mlp


@pytest.mark.parametrize("argv", [["--rows", "0"], ["--repeats", "0"], ["--threads", "0"]])
def test_bench_bad_options_exit_2(argv, capsys):
    assert cli.main(["bench", "kernels", *argv]) == 2
    assert "must be at least 1" in capsys.readouterr().err


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
