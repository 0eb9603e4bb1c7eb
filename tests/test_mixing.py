"""Gossip mixing rules against their closed forms, peer selection and push-sum (no MPI)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdcode import mixing as mix
from gdcode.errors import ConfigError


def vectors(k, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(d) for _ in range(k)]


@pytest.mark.parametrize("kind, kwargs, expected", [
    ("constant", {"alpha": 0.3}, 0.3),
    ("clock", {"clock": 300.0, "clock_peer": 100.0}, 100.0 / 400.0),
    ("clock", {"clock": 0.0, "clock_peer": 50.0}, 1.0),
    ("loss", {"loss": 0.9, "loss_peer": 0.1}, 0.9),
    ("loss", {"loss": 0.2, "loss_peer": 0.6}, 0.25),
    ("clock", {"clock": 0.0, "clock_peer": 0.0}, 0.5),
    ("loss", {"loss": float("nan"), "loss_peer": 0.4}, 0.5),
])
def test_interpolation_factor_closed_forms(kind, kwargs, expected):
    assert mix.interpolation_factor(kind, **kwargs) == pytest.approx(expected)


def test_unknown_interpolation_is_a_config_error():
    with pytest.raises(ConfigError, match="--interpolation 'median'"):
        mix.interpolation_factor("median")


@pytest.mark.parametrize("kind", ["constant", "clock", "loss"])
def test_pairwise_mix_is_the_convex_combination(kind):
    x, xp = vectors(2)
    f = mix.interpolation_factor(kind, alpha=0.3, clock=10, clock_peer=30, loss=0.4, loss_peer=0.2)
    expected = f * xp + (1 - f) * x
    out = mix.pairwise_mix(x.copy(), xp, f)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-15)
    # a clock-weighted pair mixed both ways lands both on the clock-weighted average
    if kind == "clock":
        back = 1 - f  # the peer's factor, from its side: c / (c + c_peer)
        assert mix.interpolation_factor("clock", clock=30, clock_peer=10) == pytest.approx(back)


def test_elastic_mix_closed_form_for_fixed_partners():
    x, a, b, c = vectors(4)
    alpha = 0.2
    expected = x - alpha * ((x - a) + (x - b) + (x - c))
    np.testing.assert_allclose(mix.elastic_mix(x, [a, b, c], alpha), expected, atol=1e-15)
    np.testing.assert_array_equal(mix.elastic_mix(x, [], alpha), x)


def test_elastic_round_applied_one_exchange_at_a_time_equals_the_closed_form():
    """i chose j and k chose i: both terms, each with the values the pair swapped."""
    xi, xj, xk = vectors(3, seed=1)
    alpha = 0.25
    expected_i = mix.elastic_mix(xi, [xj, xk], alpha)
    got = xi.copy()
    mix.elastic_apply(got, xi, xj, alpha)  # i's exchange with its chosen peer j
    mix.elastic_apply(got, xi, xk, alpha)  # the exchange k started with i
    np.testing.assert_allclose(got, expected_i, atol=1e-15)
    np.testing.assert_allclose(mix.elastic_mix(xj, [xi], alpha), xj - alpha * (xj - xi), atol=1e-15)


def test_elastic_exchange_keeps_the_pairs_sum_even_after_local_steps():
    xi, xj = vectors(2, seed=2)
    sent_i, sent_j = xi.copy(), xj.copy()  # the values the pair swapped
    xi += 0.1  # i stepped before the answer came
    total = xi + xj
    mix.elastic_apply(xj, sent_j, sent_i, 0.4)
    mix.elastic_apply(xi, sent_i, sent_j, 0.4)
    np.testing.assert_allclose(xi + xj, total, atol=1e-14)


def test_push_sum_send_and_receive():
    x = np.array([2.0, 4.0])
    ps = mix.PushSum(x, 1.0)
    out, w = ps.send()
    assert w == 0.5 and ps.weight == 0.5
    np.testing.assert_array_equal(out, [2.0, 4.0])
    other = mix.PushSum(np.array([0.0, 0.0]), 1.0)
    other.receive(out, w)
    assert other.weight == 1.5
    np.testing.assert_allclose(other.x, [2.0 / 3.0, 4.0 / 3.0])


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.booleans()),
                                   min_size=1, max_size=60), st.integers(0, 2**31 - 1))
def test_push_sum_keeps_the_total_weight_and_the_weighted_sum(n, events, seed):
    """Random pushes, some delivered later: weight and sum of w_i x_i are conserved, in flight included."""
    rng = np.random.default_rng(seed)
    nodes = [mix.PushSum(rng.standard_normal(3), 1.0) for _ in range(n)]
    mass0 = sum(p.weight * p.x for p in nodes)
    in_flight = []
    for a, b, deliver_now in events:
        src, dst = a % n, b % n
        if src == dst:
            continue
        x, w = nodes[src].send()
        in_flight.append((dst, x, w))
        if deliver_now:
            for dst_, x_, w_ in in_flight:
                nodes[dst_].receive(x_, w_)
            in_flight = []
        weight = sum(p.weight for p in nodes) + sum(w for _, _, w in in_flight)
        assert weight == pytest.approx(n, abs=1e-12)
        mass = sum(p.weight * p.x for p in nodes) + sum(w * x for _, x, w in in_flight)
        np.testing.assert_allclose(mass, mass0, atol=1e-12)


def test_push_sum_gossip_reaches_the_average():
    rng = np.random.default_rng(5)
    n = 5
    xs = [rng.standard_normal(4) for _ in range(n)]
    target = np.mean(xs, axis=0)
    nodes = [mix.PushSum(x.copy(), 1.0) for x in xs]
    for _ in range(400):
        i = int(rng.integers(n))
        j = int(rng.choice([k for k in range(n) if k != i]))
        nodes[j].receive(*nodes[i].send())
    for p in nodes:
        np.testing.assert_allclose(p.x, target, atol=1e-6)
    np.testing.assert_allclose(mix.consensus([p.x for p in nodes], [p.weight for p in nodes]), target, atol=1e-12)


def test_consensus_plain_and_weighted():
    a, b = np.array([1.0, 0.0]), np.array([3.0, 2.0])
    np.testing.assert_allclose(mix.consensus([a, b]), [2.0, 1.0])
    np.testing.assert_allclose(mix.consensus([a, b], [3.0, 1.0]), [1.5, 0.5])


@pytest.mark.parametrize("kind", ["uniform", "flow"])
@pytest.mark.parametrize("n, me", [(2, 0), (2, 1), (5, 0), (5, 3), (8, 7)])
def test_peer_choice_never_picks_self(kind, n, me):
    sel = mix.PeerSelector(n, me, kind, np.random.default_rng([n, me]))
    picks = []
    for k in range(400):
        j = sel.pick()
        picks.append(j)
        (sel.timeout if k % 3 == 0 else sel.success)(j)
    assert me not in picks
    assert set(picks) == set(range(n)) - {me}
    assert sel.probabilities()[me] == 0.0


def test_uniform_choice_is_uniform():
    sel = mix.PeerSelector(4, 1, "uniform", np.random.default_rng(0))
    counts = np.bincount([sel.pick() for _ in range(6000)], minlength=4)
    assert counts[1] == 0
    np.testing.assert_allclose(counts[[0, 2, 3]] / 6000, 1 / 3, atol=0.03)


def test_flow_picks_a_slow_peer_less_but_never_excludes_it():
    sel = mix.PeerSelector(4, 0, "flow", np.random.default_rng(1))
    for _ in range(50):
        sel.timeout(2)  # peer 2 always times out
        sel.success(1)
        sel.success(3)
    p = sel.probabilities()
    assert p[2] == pytest.approx(mix.SCORE_FLOOR / (2 * mix.SCORE_CAP + mix.SCORE_FLOOR))
    assert 0 < p[2] < p[1] == p[3]
    counts = np.bincount([sel.pick() for _ in range(8000)], minlength=4)
    assert 0 < counts[2] < counts[1] / 5
    for _ in range(5):  # it answers again: its score climbs back
        sel.success(2)
    assert sel.probabilities()[2] == pytest.approx(1 / 3)


def test_selector_needs_two_workers():
    with pytest.raises(ConfigError, match="at least 2 workers"):
        mix.PeerSelector(1, 0, "uniform", np.random.default_rng(0))
    with pytest.raises(ConfigError, match="--peer-selection"):
        mix.PeerSelector(3, 0, "random", np.random.default_rng(0))
