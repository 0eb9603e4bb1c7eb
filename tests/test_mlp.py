"""The multilayer perceptron (``--model mlp``): gradients, compiled kernel against its twin, options, runs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gdcode import kernels, models, optim, problem
from gdcode.errors import OptionError
from gdcode.kernels import reference
from gdcode.options import RunOptions

COMPILED = kernels.MLP_COMPILED
IMPLS = [False, True] if COMPILED else [False]


def net(K: int, n: int = 40, d: int = 6, hidden=(5, 4), seed: int = 0, dtype=np.float64):
    """Rows, labels, coefficients and parameters of a small network with K outputs."""
    rng = np.random.default_rng([seed, K, n, d])
    sizes = (d, *hidden, K)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, K, n).astype(np.float64) if K > 1 else np.where(rng.random(n) < 0.5, -1.0, 1.0)
    coef = rng.uniform(0.5, 1.5, n)
    w = 0.6 * rng.standard_normal(reference.mlp_n_params(sizes))
    return sizes, X, y, coef, w


def kernel(compiled: bool):
    return kernels.get("mlp_dense", compiled=compiled)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("compiled", IMPLS)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("K", [1, 3], ids=["logistic", "softmax"])
def test_gradient_matches_finite_differences(compiled, activation, K):
    sizes, X, y, coef, w = net(K)
    f = kernel(compiled)

    def loss(v):
        return f(X, y, coef, v, np.zeros_like(v), sizes, activation)

    grad = np.zeros_like(w)
    f(X, y, coef, w, grad, sizes, activation)
    h = 1e-6
    numeric = np.array([(loss(w + h * e) - loss(w - h * e)) / (2 * h) for e in np.eye(w.size)])
    # relu's kink: a pre-activation within h of 0 would spoil a central difference; none is here
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


def test_loss_is_the_definition_written_out():
    """Softmax cross-entropy / logistic loss of the forward pass, written directly in numpy."""
    for K in (1, 4):
        sizes, X, y, coef, w = net(K, hidden=(7,))
        W1 = w[:7 * 6].reshape(7, 6)
        b1 = w[42:49]
        W2 = w[49:49 + K * 7].reshape(K, 7)
        b2 = w[49 + K * 7:]
        s = np.tanh(X @ W1.T + b1) @ W2.T + b2
        if K == 1:
            per_row = np.log1p(np.exp(-y * s[:, 0]))
        else:
            per_row = np.log(np.exp(s).sum(axis=1)) - s[np.arange(y.size), y.astype(int)]
        for compiled in IMPLS:
            got = kernel(compiled)(X, y, coef, w, np.zeros_like(w), sizes, "tanh")
            assert got == pytest.approx(coef @ per_row, rel=1e-12)


# ----------------------------------------------------------------------------- compiled = twin


@pytest.mark.skipif(not COMPILED, reason="the compiled MLP kernel is not built")
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("K", [1, 10])
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_compiled_equals_twin_float64(activation, K, rows):
    sizes, X, y, coef, w = net(K, n=300, d=20, hidden=(33, 17), seed=rows)
    coef[::5] = 0.0
    X[5, 3] = np.nan  # a skipped row's values never count
    g_twin, g_comp = np.full(w.size, 0.25), np.full(w.size, 0.25)  # both add into grad
    l_twin = reference.mlp_dense(X, y, coef, w, g_twin, sizes, activation)
    work = np.empty(reference.mlp_work_size(sizes, rows, np.float64))
    l_comp = kernel(True)(X, y, coef, w, g_comp, sizes, activation, work)
    assert l_comp == pytest.approx(l_twin, rel=1e-10)
    np.testing.assert_allclose(g_comp, g_twin, rtol=1e-10, atol=1e-10 * np.abs(g_twin).max())


@pytest.mark.skipif(not COMPILED, reason="the compiled MLP kernel is not built")
@pytest.mark.parametrize("K", [1, 10])
def test_compiled_equals_twin_float32_and_float32_is_close_to_float64(K):
    sizes, X, y, coef, w = net(K, n=500, d=30, hidden=(64, 32), dtype=np.float32)
    g_twin, g_comp, g64 = np.zeros(w.size), np.zeros(w.size), np.zeros(w.size)
    l_twin = reference.mlp_dense(X, y, coef, w, g_twin, sizes, "relu")
    l_comp = kernel(True)(X, y, coef, w, g_comp, sizes, "relu")
    l64 = kernel(True)(X.astype(np.float64), y, coef, w, g64, sizes, "relu")
    scale = np.abs(g64).max()
    for loss, g in ((l_comp, g_comp), (l_twin, g_twin)):
        assert loss == pytest.approx(l64, rel=1e-5)
        np.testing.assert_allclose(g, g64, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(g_comp, g_twin, rtol=0, atol=1e-5 * scale)


@pytest.mark.skipif(not COMPILED, reason="the compiled MLP kernel is not built")
def test_compiled_kernel_refuses_bad_arguments():
    sizes, X, y, coef, w = net(3)
    f = kernel(True)
    g = np.zeros_like(w)
    with pytest.raises(ValueError, match="class numbers"):
        f(X, np.full(y.size, 3.0), coef, w, g, sizes)
    assert not g.any()  # labels are checked before anything is added
    with pytest.raises(ValueError, match="parameters"):
        f(X, y, coef, w[:-1], g[:-1], sizes)
    with pytest.raises(ValueError, match="activation"):
        f(X, y, coef, w, g, sizes, "sigmoid")
    with pytest.raises(ValueError, match="work"):
        f(X, y, coef, w, g, sizes, "relu", np.empty(3))
    with pytest.raises(ValueError, match="columns"):
        f(X[:, :-1].copy(), y, coef, w, g, sizes)


def test_twin_takes_csr_rows():
    sizes, X, y, coef, w = net(3)
    X[np.abs(X) < 0.8] = 0.0
    g_dense, g_csr = np.zeros_like(w), np.zeros_like(w)
    l_dense = reference.mlp_dense(X, y, coef, w, g_dense, sizes, "relu")
    l_csr = reference.mlp_dense(sp.csr_matrix(X), y, coef, w, g_csr, sizes, "relu")
    assert l_csr == pytest.approx(l_dense, rel=1e-12)
    np.testing.assert_allclose(g_csr, g_dense, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- the model


def test_model_layout_counts_and_options():
    m = models.get("mlp", hidden="8,4")
    assert m.tasks == ("binary", "multiclass") and m.hidden == (8, 4)
    assert m.n_params(5, 3) == (5 + 1) * 8 + (8 + 1) * 4 + (4 + 1) * 3
    assert m.n_classes(m.n_params(5, 3), 5) == 3
    m.bind_task("binary")
    assert m.n_params(5, 2) == (5 + 1) * 8 + (8 + 1) * 4 + (4 + 1) * 1
    assert models.get("mlp").hidden == models.MLP_DEFAULT_HIDDEN == (100,)
    assert models.get("mlp", hidden=[3]).hidden == (3,)
    assert models.get("mlp", hidden=16).hidden == (16,)
    with pytest.raises(ValueError, match="trains on binary or multiclass"):
        m.bind_task("regression")
    for bad in ("", "0", "8,,4", "a", "-3", "2.5"):
        with pytest.raises(ValueError, match="hidden"):
            models.get("mlp", hidden=bad)
    with pytest.raises(ValueError, match="activation"):
        models.get("mlp", activation="sigmoid")
    with pytest.raises(ValueError, match="do not fit"):
        m.n_classes(10, 5)
    assert not m.supports_hogwild_threads and not m.sparse_steps
    assert models.model_options("mlp", {"hidden": "4", "activation": "tanh", "lr": 0.1, "momentum": 0.9}) \
        == {"hidden": "4", "activation": "tanh"}
    assert models.model_options("logistic", {"hidden": "4"}) == {}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_initial_point_is_seeded_he_or_glorot_with_zero_biases(activation):
    m = models.get("mlp", hidden="400,300", activation=activation)
    w = m.initial_point(200, 10, seed=3)
    np.testing.assert_array_equal(w, m.initial_point(200, 10, seed=3))
    assert not np.array_equal(w, m.initial_point(200, 10, seed=4))
    layout = reference.mlp_layout(m.sizes(200, 10))
    for l, (ow, ob, d_out, d_in) in enumerate(layout):
        hidden = l < len(layout) - 1
        var = 2 / d_in if hidden and activation == "relu" else 2 / (d_in + d_out)
        assert np.var(w[ow:ow + d_out * d_in]) == pytest.approx(var, rel=0.1)
        assert not w[ob:ob + d_out].any()


@pytest.mark.parametrize("compiled", IMPLS)
def test_model_reuses_one_workspace_and_matches_the_twin(compiled):
    sizes, X, y, coef, w = net(3, n=600, d=6, hidden=(5, 4))
    m = models.get("mlp", compiled=compiled, hidden="5,4", block_rows=64)
    g = np.zeros_like(w)
    loss = m.loss_grad_sum(X, y, coef, w, g)
    if compiled:
        work = m.workspace(sizes, np.float64)
        assert work.size == reference.mlp_work_size(sizes, 64, np.float64)
        m.loss_grad_sum(X[:100], y[:100], coef[:100], w, np.zeros_like(w))
        assert m.workspace(sizes, np.float64) is work
    g_twin = np.zeros_like(w)
    assert loss == pytest.approx(reference.mlp_dense(X, y, coef, w, g_twin, sizes, "relu"), rel=1e-10)
    np.testing.assert_allclose(g, g_twin, rtol=1e-10, atol=1e-12)
    g_csr = np.zeros_like(w)
    assert m.loss_grad_sum(sp.csr_matrix(X), y, coef, w, g_csr) == pytest.approx(loss, rel=1e-10)
    np.testing.assert_allclose(g_csr, g, rtol=1e-10, atol=1e-12)


def test_model_metrics():
    m = models.get("mlp", hidden="5,4")
    sizes, X, y, _, w = net(3)
    met = m.test_metrics(X, y, w)
    scores = m.scores(X, w)
    assert met["test_accuracy"] == pytest.approx(np.mean(np.argmax(scores, axis=1) == y))
    assert met["test_loss"] == pytest.approx(m.objective(X, y, w, 0.0))
    m.bind_task("binary")
    sizes, X, y, _, w = net(1)
    met = m.test_metrics(X, y, w)
    assert set(met) == {"test_loss", "test_accuracy", "test_auc"}
    assert met["test_loss"] == pytest.approx(m.objective(X, y, w, 0.0))
    assert m.test_metrics(X[:0], y[:0], w) == {}


# ----------------------------------------------------------------------------- runs


def test_problem_build_adapts_to_the_dataset_task_and_seeds_the_point():
    p = problem.build(RunOptions(dataset="sklearn:iris", model="mlp", hidden="10", activation="tanh"))
    assert p.model.task == "multiclass" and p.model.hidden == (10,) and p.model.activation == "tanh"
    assert p.n_params == (4 + 1) * 10 + (10 + 1) * 3
    np.testing.assert_array_equal(p.w0, p.model.initial_point(4, 3, 0))
    p = problem.build(RunOptions(dataset="sklearn:breast_cancer", model="mlp", hidden="6", intercept=True))
    assert p.model.task == "binary" and p.n_params == (30 + 2) * 6 + 7
    with pytest.raises(OptionError, match="needs a binary or multiclass dataset"):
        problem.build(RunOptions(dataset="sklearn:diabetes", model="mlp"))
    # the linear models keep their initial point exactly
    p = problem.build(RunOptions(dataset="synthetic:300x7", hidden="10"))
    np.testing.assert_array_equal(p.w0, optim.initial_point(7, 0))
    # --model-options wins over the run option of the same name
    p = problem.build(RunOptions(dataset="sklearn:iris", model="mlp", hidden="10", model_options="hidden=3"))
    assert p.model.hidden == (3,)


def test_bad_mlp_options_are_refused_by_name():
    with pytest.raises(OptionError, match="hidden"):
        RunOptions(hidden="10,x")
    with pytest.raises(OptionError, match="activation"):
        RunOptions(activation="sigmoid")
    with pytest.raises(OptionError, match="threads"):
        problem.build(RunOptions(dataset="sklearn:iris", model="mlp", mode="hogwild", threads=2))


RUN_DATA = ("--dataset", "sklearn:iris", "--model", "mlp", "--hidden", "10", "--seed", "2")


@pytest.fixture(scope="module")
def uncoded(tmp_path_factory):
    from e2e import train_run

    return train_run(tmp_path_factory.mktemp("mlp-uncoded"), 4, "--iterations", "10", *RUN_DATA, name="u")


@pytest.mark.mpi
@pytest.mark.parametrize("scheme", ["frc", "cyclic-mds"])
def test_exact_codes_equal_uncoded(train, uncoded, scheme):
    run = train(4, "--scheme", scheme, "--stragglers", "1", "--iterations", "10", *RUN_DATA, name=scheme)
    losses = uncoded.column("train_loss")
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(run.column("train_loss"), losses, rtol=1e-9, atol=0)


@pytest.mark.mpi
@pytest.mark.parametrize("mode", ["hogwild", "gossip"])
def test_asynchronous_modes_run_it(train, mode):
    run = train(2, "--mode", mode, "--iterations", "40", "--batch-size", "16", "--lr", "0.2", *RUN_DATA, name=mode)
    assert run.summary["status"] == "ok"
    losses = run.column("train_loss")
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


# ----------------------------------------------------------------------------- benchmark


def test_bench_flop_count():
    from gdcode.bench import mlp as bench

    # 784-1024-1024-1024-10 at 128 rows: forward, weight gradients, deltas of layers 2..4
    products = [784 * 1024, 1024 * 1024, 1024 * 1024, 1024 * 10]
    assert bench.gemm_flops(bench.DEFAULT_SIZES, 128) == 2 * 128 * (3 * sum(products) - products[0])
    with pytest.raises(ValueError, match="mlp-sizes"):
        bench.parse_sizes("784,x")
    with pytest.raises(ValueError, match="mlp-sizes"):
        bench.parse_sizes("784,1")


@pytest.mark.skipif(not COMPILED, reason="the compiled MLP kernel is not built")
def test_bench_mlp_rows(capsys):
    import json

    from gdcode import cli
    from gdcode.bench import mlp as bench

    assert cli.main(["bench", "kernels", "--json", "--rows", "50", "--rounds", "1", "--repeat", "1",
                     "--mlp-sizes", "20,12,4", "--mlp-batch", "16"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["kernel"] == "mlp"]
    assert [r["dtype"] for r in rows] == ["float64", "float32"]
    for r in rows:
        assert set(r) == set(bench.JSON_KEYS) and r["sizes"] == [20, 12, 4] and r["batch"] == 16
        assert r["ratio"] == pytest.approx(r["twin_seconds"] / r["seconds"])
        assert r["gflops"] == pytest.approx(bench.gemm_flops((20, 12, 4), 16) / r["seconds"] / 1e9)
        assert r["of_matmul"] == pytest.approx(r["gflops"] / r["matmul_gflops"])
    assert cli.main(["bench", "kernels", "--mlp-sizes", "20", "--rows", "50"]) == 2
    assert "--mlp-sizes" in capsys.readouterr().err
    assert cli.main(["bench", "kernels", "--mlp-batch", "0", "--rows", "50"]) == 2


@pytest.mark.mpi
def test_hogwild_on_sparse_rows_takes_full_steps(tmp_path, train):
    """CSR rows: the MLP's parameters mix the columns, so hogwild sends full (dense) steps."""
    from e2e import run_cli

    res = run_cli(["prepare", "synthetic", "--rows", "600", "--cols", "300", "--sparse", "--nnz-per-row", "8",
                   "--out", str(tmp_path / "sparse")], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = train(2, "--mode", "hogwild", "--dataset", str(tmp_path / "sparse"), "--model", "mlp", "--hidden", "8",
                "--batch-size", "16", "--lr", "0.5", "--iterations", "60", name="sp")
    losses = run.column("train_loss")
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert run.summary["worker_updates"] == [60, 60]


@pytest.mark.parametrize("K", [1, 3])
def test_objective_is_a_forward_pass_equal_to_the_kernels_loss(K):
    """The coordinator's train_loss: forward only, in chunks, equal to the gradient kernels' loss."""
    sizes, X, y, _, w = net(K, n=50, hidden=(5, 4))
    m = models.get("mlp", hidden="5,4")
    m.bind_task("binary" if K == 1 else "multiclass")
    m.SCORE_ROWS = 7  # several chunks
    ones = np.ones(X.shape[0])
    want = m.loss_grad_sum(X, y, ones, w, np.zeros_like(w)) / X.shape[0] + 0.5 * 0.3 * (w @ w)
    assert m.objective(X, y, w, 0.3) == pytest.approx(want, rel=1e-12)
    assert m.objective(X[:0], y[:0], w, 0.3) == pytest.approx(0.5 * 0.3 * (w @ w))
