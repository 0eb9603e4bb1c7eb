"""Models: the objectives of docs/objectives.md, dense/CSR/float32 dispatch, optima, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize

from gdcode import kernels, models

NAMES = ("logistic", "least-squares", "hinge", "softmax")


def problem(name: str, n: int = 80, p: int = 6, seed: int = 0, K: int = 3):
    rng = np.random.default_rng([seed, n, p])
    X = rng.standard_normal((n, p))
    if name == "softmax":
        y = rng.integers(0, K, size=n).astype(np.float64)
        w = 0.3 * rng.standard_normal(K * p)
    elif name == "least-squares":
        y = rng.standard_normal(n)
        w = 0.3 * rng.standard_normal(p)
    else:
        y = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        w = 0.3 * rng.standard_normal(p)
    return X, y, w


def design_objective(name: str, X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float) -> float:
    """The table of docs/objectives.md, written out directly."""
    n = X.shape[0]
    if name == "logistic":
        data = np.mean(np.log1p(np.exp(-y * (X @ w))))
    elif name == "least-squares":
        data = np.sum((X @ w - y) ** 2) / (2 * n)
    elif name == "hinge":
        data = np.mean(np.maximum(0.0, 1.0 - y * (X @ w)))
    else:
        W = w.reshape(-1, X.shape[1])
        s = X @ W.T
        logsoftmax = s - np.log(np.sum(np.exp(s), axis=1, keepdims=True))
        data = -np.mean(logsoftmax[np.arange(n), y.astype(int)])
    return float(data + 0.5 * l2 * np.sum(w * w))


# ----------------------------------------------------------------------------- registry


def test_registry_and_tasks():
    assert models.names() == sorted((*NAMES, "mlp"))  # mlp: tests/test_mlp.py
    tasks = {name: models.get(name).task for name in NAMES}
    assert tasks == {"logistic": "binary", "least-squares": "regression", "hinge": "binary",
                     "softmax": "multiclass"}
    with pytest.raises(ValueError, match="unknown model"):
        models.get("svm")
    with pytest.raises(ValueError, match="n_threads"):
        models.get("logistic", n_threads=0)


def test_softmax_parameter_count():
    m = models.get("softmax")
    assert m.n_params(7, 4) == 28
    assert models.get("logistic").n_params(7, 2) == 7
    with pytest.raises(ValueError, match="at least 2 classes"):
        m.n_params(7, 1)
    with pytest.raises(ValueError, match=r"\(K, 7\)"):
        m.objective(np.zeros((3, 7)), np.zeros(3), np.zeros(10), 0.0)


# ----------------------------------------------------------------------------- objectives


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=pytest.mark.skipif(
    not kernels.COMPILED, reason="compiled kernels not built")), False])
@pytest.mark.parametrize("name", NAMES)
def test_objective_is_design_section_3(name, compiled):
    X, y, w = problem(name)
    m = models.get(name, compiled=compiled)
    l2 = 0.37
    assert m.objective(X, y, w, l2) == pytest.approx(design_objective(name, X, y, w, l2),
                                                     rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_full_gradient_matches_finite_differences(name):
    X, y, w = problem(name, n=40, p=4)
    m = models.get(name)
    l2 = 0.2
    g = m.full_gradient(X, y, w, l2)
    h = 1e-6
    numeric = np.array([(m.objective(X, y, w + h * e, l2) - m.objective(X, y, w - h * e, l2))
                        / (2 * h) for e in np.eye(w.size)])
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_dense_csr_float32_and_twin_agree(name):
    X, y, w = problem(name, n=120, p=9)
    X[X < 0.3] = 0.0  # sparse-ish
    coef = np.random.default_rng(1).random(120)
    results = {}
    for label, rows, compiled in [("dense", X, None), ("csr", sp.csr_matrix(X), None),
                                  ("csc", sp.csc_matrix(X), None), ("twin", X, False),
                                  ("twin-csr", sp.csr_matrix(X), False),
                                  ("fortran", np.asfortranarray(X), None),
                                  ("int", X.round().astype(np.int64), None)]:
        grad = np.zeros_like(w)
        loss = models.get(name, compiled=compiled).loss_grad_sum(rows, y, coef, w, grad)
        results[label] = (loss, grad)
    base = results["dense"]
    for label in ("csr", "csc", "twin", "twin-csr", "fortran"):
        assert results[label][0] == pytest.approx(base[0], rel=1e-12)
        np.testing.assert_allclose(results[label][1], base[1], rtol=1e-11, atol=1e-12)
    rounded = X.round()
    grad = np.zeros_like(w)
    loss = models.get(name).loss_grad_sum(rounded, y, coef, w, grad)
    assert results["int"][0] == pytest.approx(loss, rel=1e-12)
    # float32 rows: the same sums of the rounded values, accumulated in float64
    X32 = X.astype(np.float32)
    grad32 = np.zeros_like(w)
    loss32 = models.get(name).loss_grad_sum(X32, y, coef, w, grad32)
    grad64 = np.zeros_like(w)
    loss64 = models.get(name).loss_grad_sum(X32.astype(np.float64), y, coef, w, grad64)
    assert loss32 == pytest.approx(loss64, rel=1e-12)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_row_blocks_sum_to_the_whole(name):
    """What a worker does: loss_grad_sum over row slices X[lo:hi], dense and CSR."""
    X, y, w = problem(name, n=101, p=5)
    coef = np.linspace(0.5, 2.0, 101)
    m = models.get(name)
    whole = np.zeros_like(w)
    total = m.loss_grad_sum(X, y, coef, w, whole)
    for rows in (X, sp.csr_matrix(X)):
        grad = np.zeros_like(w)
        loss = sum(m.loss_grad_sum(rows[lo:lo + 17], y[lo:lo + 17], coef[lo:lo + 17], w, grad)
                   for lo in range(0, 101, 17))
        assert loss == pytest.approx(total, rel=1e-12)
        np.testing.assert_allclose(grad, whole, rtol=1e-12, atol=1e-12)
    grad = np.zeros_like(w)
    assert m.loss_grad_sum(X[:0], y[:0], coef[:0], w, grad) == 0.0
    assert not grad.any()


def test_grad_must_be_writable_contiguous_float64():
    X, y, w = problem("logistic")
    m = models.get("logistic")
    with pytest.raises(ValueError, match="C-contiguous float64"):
        m.loss_grad_sum(X, y, np.ones(80), w, np.zeros(12)[::2])
    with pytest.raises(ValueError, match="C-contiguous float64"):
        m.loss_grad_sum(X, y, np.ones(80), w, np.zeros(6, dtype=np.float32))
    with pytest.raises(ValueError, match="needs 6 parameters"):
        m.loss_grad_sum(X, y, np.ones(80), np.zeros(7), np.zeros(7))


# ----------------------------------------------------------------------------- optima


def minimise(m, X, y, l2, size):
    res = minimize(lambda v: m.objective(X, y, v, l2), np.zeros(size),
                   jac=lambda v: m.full_gradient(X, y, v, l2), method="L-BFGS-B",
                   options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 2000})
    return res.x


def test_logistic_optimum_is_sklearns():
    from sklearn.linear_model import LogisticRegression

    X, y, _ = problem("logistic", n=150, p=5)
    l2 = 1.0 / 150
    w = minimise(models.get("logistic"), X, y, l2, 5)
    sk = LogisticRegression(C=1.0 / (l2 * 150), fit_intercept=False, tol=1e-12,
                            max_iter=10000).fit(X, y)
    np.testing.assert_allclose(w, sk.coef_.ravel(), rtol=1e-5, atol=1e-6)


def test_softmax_optimum_is_sklearns_multinomial():
    from sklearn.linear_model import LogisticRegression

    X, y, _ = problem("softmax", n=150, p=4, K=3)
    l2 = 0.05
    w = minimise(models.get("softmax"), X, y, l2, 12)
    sk = LogisticRegression(C=1.0 / (l2 * 150), fit_intercept=False, tol=1e-12,
                            max_iter=10000).fit(X, y.astype(int))
    np.testing.assert_allclose(w.reshape(3, 4), sk.coef_, rtol=1e-4, atol=1e-5)


def test_least_squares_optimum_is_ridge():
    X, y, _ = problem("least-squares", n=90, p=5)
    l2 = 0.3
    w = minimise(models.get("least-squares"), X, y, l2, 5)
    ridge = np.linalg.solve(X.T @ X / 90 + l2 * np.eye(5), X.T @ y / 90)
    np.testing.assert_allclose(w, ridge, rtol=1e-6, atol=1e-8)


def test_hinge_objective_is_linear_svms():
    """LinearSVC(loss='hinge', C=1/(lambda n)) minimises the same function: no direction
    from its solution lowers our objective."""
    from sklearn.svm import LinearSVC

    X, y, _ = problem("hinge", n=120, p=4)
    l2 = 0.1
    sk = LinearSVC(loss="hinge", C=1.0 / (l2 * 120), fit_intercept=False, dual=True,
                   tol=1e-10, max_iter=200000).fit(X, y)
    w = sk.coef_.ravel()
    m = models.get("hinge")
    f0 = m.objective(X, y, w, l2)
    rng = np.random.default_rng(3)
    for d in rng.standard_normal((40, 4)):
        assert m.objective(X, y, w + 1e-3 * d / np.linalg.norm(d), l2) >= f0 - 1e-7


# ----------------------------------------------------------------------------- metrics


def test_test_metrics():
    X, y, w = problem("hinge")
    hinge = models.get("hinge").test_metrics(X, y, w)
    assert set(hinge) == {"test_loss", "test_accuracy", "test_auc"}
    assert hinge["test_loss"] == pytest.approx(np.mean(np.maximum(0, 1 - y * (X @ w))))
    Xs, ys, ws = problem("softmax")
    soft = models.get("softmax").test_metrics(Xs, ys, ws)
    assert set(soft) == {"test_loss", "test_accuracy"}
    assert soft["test_loss"] == pytest.approx(design_objective("softmax", Xs, ys, ws, 0.0))
    pred = np.argmax(Xs @ ws.reshape(3, -1).T, axis=1)
    assert soft["test_accuracy"] == pytest.approx(np.mean(pred == ys))
    assert set(models.get("logistic").test_metrics(X, y, w)) == {"test_loss", "test_accuracy",
                                                                 "test_auc"}
    assert models.get("softmax").test_metrics(Xs[:0], ys[:0], ws) == {}


# ----------------------------------------------------------------------------- Hogwild


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_model_hogwild_lowers_the_objective(name, layout):
    X, _, w_true = problem(name, n=200, p=5)
    if name == "softmax":
        y = np.argmax(X @ (10 * w_true).reshape(3, 5).T, axis=1).astype(np.float64)
    elif name == "least-squares":
        y = X @ (10 * w_true)
    else:
        y = np.sign(X @ w_true)
    m = models.get(name)
    w = np.zeros_like(w_true)
    rows = X if layout == "dense" else sp.csr_matrix(X)
    l2 = 0.05
    f0 = m.objective(X, y, w, l2)
    assert m.hogwild(rows, y, w, lr=0.05, n_steps=2000, seed=1, n_threads=2, l2=l2,
                     lr_decay=0.01) == 4000
    assert m.objective(X, y, w, l2) < 0.7 * f0
    with pytest.raises(ValueError, match="in place"):
        m.hogwild(rows, y, w.astype(np.float32), lr=0.1, n_steps=1, seed=0)


class _Quadratic(models.Model):
    """``(x.w - y)^2 / 2`` in plain numpy: the interface without kernels."""

    task = "regression"

    def loss_grad_sum(self, X, y, coef, w, grad):
        r = np.asarray(X @ w) - y
        grad += X.T @ (coef * r)
        return float(coef @ (0.5 * r * r))

    def test_metrics(self, X, y, w):
        return {}


def test_a_plain_numpy_model_gets_objective_and_gradient_but_no_hogwild_threads():
    rng = np.random.default_rng(0)
    X, y, w = rng.standard_normal((30, 4)), rng.standard_normal(30), rng.standard_normal(4)
    plain, kernel = _Quadratic(), models.get("least-squares")
    assert plain.objective(X, y, w, 0.1) == pytest.approx(kernel.objective(X, y, w, 0.1))
    np.testing.assert_allclose(plain.full_gradient(X, y, w, 0.1), kernel.full_gradient(X, y, w, 0.1))
    assert plain.n_params(4, 2) == 4 and plain.n_classes(4, 4) == 1
    assert not plain.supports_hogwild_threads
    assert all(models.get(name).supports_hogwild_threads for name in NAMES)
    assert all(isinstance(models.get(name), models.LinearModel) for name in NAMES)


def _auc_mann_whitney(positive: np.ndarray, score: np.ndarray) -> float | None:
    """The implementation gdcode had before it used scikit-learn: ranks, ties counted half."""
    from scipy.stats import rankdata

    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.mark.parametrize("seed", range(6))
def test_auc_and_accuracy_keep_their_values_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 200 + 37 * seed
    positive = rng.random(n) < 0.3 + 0.07 * seed
    score = np.round(rng.standard_normal(n) + positive, 1 if seed % 2 else 0)  # many ties
    assert np.unique(score).size < n // 3
    assert models.binary_auc(positive, score) == pytest.approx(_auc_mann_whitney(positive, score), rel=1e-12,
                                                               abs=1e-15)
    from sklearn.metrics import roc_auc_score

    assert models.binary_auc(positive, score) == pytest.approx(roc_auc_score(positive, score), rel=1e-12)
    score[:5] = [np.inf, -np.inf, np.inf, 0.0, -np.inf]  # a diverging model: ranks still defined
    assert models.binary_auc(positive, score) == pytest.approx(_auc_mann_whitney(positive, score), rel=1e-12)
    score[7] = np.nan
    assert np.isnan(models.binary_auc(positive, score))
    assert models.binary_auc(np.ones(5, bool), np.arange(5.0)) is None
    assert models.binary_auc(np.zeros(5, bool), np.arange(5.0)) is None
    # accuracy: a margin of exactly 0 predicts +1, as before
    y = np.where(positive, 1.0, -1.0)
    margin = np.round(rng.standard_normal(n), 0)
    X = np.eye(n)
    out = models.get("hinge").test_metrics(X, y, margin)
    assert out["test_accuracy"] == np.mean(np.where(margin >= 0, 1.0, -1.0) == y)
    assert out["test_auc"] == pytest.approx(_auc_mann_whitney(positive, margin), rel=1e-12)


@pytest.mark.parametrize("name", ["logistic", "least-squares", "mlp"])
def test_row_strided_views_give_what_their_copies_give(name):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 5))
    y = np.where(rng.random(40) < 0.5, -1.0, 1.0)
    if name == "mlp":
        y = (y > 0).astype(float)  # two classes, 0 and 1
    model = models.get(name)
    w = 0.1 * rng.standard_normal(model.n_params(5))
    view, copy = X[::2], np.ascontiguousarray(X[::2])
    g_view, g_copy = np.zeros_like(w), np.zeros_like(w)
    assert model.loss_grad_sum(view, y[::2], np.ones(20), w, g_view) == \
        pytest.approx(model.loss_grad_sum(copy, y[::2], np.ones(20), w, g_copy), rel=1e-12)
    np.testing.assert_allclose(g_view, g_copy, rtol=1e-12, atol=1e-15)
