"""Pure parts of the asynchronous modes: staleness accounting, minibatches, sparse steps,
update messages and the options (no MPI)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gdcode import kernels, models, problem
from gdcode.errors import OptionError
from gdcode.options import RunOptions
from gdcode.runtime import hogwild
from gdcode.runtime import protocol as pr
from gdcode.sgd import BatchSampler, Staleness, column_shares, dense_gradient, restrict_columns, sparse_step


def test_staleness_accounting():
    st = Staleness(max_staleness=1, n_workers=2)
    assert st.admit(0, 0)  # version 0 -> 1
    assert st.admit(1, 0)  # staleness 1: kept, version 2
    assert not st.admit(0, 0)  # staleness 2 > 1: dropped, version stays 2
    assert st.admit(0, 2)
    assert not st.admit(1, 1)  # staleness 2
    assert st.version == 3
    assert st.applied.tolist() == [2, 1] and st.dropped.tolist() == [1, 1]
    assert st.max_seen == 2
    assert st.applied.sum() == st.version  # every applied update is one version


def test_staleness_without_limit_and_zero_limit():
    keep = Staleness(None, 1)
    assert all(keep.admit(0, 0) for _ in range(10))
    assert keep.max_seen == 9 and keep.dropped.sum() == 0
    strict = Staleness(0, 1)
    assert strict.admit(0, 0) and not strict.admit(0, 0) and strict.admit(0, 1)
    with pytest.raises(ValueError, match="before version"):
        strict.admit(0, 5)
    with pytest.raises(ValueError):
        Staleness(-1, 1)


def test_batch_sampler_covers_each_epoch_once_and_is_seeded():
    s = BatchSampler(10, 5, np.random.default_rng(3))
    batches = [s.next() for _ in range(4)]  # two epochs of two batches
    assert all(b.size == 5 and np.all(np.diff(b) > 0) for b in batches)
    assert sorted(np.concatenate(batches[:2])) == list(range(10))
    assert sorted(np.concatenate(batches[2:])) == list(range(10))
    odd = BatchSampler(10, 4, np.random.default_rng(3))  # batches straddle epochs
    assert np.array_equal(np.bincount(np.concatenate([odd.next() for _ in range(5)]), minlength=10), [2] * 10)
    again = BatchSampler(10, 5, np.random.default_rng(3))
    assert all(np.array_equal(a, again.next()) for a in batches)
    assert BatchSampler(10, 0, np.random.default_rng(0)).next() is None
    assert BatchSampler(10, 12, np.random.default_rng(0)).next() is None


def _csr(seed=0, n=30, p=12, density=0.25):
    X = sp.random(n, p, density=density, format="csr", random_state=seed)
    X.data = X.data * 2 - 1
    y = np.where(np.random.default_rng(seed).random(n) < 0.5, -1.0, 1.0)
    return X, y


def test_restrict_columns_keeps_the_products():
    X, _ = _csr()
    rows = X[[1, 4, 7]]
    cols, Xs = restrict_columns(rows)
    w = np.random.default_rng(0).standard_normal(X.shape[1])
    np.testing.assert_allclose(Xs @ w[cols], rows @ w, atol=1e-14)
    assert set(cols) == set(rows.indices)


@pytest.mark.parametrize("name", ["logistic", "least-squares"])
def test_sparse_full_batch_step_is_the_full_gradient_step(name):
    """On the whole partition the split regulariser sums to lambda w on every used column."""
    model = models.get(name, compiled=False)
    X, y = _csr(seed=1)
    w = np.random.default_rng(1).standard_normal(X.shape[1])
    l2, lr = 0.05, 0.3
    cols, delta, loss = sparse_step(model, X, y, w, l2, column_shares(X), lr)
    full = model.full_gradient(X, y, w, l2)
    used = np.flatnonzero(np.bincount(X.indices, minlength=X.shape[1]))
    np.testing.assert_array_equal(cols, used)
    np.testing.assert_allclose(delta, -lr * full[cols], atol=1e-13)
    g = np.empty_like(w)
    assert loss == pytest.approx(dense_gradient(model, X, y, w, 0.0, g))


def test_sparse_minibatch_step_touches_only_its_columns_and_is_unbiased():
    model = models.get("least-squares", compiled=False)
    X, y = _csr(seed=2, n=8, p=20, density=0.2)
    w = np.random.default_rng(2).standard_normal(20)
    l2, lr, share = 0.1, 1.0, column_shares(X)
    mean = np.zeros(20)
    pairs = [(a, b) for a in range(8) for b in range(a + 1, 8)]  # every batch of two rows
    for a, b in pairs:
        cols, delta, _ = sparse_step(model, X[[a, b]], y[[a, b]], w, l2, share, lr)
        assert set(cols) == set(X[[a, b]].indices)
        mean[cols] += delta / len(pairs)
    used = np.bincount(X.indices, minlength=20) > 0
    np.testing.assert_allclose(mean[used], -lr * model.full_gradient(X, y, w, l2)[used], atol=1e-12)


def test_dense_gradient_in_blocks_matches_full_gradient():
    model = models.get("logistic", compiled=False)
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((50, 6)), np.where(rng.random(50) < 0.5, -1.0, 1.0)
    w = rng.standard_normal(6)
    g = np.empty(6)
    polls = []
    dense_gradient(model, X, y, w, 0.01, g, blocks=16, poll=lambda: polls.append(1))
    np.testing.assert_allclose(g, model.full_gradient(X, y, w, 0.01), atol=1e-14)
    assert len(polls) == 3  # between the 4 blocks


def test_update_messages_dense_and_sparse_round_trip():
    d = 10
    buf = np.empty(hogwild.update_size(d, sparse=True))
    cols, vals = np.array([1, 7]), np.array([0.5, -2.0])
    msg = hogwild.pack_update(buf, 3, 0.1, True, 41, d, cols, vals)
    assert msg.size == pr.UPDATE.size(4)  # indices and values: shorter than d
    assert pr.header(msg) == (pr.Kind.UPDATE, 3, 0.1, 1) and pr.UPDATE.get(msg, "base") == 41
    w = np.ones(d)
    hogwild.apply_update(w, msg)
    expected = np.ones(d)
    expected[cols] += vals
    np.testing.assert_array_equal(w, expected)
    many = np.arange(8)  # 2 * 8 >= 10: dense is shorter
    msg = hogwild.pack_update(buf, 4, 0.0, False, 0, d, many, np.ones(8))
    assert msg.size == pr.UPDATE.size(d) and pr.UPDATE.get(msg, "nnz") == -1
    w = np.zeros(d)
    hogwild.apply_update(w, msg)
    np.testing.assert_array_equal(w, [1.0] * 8 + [0.0, 0.0])
    dense = hogwild.pack_update(np.empty(hogwild.update_size(d, sparse=False)), 5, 0.0, False, 2, d, None,
                                np.arange(d, dtype=float))
    w = np.zeros(d)
    hogwild.apply_update(w, dense)
    np.testing.assert_array_equal(w, np.arange(d))


def _hogwild_built() -> bool:
    return bool(kernels.COMPILED and kernels.OPENMP and "hogwild_dense" in kernels.KERNEL_NAMES)


def test_threads_need_the_compiled_hogwild_kernel(tmp_path):
    options = RunOptions(out=str(tmp_path), mode="hogwild", threads=2)
    if _hogwild_built():
        assert problem.check(options).options.threads == 2
    else:
        with pytest.raises(OptionError, match="compiled Hogwild kernel built with OpenMP"):
            problem.check(options)


@pytest.mark.skipif(not _hogwild_built(), reason="this build has no compiled Hogwild kernel with OpenMP")
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_kernel_step_is_b_single_row_steps_at_lr_over_b(layout):
    """One worker step with --threads: B single-row steps at lr/B, as the kernel's numpy twin makes them."""
    from types import SimpleNamespace

    rng = np.random.default_rng(7)
    if layout == "csr":
        X, y = _csr(seed=7, n=40, p=15)
    else:
        X, y = rng.standard_normal((40, 15)), np.where(rng.random(40) < 0.5, -1.0, 1.0)
    rows = SimpleNamespace(X=X, y=y, sparse=layout == "csr", batch_size=12)
    w = rng.standard_normal(15) * 0.1
    compiled, twin = models.get("logistic", compiled=True), models.get("logistic", compiled=False)
    got = hogwild._kernel_step(compiled, rows, w, 0.6, 1, 0, 2, 5, 0.01)
    seed = int(np.random.default_rng([0, 0x4067, 2, 5]).integers(0, 2**63 - 1))
    ref = w.copy()
    twin.hogwild(X, y, ref, 0.6 / 12, 12, seed, n_threads=1, l2=0.01)
    np.testing.assert_allclose(got, ref - w, atol=1e-12)
    two = hogwild._kernel_step(compiled, rows, w, 0.6, 2, 0, 2, 5, 0.01)  # 2 threads of 6 steps
    assert np.all(np.isfinite(two)) and np.any(two != 0)
    assert np.linalg.norm(two) < 3 * np.linalg.norm(ref - w)


def test_sparse_step_of_a_softmax_matrix_touches_each_class_row():
    model = models.get("softmax", compiled=False)
    X, _ = _csr(seed=3, n=12, p=10, density=0.3)
    y = np.arange(12) % 3.0
    K, p = 3, 10
    w = np.random.default_rng(3).standard_normal(K * p)
    share = column_shares(X)
    index, delta, _ = sparse_step(model, X, y, w, 0.05, share, 0.5)
    used = np.flatnonzero(np.bincount(X.indices, minlength=p))
    assert sorted(index) == sorted((k * p + j) for k in range(K) for j in used)
    full = model.full_gradient(X, y, w, 0.05)  # the full batch: the split L2 term is lambda w
    np.testing.assert_allclose(delta, -0.5 * full[index], atol=1e-12)


def test_a_wait_yields_its_core_first_then_sleeps_with_back_off(monkeypatch):
    """No sleep in the first YIELD_WINDOW seconds of a wait (sched_yield), then sleeps that double
    from BACKOFF_START, capped at EAGER_CAP inside the eager window and at BACKOFF_CAP after it."""
    from types import SimpleNamespace

    from gdcode.runtime import transport as tp

    clock = SimpleNamespace(now=0.0, sleeps=[], yields=0)

    def sleep(seconds):
        clock.sleeps.append(seconds)
        clock.now += seconds

    def sched_yield():
        clock.yields += 1
        clock.now += 5e-5  # another rank ran meanwhile

    monkeypatch.setattr(tp, "time", SimpleNamespace(perf_counter=lambda: clock.now, sleep=sleep))
    monkeypatch.setattr(tp, "os", SimpleNamespace(sched_yield=sched_yield))
    backoff = tp.Backoff()
    while clock.now < 2 * tp.EAGER_WINDOW:
        backoff.sleep()
    assert clock.yields == round(tp.YIELD_WINDOW / 5e-5)
    assert clock.sleeps[:4] == [tp.BACKOFF_START, 2 * tp.BACKOFF_START, 4 * tp.BACKOFF_START, 8 * tp.BACKOFF_START]
    assert max(clock.sleeps) == tp.BACKOFF_CAP and tp.EAGER_CAP in clock.sleeps
    backoff.reset()
    yields = clock.yields
    backoff.sleep()
    assert clock.yields == yields + 1  # a reset starts with yielding again
