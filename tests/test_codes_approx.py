"""Approximate codes: stopping rules, and mean/variance of the decoded estimate (seeded Monte Carlo)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gdcode import codes

DRAWS = 20_000


def partition_weights(code, n_draws: int, seed: int) -> np.ndarray:
    """``a @ B`` for ``n_draws`` uniformly random arrival orders, shape ``(n_draws, n_partitions)``."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_draws, code.n_partitions))
    for k in range(n_draws):
        out[k] = code.combined(code.decode(list(rng.permutation(code.n_workers))))
    return out


def check_moments(w: np.ndarray, mean: np.ndarray, cov: np.ndarray, seed: int) -> None:
    """Sample mean and variance of ``w`` (and of a random projection) against the formulas."""
    n = w.shape[0]
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(w.mean(axis=0) - mean) <= 5 * se + 1e-12)
    # the decoded gradient of a fixed set of scalar partition gradients
    gamma = np.random.default_rng(seed).standard_normal(w.shape[1])
    est = w @ gamma
    assert est.mean() == pytest.approx(mean @ gamma, abs=5 * math.sqrt(gamma @ cov @ gamma / n))
    assert est.var(ddof=1) == pytest.approx(gamma @ cov @ gamma, rel=0.05)
    np.testing.assert_allclose(w.var(axis=0, ddof=1), np.diag(cov), rtol=0.06)


# --- ErasureHead ----------------------------------------------------------------------


def test_approx_waits_for_collect_then_sums_one_reply_per_covered_group():
    code = codes.build("approx", n_workers=12, n_stragglers=2, collect=3)  # 4 groups of 3
    assert not code.exact
    assert code.decode([0]) is None
    assert code.decode([0, 1]) is None
    a = code.decode([0, 1, 4])  # collect reached: groups 0 and 1 covered
    np.testing.assert_array_equal(a, [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(code.combined(a), [1] * 6 + [0] * 6)
    np.testing.assert_array_equal(code.decode([0, 1, 4, 9, 10]), a)


def test_approx_stops_early_at_full_coverage():
    code = codes.build("approx", n_workers=6, n_stragglers=1, collect=5)  # 3 groups of 2
    assert code.decode([0, 2]) is None
    a = code.decode([0, 2, 5])  # every group covered after 3 < collect replies
    np.testing.assert_array_equal(a, [1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(code.combined(a), 1.0)


def test_approx_rescale_multiplies_by_the_inverse_covered_fraction():
    code = codes.build("approx", n_workers=12, n_stragglers=2, collect=3, rescale=True)
    np.testing.assert_array_equal(code.decode([0, 1, 4])[[0, 4]], [2.0, 2.0])  # 4 groups / 2
    np.testing.assert_array_equal(code.decode([0, 3, 7])[[0, 3, 7]], [4 / 3] * 3)


def test_approx_mean_without_rescale_is_the_covered_probability():
    W, S, r = 12, 2, 3
    code = codes.build("approx", n_workers=W, n_stragglers=S, collect=r)
    # exact expectation over every ordered first-r arrivals
    exact = np.mean([code.combined(code.decode(list(p)))
                     for p in itertools.permutations(range(W), r)], axis=0)
    covered = 1 - math.comb(W - (S + 1), r) / math.comb(W, r)
    np.testing.assert_allclose(exact, covered)
    w = partition_weights(code, 4000, seed=1)
    np.testing.assert_allclose(w.mean(axis=0), covered, atol=5 * math.sqrt(covered / 4000))


def test_approx_rescale_is_unbiased_under_uniformly_random_stragglers():
    W, S, r = 12, 2, 3
    code = codes.build("approx", n_workers=W, n_stragglers=S, collect=r, rescale=True)
    exact = np.mean([code.combined(code.decode(list(p)))
                     for p in itertools.permutations(range(W), r)], axis=0)
    np.testing.assert_allclose(exact, 1.0)  # every ordered set of first arrivals: unbiased
    w = partition_weights(code, DRAWS, seed=2)  # seeded Monte Carlo, collect 5 of 12
    w5 = partition_weights(codes.build("approx", n_workers=W, n_stragglers=S, collect=5,
                                       rescale=True), DRAWS, seed=3)
    for sample in (w, w5):
        se = sample.std(axis=0, ddof=1) / math.sqrt(DRAWS)
        assert np.all(np.abs(sample.mean(axis=0) - 1.0) <= 5 * se)
    plain = partition_weights(codes.build("approx", n_workers=W, n_stragglers=S, collect=r),
                              DRAWS, seed=2)
    assert plain.mean() < 0.7  # without rescaling the estimate is shrunk


# --- expander -------------------------------------------------------------------------


def test_expander_is_a_regular_graph_code():
    code = codes.build("expander", n_workers=12, n_stragglers=3, degree=4, seed=2)
    A = code.adjacency
    assert (A == A.T).all() and not A.diagonal().any()
    assert (A.sum(axis=0) == 4).all() and (A.sum(axis=1) == 4).all()
    np.testing.assert_allclose(code.B.sum(axis=1), 1.0)
    np.testing.assert_allclose(code.load(), 4 / 12)
    assert 0 < code.lambda2 < 4
    assert code.decode(list(range(8))) is None  # collect defaults to W - S = 9
    assert code.decode(list(range(9))) is not None


def test_expander_fixed_decoder_mean_and_variance_match_the_formula():
    code = codes.build("expander", n_workers=10, n_stragglers=3, degree=3 + 1, seed=4,
                       decoder="fixed")
    mean, cov = code.weight_moments()
    np.testing.assert_allclose(mean, 1.0)  # unbiased
    check_moments(partition_weights(code, DRAWS, seed=5), mean, cov, seed=6)


def test_expander_least_squares_beats_fixed_weights_within_the_mixing_bound():
    W, S = 12, 3
    lsq = codes.build("expander", n_workers=W, n_stragglers=S, degree=4, seed=1)
    fixed = codes.build("expander", n_workers=W, n_stragglers=S, degree=4, seed=1, decoder="fixed")
    bound = lsq.error_bound()
    assert bound < S * W / (W - S)  # better than dropping the stragglers' partitions
    for stragglers in itertools.combinations(range(W), S):
        alive = [i for i in range(W) if i not in stragglers]
        e_lsq = np.sum((lsq.combined(lsq.decode(alive)) - 1) ** 2)
        e_fixed = np.sum((fixed.combined(fixed.decode(alive)) - 1) ** 2)
        assert e_lsq <= e_fixed + 1e-12 and e_fixed <= bound + 1e-12


# --- stochastic gradient coding -------------------------------------------------------


def test_sgc_assignment_is_regular_and_pair_wise_balanced():
    fano = codes.build("sgc", n_workers=7, n_stragglers=2, degree=3)
    assert fano.pair_overlap_range == (1, 1)  # a perfect design: the Fano plane
    for W, d in [(7, 3), (10, 3), (12, 4)]:
        code = codes.build("sgc", n_workers=W, n_stragglers=1, degree=d, seed=3)
        assert set(code.B.sum(axis=0)) == {d} and set(code.B.sum(axis=1)) == {d}
        lo, hi = code.pair_overlap_range
        mean = d * (d - 1) / (W - 1)
        assert lo <= mean <= hi and hi - lo <= 2


def test_sgc_weights_and_stopping_rule():
    code = codes.build("sgc", n_workers=10, n_stragglers=3, degree=3)
    assert code.p == pytest.approx(0.3) and code.collect == 7
    assert code.decode(list(range(6))) is None
    a = code.decode([9, 8, 7, 6, 5, 4, 3, 2])
    np.testing.assert_allclose(a, [0, 0, 0] + [1 / (3 * 0.7)] * 7)


def test_sgc_is_unbiased_and_its_variance_matches_the_formula():
    code = codes.build("sgc", n_workers=10, n_stragglers=3, degree=3, seed=7)
    mean, cov = code.weight_moments()
    np.testing.assert_allclose(mean, 1.0)
    check_moments(partition_weights(code, DRAWS, seed=8), mean, cov, seed=9)


def test_sgc_independent_stragglers_formula():
    code = codes.build("sgc", n_workers=8, n_stragglers=2, degree=3, p=0.25, seed=1)
    mean, cov = code.weight_moments(independent=True)
    np.testing.assert_allclose(mean, 1.0)
    rng = np.random.default_rng(10)
    present = rng.random((DRAWS, 8)) >= 0.25  # each worker replies with probability 1 - p
    w = (present * code.weight) @ code.B
    check_moments(w, mean, cov, seed=11)


# --- batched coupon's collector -------------------------------------------------------


def test_bcc_decodes_at_coverage_with_one_copy_per_batch():
    code = codes.build("bcc", n_workers=9, n_stragglers=2, seed=3)  # 3 batches of 3 workers
    assert code.exact and code.n_partitions == 3
    assert sorted(np.bincount(code.batch_of).tolist()) == [3, 3, 3]
    np.testing.assert_allclose(code.load(), 1 / 3)
    batch = code.batch_of
    order = sorted(range(9), key=lambda i: (batch[i] == 2, i))  # batch 2 arrives last
    first_of_2 = next(k for k, i in enumerate(order) if batch[i] == 2)
    assert code.decode(order[:first_of_2]) is None
    a = code.decode(order[:first_of_2 + 1])
    np.testing.assert_array_equal(code.combined(a), 1.0)
    assert np.count_nonzero(a) == 3


def test_bcc_with_many_batches_is_not_exact():
    code = codes.build("bcc", n_workers=9, n_stragglers=2, batches=5)
    assert not code.exact and sorted(np.bincount(code.batch_of).tolist()) == [1, 2, 2, 2, 2]
    alone = int(np.flatnonzero(np.bincount(code.batch_of) == 1)[0])
    lonely = int(np.flatnonzero(code.batch_of == alone)[0])
    assert code.decode([i for i in range(9) if i != lonely]) is None
