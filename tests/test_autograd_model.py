"""A model written with autograd (docs/autograd_model.py, the file users copy) runs like a built-in one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gdcode import models, problem
from gdcode.options import RunOptions

pytest.importorskip("autograd")

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
MODEL = "autograd_model:TanhNet"


@pytest.fixture
def importable(monkeypatch):
    monkeypatch.syspath_prepend(str(DOCS))
    models.MODELS.clear_plugin_cache()
    yield
    models.MODELS.clear_plugin_cache()


@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_gradient_matches_finite_differences(importable, layout):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 4))
    y = np.where(rng.random(30) < 0.5, -1.0, 1.0)
    coef = rng.random(30)
    coef[3] = 0.0
    X[3] = np.nan  # a skipped row
    rows = sp.csr_matrix(X) if layout == "csr" else X
    model = models.get(MODEL, hidden=3)
    w = model.initial_point(4, 2, seed=1) + 0.1 * rng.standard_normal(model.n_params(4))
    grad = np.zeros_like(w)
    loss = model.loss_grad_sum(rows, y, coef, w, grad)

    def f(v):
        return model.loss_grad_sum(rows, y, coef, v, np.zeros_like(v))

    assert np.isfinite(loss) and loss == pytest.approx(f(w))
    numeric = [(f(w + 1e-6 * e) - f(w - 1e-6 * e)) / 2e-6 for e in np.eye(w.size)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_a_run_builds_it_with_its_options_and_initial_point(importable):
    p = problem.build(RunOptions(dataset="synthetic:300x5", model=MODEL, model_options="hidden=6"))
    assert p.model.hidden == 6 and p.n_params == 7 * 6 + 1
    np.testing.assert_array_equal(p.w0, p.model.initial_point(5, 2, 0))
    X, y = p.train_set()
    assert set(p.model.test_metrics(*p.test_set(), p.w0)) == {"test_loss", "test_accuracy"}
    assert p.model.objective(X, y, p.w0, p.l2) > 0


def test_the_numpy_example_of_docs_plugins_runs():
    """The complete model of docs/plugins.md (the block after 'A complete model')."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    start = text.index("```python", text.index("A complete model"))
    code = text[start + len("```python"):text.index("```", start + 3)]
    space: dict = {}
    exec(compile(code, "docs/plugins.md", "exec"), space)  # noqa: S102 - our own documentation
    model = space["SquaredHinge"]()
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, 3)), np.where(rng.random(50) < 0.5, -1.0, 1.0)
    w = rng.standard_normal(3)
    grad = np.zeros(3)
    model.loss_grad_sum(X, y, np.ones(50), w, grad)
    numeric = [(model.objective(X, y, w + 1e-6 * e, 0) - model.objective(X, y, w - 1e-6 * e, 0)) / 2e-6 * 50
               for e in np.eye(3)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)
    assert set(model.test_metrics(X, y, w)) == {"test_loss", "test_accuracy"}


@pytest.mark.mpi
def test_frc_equals_uncoded_and_hogwild_runs(tmp_path, monkeypatch):
    from e2e import run_mpi

    from gdcode.results import load_run

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(DOCS), os.environ.get("PYTHONPATH", "")]))
    common = ["--model", MODEL, "--model-options", "hidden=4", "--dataset", "synthetic:400x6", "--seed", "3",
              "--out", str(tmp_path), "--quiet"]
    runs = {}
    for name, args in (("uncoded", ["--workers", "4", "--iterations", "8"]),
                       ("frc", ["--workers", "4", "--iterations", "8", "--scheme", "frc", "--stragglers", "1"]),
                       ("hogwild", ["--workers", "2", "--mode", "hogwild", "--iterations", "30",
                                    "--batch-size", "20", "--lr", "0.2"])):
        workers = int(args[1])
        res = run_mpi(workers + 1, ["run", *args, *common, "--name", name], cwd=tmp_path)
        assert res.returncode == 0, f"{name}: exit {res.returncode}\n{res.stderr}"
        runs[name] = load_run(tmp_path / name)
    losses = runs["uncoded"].column("train_loss")
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(runs["frc"].column("train_loss"), losses, rtol=1e-9, atol=0)
    hog = runs["hogwild"]
    assert hog.summary["status"] == "ok"
    assert hog.column("train_loss")[-1] < hog.column("train_loss")[0]
    assert "test_accuracy" in hog.metrics[-1]
