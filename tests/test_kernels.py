"""Compiled kernels against their numpy twins, finite differences and Hogwild convergence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gdcode import kernels
from gdcode.kernels import reference

compiled_only = pytest.mark.skipif(not kernels.COMPILED, reason="compiled kernels not built")

STEMS = ("logistic", "least_squares", "hinge", "softmax")
K = 3  # softmax classes in these tests


def make_labels(stem: str, n: int, rng) -> np.ndarray:
    if stem == "softmax":
        return rng.integers(0, K, size=n).astype(np.float64)
    if stem == "least_squares":
        return rng.standard_normal(n)
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def make_params(stem: str, p: int, rng, scale: float = 1.0) -> np.ndarray:
    shape = (K, p) if stem == "softmax" else (p,)
    return scale * rng.standard_normal(shape) / np.sqrt(max(p, 1))


def dense_block(n: int, p: int, rng, dtype=np.float64, zero_rows=()) -> np.ndarray:
    X = rng.standard_normal((n, p)).astype(dtype)
    X[list(zero_rows)] = 0.0
    return X


def csr_block(n: int, p: int, rng, density=0.3, index_dtype=np.int32, dtype=np.float64):
    X = sp.random(n, p, density=density, format="csr", random_state=rng, dtype=dtype)
    X.indices = X.indices.astype(index_dtype)
    X.indptr = X.indptr.astype(index_dtype)
    return X


def run(stem, layout, X, y, coef, w, compiled, n_threads=1):
    """(loss, grad) from the compiled kernel or its twin; grad starts at a non-zero value
    to check that the kernel adds into it."""
    grad = np.full_like(w, 0.25)
    fn = kernels.get(f"{stem}_{layout}", compiled=compiled)
    if layout == "dense":
        loss = fn(X, y, coef, w, grad, n_threads=n_threads)
    else:
        loss = fn(X.data, X.indices, X.indptr, y, coef, w, grad, n_threads=n_threads)
    return loss, grad


def assert_agree(stem, layout, X, y, coef, w, n_threads=1, rtol=1e-10):
    loss_c, grad_c = run(stem, layout, X, y, coef, w, True, n_threads)
    loss_t, grad_t = run(stem, layout, X, y, coef, w, False)
    assert np.isfinite(loss_c) and np.all(np.isfinite(grad_c))
    scale = 1.0 + abs(loss_t)
    assert abs(loss_c - loss_t) <= rtol * scale
    gscale = 1.0 + np.max(np.abs(grad_t))
    np.testing.assert_allclose(grad_c, grad_t, rtol=0, atol=rtol * gscale)


# ----------------------------------------------------------------------------- agreement


@compiled_only
@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(0, 5), (1, 7), (40, 1), (57, 33), (23, 39), (300, 200)])
def test_dense_agrees_with_twin(stem, dtype, shape):
    rng = np.random.default_rng([1, *shape])
    n, p = shape
    X = dense_block(n, p, rng, dtype, zero_rows=range(0, n, 5))
    y = make_labels(stem, n, rng)
    coef = rng.standard_normal(n)
    coef[1::7] = 0.0
    w = make_params(stem, p, rng)
    assert_agree(stem, "dense", X, y, coef, w)


@compiled_only
@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(0, 5), (1, 9), (30, 1), (200, 150)])
def test_csr_agrees_with_twin(stem, index_dtype, dtype, shape):
    rng = np.random.default_rng([2, *shape])
    n, p = shape
    X = csr_block(n, p, rng, index_dtype=index_dtype, dtype=dtype)
    y = make_labels(stem, n, rng)
    coef = rng.standard_normal(n)
    w = make_params(stem, p, rng)
    assert_agree(stem, "csr", X, y, coef, w)


@compiled_only
@pytest.mark.parametrize("n_classes", [2, 4, 5, 10, 17, 33])
@pytest.mark.parametrize("shape", [(400, 60), (3, 500)])
@pytest.mark.parametrize("n_threads", [1, 3])
def test_softmax_csr_layouts_agree_with_twin(n_classes, shape, n_threads):
    """Softmax CSR rows: the interleaved column-major copy (many nonzeros per column: 400 x
    60) with 1 to 3 chunks of 16 classes and padded classes, and the row-major path (a few
    rows of a wide block: 3 x 500), against the twin."""
    rng = np.random.default_rng([10, n_classes, *shape])
    n, p = shape
    X = csr_block(n, p, rng, density=0.2)
    y = rng.integers(0, n_classes, size=n).astype(np.float64)
    coef = rng.standard_normal(n)
    W = rng.standard_normal((n_classes, p)) / np.sqrt(p)
    losses, grads = [], []
    for compiled in (True, False):
        G = np.full_like(W, 0.25)
        fn = kernels.get("softmax_csr", compiled=compiled)
        losses.append(fn(X.data, X.indices, X.indptr, y, coef, W, G, n_threads=n_threads))
        grads.append(G)
    assert losses[0] == pytest.approx(losses[1], rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(grads[0], grads[1], rtol=0, atol=1e-10 * np.abs(grads[1]).max())


@compiled_only
@pytest.mark.parametrize("n_classes", [1, 2, 4, 5, 9, 10])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 3), (3, 0), (7, 13), (61, 50)])
def test_softmax_dense_groups_agree_with_twin(n_classes, dtype, shape):
    """Dense softmax rows go in groups of up to 4 rows and chunks of up to 4 classes: every
    remainder of both, skipped rows (zero coefficients) inside groups, against the twin."""
    rng = np.random.default_rng([12, n_classes, *shape])
    n, p = shape
    X = rng.standard_normal((n, p)).astype(dtype)
    y = rng.integers(0, n_classes, size=n).astype(np.float64)
    coef = rng.standard_normal(n)
    coef[2::5] = 0.0
    W = rng.standard_normal((n_classes, p)) / np.sqrt(max(p, 1))
    losses, grads = [], []
    for compiled in (True, False):
        G = np.full_like(W, 0.25)
        losses.append(kernels.get("softmax_dense", compiled=compiled)(X, y, coef, W, G))
        grads.append(G)
    assert losses[0] == pytest.approx(losses[1], rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(grads[0], grads[1], rtol=0, atol=1e-10 * np.abs(grads[1]).max(initial=1.0))


@compiled_only
def test_softmax_dense_bad_label_inside_a_group():
    rng = np.random.default_rng(13)
    X = rng.standard_normal((9, 6))
    y = np.array([0, 1, 2, 7, 1, 0, 2, 1, 0], dtype=np.float64)
    with pytest.raises(ValueError, match="1 labels are not class numbers"):
        kernels.get("softmax_dense", compiled=True)(X, y, np.ones(9), np.zeros((3, 6)),
                                                    np.zeros((3, 6)))


@compiled_only
def test_softmax_csr_bad_index_on_the_interleaved_copy():
    """A column index out of range raises on the interleaved path too (even and odd
    positions of a row, the first chunk of classes counting it once)."""
    rng = np.random.default_rng(11)
    X = csr_block(200, 30, rng, density=0.3)
    y = rng.integers(0, 20, size=200).astype(np.float64)
    for pos in (0, 1):
        indices = X.indices.copy()
        indices[X.indptr[5] + pos] = 30
        with pytest.raises(ValueError, match="1 column indices are outside"):
            kernels.get("softmax_csr", compiled=True)(
                X.data, indices, X.indptr, y, np.ones(200), np.zeros((20, 30)), np.zeros((20, 30)))


@compiled_only
@pytest.mark.parametrize("n_threads", [1, 2])
def test_softmax_csr_copy_of_several_mib_agrees_with_twin(n_threads):
    """A copy of the parameters from 2 MiB up is allocated apart (2 MiB aligned, advised onto
    huge pages): 10 classes of 12000 columns, against the twin, twice (the second call
    reuses the kept buffer)."""
    rng = np.random.default_rng(17)
    n, p, K = 2000, 12000, 10
    X = csr_block(n, p, rng, density=8 / p)
    y = rng.integers(0, K, size=n).astype(np.float64)
    coef = rng.standard_normal(n)
    W = rng.standard_normal((K, p)) / np.sqrt(8)
    G_t = np.zeros_like(W)
    loss_t = kernels.get("softmax_csr", compiled=False)(X.data, X.indices, X.indptr, y, coef,
                                                        W, G_t)
    for _ in range(2):
        G = np.zeros_like(W)
        loss = kernels.get("softmax_csr", compiled=True)(X.data, X.indices, X.indptr, y, coef, W,
                                                         G, n_threads=n_threads)
        assert loss == pytest.approx(loss_t, rel=1e-10)
        np.testing.assert_allclose(G, G_t, rtol=0, atol=1e-10 * np.abs(G_t).max())


@pytest.fixture
def softmax_loop():
    """Force the loop of softmax CSR rows on the column-major copies: ``"fused"`` (each row's
    scores in one loop with the previous row's update, on the interleaved copy) or
    ``"passes"`` (two passes over chunks of ``chunk_kib`` KiB of scores; 0: one row a chunk).
    The tuning is restored afterwards."""
    linear = kernels._linear
    saved = linear.tuning()

    def force(loop: str, chunk_kib: int = 1) -> None:
        if loop == "fused":
            linear.set_tuning(softmax_fused_kib=linear.TUNING_MAX)
        else:
            linear.set_tuning(softmax_fused_kib=0, softmax_chunk_kib=chunk_kib)

    yield force
    linear.set_tuning(**saved)


def softmax_csr_case(rng, n, p, n_classes, dtype=np.float64, index_dtype=np.int32):
    """A CSR block with empty rows (every 9th), rows that name a column twice (in entries 0
    and 1 or 1 and 2, every 5th), labels 0..K-1, coefficients with zeros (every 7th) and
    parameters W (K, p)."""
    X = csr_block(n, p, rng, density=0.25, dtype=dtype)
    X = (sp.diags((np.arange(n) % 9 != 4).astype(dtype)) @ X).tocsr()
    X.eliminate_zeros()
    for r in range(n):
        start = X.indptr[r]
        if X.indptr[r + 1] - start >= 3 and r % 5 < 2:
            X.indices[start + 1 + r % 5] = X.indices[start + r % 5]
    X.indices = X.indices.astype(index_dtype)
    X.indptr = X.indptr.astype(index_dtype)
    y = rng.integers(0, n_classes, size=n).astype(np.float64)
    coef = rng.standard_normal(n)
    coef[3::7] = 0.0
    W = rng.standard_normal((n_classes, p)) / np.sqrt(p)
    return X, y, coef, W


def softmax_csr(X, y, coef, W, compiled=True, n_threads=1, indices=None):
    G = np.full_like(W, 0.25)
    fn = kernels.get("softmax_csr", compiled=compiled)
    loss = fn(X.data, X.indices if indices is None else indices, X.indptr, y, coef, W, G,
              n_threads=n_threads)
    return loss, G


@compiled_only
@pytest.mark.parametrize("loop", ["fused", "passes"])
@pytest.mark.parametrize("n_classes", [1, 2, 3, 4, 5, 10, 17])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_csr_loops_agree_with_twin(softmax_loop, loop, n_classes, index_dtype, dtype):
    """Both loops of softmax CSR rows on the column-major copies, the two passes in chunks of
    a few rows, against the twin: empty rows, zero coefficients, K not a multiple of 4 (K = 1
    takes the row-major path whatever the setting)."""
    rng = np.random.default_rng([14, n_classes])
    X, y, coef, W = softmax_csr_case(rng, 150, 40, n_classes, dtype, index_dtype)
    softmax_loop(loop)
    loss_c, grad_c = softmax_csr(X, y, coef, W)
    loss_t, grad_t = softmax_csr(X, y, coef, W, compiled=False)
    assert loss_c == pytest.approx(loss_t, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(grad_c, grad_t, rtol=0, atol=1e-10 * np.abs(grad_t).max())


@compiled_only
@pytest.mark.parametrize("loop", ["fused", "passes"])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_softmax_csr_loops_count_bad_labels_and_indices_as_the_twin(softmax_loop, loop,
                                                                   index_dtype):
    """Labels that are not class numbers and column indices out of range, in rows that count
    (a bad label on a row with coefficient 0 does not), raise with the twin's counts."""
    rng = np.random.default_rng(15)
    X, y, coef, W = softmax_csr_case(rng, 120, 30, 5, index_dtype=index_dtype)
    softmax_loop(loop)
    bad_y = y.copy()
    bad_y[[1, 18, 33]] = [5.0, -1.0, 2.5]
    bad_y[3] = 9.0  # coefficient 0: skipped by both
    for compiled in (True, False):
        with pytest.raises(ValueError, match="^3 labels are not class numbers"):
            softmax_csr(X, bad_y, coef, W, compiled=compiled)
    indices = X.indices.copy()
    rows = [r for r in range(20, 120) if coef[r] != 0 and X.indptr[r + 1] - X.indptr[r] >= 2]
    indices[X.indptr[rows[0]]] = 30
    indices[X.indptr[rows[1]] + 1] = -1
    for compiled in (True, False):
        with pytest.raises(ValueError, match="^2 column indices are outside"):
            softmax_csr(X, y, coef, W, compiled=compiled, indices=indices)


@compiled_only
@pytest.mark.parametrize("n_classes", [2, 3, 4, 5, 10, 17, 33])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_softmax_csr_two_passes_give_the_fused_bits(softmax_loop, n_classes, index_dtype, dtype,
                                                     n_threads):
    """The two-pass loop returns the fused loop's loss and gradient bit for bit, in chunks of
    one row, of a few rows or of the whole block (so which of them runs may depend on the
    machine); the same counts of bad labels and indices, a bad label hiding its row's bad
    index in both."""
    rng = np.random.default_rng([16, n_classes, n_threads])
    X, y, coef, W = softmax_csr_case(rng, 211, 60, n_classes, dtype, index_dtype)
    softmax_loop("fused")
    want = softmax_csr(X, y, coef, W, n_threads=n_threads)
    bad_y = y.copy()
    bad_y[[0, 11, 12]] = [n_classes, -2.0, 0.5]
    indices = X.indices.copy()
    assert X.indptr[13] > X.indptr[12] and X.indptr[101] > X.indptr[100] and coef[100] != 0
    indices[X.indptr[12]] = 60  # hidden by the bad label of row 12
    indices[X.indptr[100]] = 61
    errors = []
    for args in ((bad_y, X.indices), (y, indices), (bad_y, indices)):
        with pytest.raises(ValueError) as err:
            softmax_csr(X, args[0], coef, W, n_threads=n_threads, indices=args[1])
        errors.append(str(err.value))
    for chunk_kib in (0, 1, linear_max()):
        softmax_loop("passes", chunk_kib)
        loss, grad = softmax_csr(X, y, coef, W, n_threads=n_threads)
        assert loss == want[0]
        np.testing.assert_array_equal(grad, want[1])
        for args, message in zip(((bad_y, X.indices), (y, indices), (bad_y, indices)), errors,
                                 strict=True):
            with pytest.raises(ValueError) as err:
                softmax_csr(X, args[0], coef, W, n_threads=n_threads, indices=args[1])
            assert str(err.value) == message


def linear_max() -> int:
    return kernels._linear.TUNING_MAX


@compiled_only
@pytest.mark.parametrize("stem", STEMS)
def test_csr_row_slice_without_copy(stem):
    """indptr of a row range of a larger matrix does not start at 0."""
    rng = np.random.default_rng(3)
    X = csr_block(120, 40, rng)
    y = make_labels(stem, 120, rng)
    coef = np.ones(120)
    w = make_params(stem, 40, rng)
    lo, hi = 37, 91
    full = X[lo:hi]
    for compiled in (True, False):
        grad_view = np.zeros_like(w)
        fn = kernels.get(f"{stem}_csr", compiled=compiled)
        loss_view = fn(X.data, X.indices, X.indptr[lo:hi + 1], y[lo:hi], coef[lo:hi], w,
                       grad_view)
        loss_copy, grad_copy = run(stem, "csr", full, y[lo:hi], coef[lo:hi], w, compiled)
        assert loss_view == pytest.approx(loss_copy, rel=1e-12)
        np.testing.assert_allclose(grad_view, grad_copy - 0.25, atol=1e-12)


@compiled_only
@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_threads_agree(stem, layout):
    rng = np.random.default_rng(4)
    n, p = 333, 25
    X = dense_block(n, p, rng) if layout == "dense" else csr_block(n, p, rng)
    y = make_labels(stem, n, rng)
    coef = rng.random(n)
    w = make_params(stem, p, rng)
    one = run(stem, layout, X, y, coef, w, True, n_threads=1)
    for n_threads in (2, 3, 1000):
        many = run(stem, layout, X, y, coef, w, True, n_threads=n_threads)
        assert many[0] == pytest.approx(one[0], rel=1e-12)
        np.testing.assert_allclose(many[1], one[1], rtol=1e-12, atol=1e-12)


@compiled_only
@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_huge_margins_stay_finite(stem, layout):
    """Margins of +-1e6 (exp would overflow at 710): finite loss and gradient, twin agrees."""
    rng = np.random.default_rng(5)
    n, p = 64, 12
    X = dense_block(n, p, rng) if layout == "dense" else csr_block(n, p, rng, density=0.5)
    y = make_labels(stem, n, rng)
    coef = np.ones(n)
    w = make_params(stem, p, rng, scale=1e6)
    loss_c, grad_c = run(stem, layout, X, y, coef, w, True)
    loss_t, grad_t = run(stem, layout, X, y, coef, w, False)
    assert np.isfinite(loss_c) and np.all(np.isfinite(grad_c))
    assert loss_c == pytest.approx(loss_t, rel=1e-9)
    np.testing.assert_allclose(grad_c, grad_t, rtol=1e-9, atol=1e-9 * np.max(np.abs(grad_t)))
    if stem != "least_squares":
        assert loss_c > 1e5  # the misclassified rows' loss grows linearly, not as inf


@compiled_only
def test_logistic_extreme_margins_exact():
    """log(1 + exp(-m)) at m = -+1000: 1000 and exp(-1000) (not 0 * inf)."""
    X = np.array([[1.0], [1.0]])
    y = np.array([1.0, -1.0])
    w = np.array([-1000.0])
    grad = np.zeros(1)
    loss = kernels.get("logistic_dense", compiled=True)(X, y, np.array([1.0, 0.0]), w, grad)
    assert loss == pytest.approx(1000.0)
    assert grad[0] == pytest.approx(-1.0)
    grad[:] = 0.0
    loss = kernels.get("logistic_dense", compiled=True)(X, y, np.array([0.0, 1.0]), w, grad)
    assert loss == pytest.approx(0.0, abs=1e-300)
    assert np.isfinite(grad[0]) and grad[0] >= 0.0


@compiled_only
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_logistic_vector_math_matches_libm_row_by_row(layout):
    """The kernels evaluate exp and log1p for four logistic rows at a time (rowops.h
    gd_logistic4): each group of four rows, margins from -800 to 800 (through exp's
    subnormal range near -745) and 0, within 1e-14 of numpy's libm, loss and gradient."""
    margins = np.concatenate([np.linspace(-800.0, 800.0, 4001), [0.0, -745.0, -740.0, 709.5]])
    margins = margins[: margins.size // 4 * 4]
    y = np.where(np.arange(margins.size) % 3 == 0, -1.0, 1.0)
    z = -y * margins
    loss_rows = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    deriv_rows = -y * np.where(z > 0, 1.0, np.exp(-np.abs(z))) / (1.0 + np.exp(-np.abs(z)))
    fn = kernels.get(f"logistic_{layout}", compiled=True)
    for k in range(0, margins.size, 4):
        X = margins[k:k + 4, None].copy()  # one column, w = 1: the margins themselves
        grad = np.zeros(1)
        if layout == "dense":
            loss = fn(X, y[k:k + 4], np.ones(4), np.ones(1), grad)
        else:
            Xs = sp.csr_matrix(X)
            Xs.eliminate_zeros()
            loss = fn(Xs.data, Xs.indices, Xs.indptr, y[k:k + 4], np.ones(4), np.ones(1),
                      grad)
        want = loss_rows[k:k + 4].sum()
        assert loss == pytest.approx(want, rel=1e-14, abs=1e-300), margins[k:k + 4]
        want_g = (deriv_rows[k:k + 4] * margins[k:k + 4]).sum()
        assert grad[0] == pytest.approx(want_g, rel=1e-13,
                                        abs=1e-14 * np.abs(margins[k:k + 4]).max()), k


@compiled_only
def test_logistic_vector_math_keeps_nan():
    """A NaN margin in a group of four gives a NaN loss, as libm would; no crash."""
    X = np.array([[1.0], [np.nan], [2.0], [3.0]])
    grad = np.zeros(1)
    loss = kernels.get("logistic_dense", compiled=True)(X, np.ones(4), np.ones(4), np.ones(1),
                                                        grad)
    assert np.isnan(loss)


# ----------------------------------------------------------------------------- gradients


def loss_only(stem, X, y, coef, w, compiled):
    return run(stem, "dense", X, y, coef, w, compiled)[0]


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=compiled_only), False])
@pytest.mark.parametrize("stem", STEMS)
def test_gradient_matches_finite_differences(stem, compiled):
    rng = np.random.default_rng(6)
    n, p = 30, 6
    X = dense_block(n, p, rng)
    y = make_labels(stem, n, rng)
    coef = rng.random(n) + 0.5
    w = make_params(stem, p, rng, scale=2.0)
    _, grad = run(stem, "dense", X, y, coef, w, compiled)
    grad -= 0.25
    h = 1e-6
    numeric = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        wp, wm = w.copy(), w.copy()
        wp[idx] += h
        wm[idx] -= h
        numeric[idx] = (loss_only(stem, X, y, coef, wp, compiled)
                        - loss_only(stem, X, y, coef, wm, compiled)) / (2 * h)
    # hinge: no row sits within h of its kink on this data, so the subgradient is the gradient
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=compiled_only), False])
def test_hinge_subgradient_is_zero_at_the_kink(compiled):
    X = np.array([[2.0, 0.0]])
    w = np.array([0.5, 3.0])  # y x.w = 1 exactly
    for y in (1.0, -1.0):
        grad = np.zeros(2)
        loss = kernels.get("hinge_dense", compiled=compiled)(X, np.array([y]), np.ones(1),
                                                             y * w, grad)
        assert loss == 0.0
        np.testing.assert_array_equal(grad, 0.0)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=compiled_only), False])
def test_bad_inputs_raise(compiled):
    rng = np.random.default_rng(7)
    X = dense_block(10, 4, rng)
    y = np.ones(10)
    coef = np.ones(10)
    w = np.zeros(4)
    grad = np.zeros(4)
    get = lambda name: kernels.get(name, compiled=compiled)  # noqa: E731
    with pytest.raises(ValueError, match="one per row"):
        get("logistic_dense")(X, y[:9], coef, w, grad)
    with pytest.raises(ValueError, match="one per column"):
        get("logistic_dense")(X, y, coef, np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="class numbers"):
        get("softmax_dense")(X, np.full(10, 3.0), coef, np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="class numbers"):
        get("softmax_dense")(X, np.full(10, 0.5), coef, np.zeros((3, 4)), np.zeros((3, 4)))
    S = csr_block(10, 4, rng, density=0.5)
    for name in ("least_squares_csr", "logistic_csr"):  # row by row, and groups of four
        with pytest.raises(ValueError, match="outside"):
            get(name)(S.data, S.indices, S.indptr, y, coef, np.zeros(3), np.zeros(3))
    bad = S.indptr.copy()
    bad[3], bad[4] = bad[4] + 1, bad[3]
    with pytest.raises(ValueError, match="indptr"):
        get("least_squares_csr")(S.data, S.indices, bad, y, coef, w, grad)
    if compiled:
        with pytest.raises(ValueError, match="n_threads"):
            get("logistic_dense")(X, y, coef, w, grad, n_threads=0)


def test_get_knows_every_kernel():
    assert len(kernels.KERNEL_NAMES) == 10 + len(kernels.MLP_KERNELS)
    for name in kernels.KERNEL_NAMES:
        assert callable(kernels.get(name, compiled=False))
        if kernels.COMPILED:
            assert kernels.get(name) is kernels.get(name, compiled=True)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernels.get("logistic")


# ----------------------------------------------------------------------------- Hogwild


@compiled_only
@pytest.mark.parametrize("objective", ["logistic", "least-squares", "hinge", "softmax"])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_hogwild_one_thread_matches_twin(objective, layout):
    rng = np.random.default_rng(8)
    n, p = 50, 8
    stem = kernels.OBJECTIVES[objective]
    y = make_labels(stem, n, rng)
    n_classes = K if objective == "softmax" else 0
    size = (K if objective == "softmax" else 1) * p
    X = dense_block(n, p, rng, dtype=np.float32) if layout == "dense" else csr_block(n, p, rng)
    w0 = 0.1 * rng.standard_normal(size)
    args = (X,) if layout == "dense" else (X.data, X.indices, X.indptr)
    out = []
    for compiled in (True, False):
        w = w0.copy()
        count = kernels.get(f"hogwild_{layout}", compiled=compiled)(
            *args, y, w, objective, 0.05, 200, 11, n_threads=1, l2=0.01, lr_decay=0.02,
            step_offset=3, n_classes=n_classes)
        assert count == 200
        out.append(w)
    assert not np.allclose(out[0], w0)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-9, atol=1e-12)


def test_hogwild_rows_are_seeded_and_uniform():
    rows = reference.hogwild_rows(seed=5, thread=0, n_rows=10, n_steps=5000)
    assert rows.min() == 0 and rows.max() == 9
    counts = np.bincount(rows, minlength=10)
    assert counts.min() > 400  # uniform: 500 expected each
    np.testing.assert_array_equal(rows, reference.hogwild_rows(5, 0, 10, 5000))
    assert not np.array_equal(rows, reference.hogwild_rows(5, 1, 10, 5000))


def ridge_problem(rng, n=400, p=10):
    X = rng.standard_normal((n, p))
    y = X @ rng.standard_normal(p) + 0.5 * rng.standard_normal(n)
    l2 = 0.1
    w_star = np.linalg.solve(X.T @ X / n + l2 * np.eye(p), X.T @ y / n)

    def f(w):
        r = X @ w - y
        return 0.5 * np.mean(r * r) + 0.5 * l2 * w @ w

    return X, y, l2, w_star, f


@compiled_only
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_hogwild_two_threads_reach_the_optimum(layout):
    """Least squares with l2 = 0.1 (strongly convex): within 1e-3 relative of f*."""
    rng = np.random.default_rng(9)
    X, y, l2, w_star, f = ridge_problem(rng)
    mu = l2 + np.linalg.eigvalsh(X.T @ X / X.shape[0]).min()
    w = np.zeros(X.shape[1])
    Xk = X if layout == "dense" else sp.csr_matrix(X)
    args = (Xk,) if layout == "dense" else (Xk.data, Xk.indices, Xk.indptr)
    # step 1 / (mu (k + k0)): the classic schedule for strongly convex SGD
    k0 = 50.0
    count = kernels.get(f"hogwild_{layout}", compiled=True)(
        *args, y, w, "least-squares", 1.0 / (mu * k0), 20000, 1, n_threads=2, l2=l2,
        lr_decay=1.0 / k0)
    assert count == 40000
    f_star = f(w_star)
    assert (f(w) - f_star) / f_star < 1e-3
