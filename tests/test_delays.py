"""Delay models: pure functions of (seed, worker, iteration)."""

import numpy as np
import pytest

from gdcode import delays


def test_exp_is_reproducible_per_worker_and_iteration():
    a = delays.parse("exp:0.5", seed=1)
    b = delays.parse("exp:0.5", seed=1)
    assert a.draw(2, 7) == b.draw(2, 7)
    assert a.draw(2, 7) != a.draw(3, 7) and a.draw(2, 7) != a.draw(2, 8)
    # order of draws does not matter
    assert a.draw(0, 1) == delays.parse("exp:0.5", seed=1).draw(0, 1)


def test_exp_mean_and_load_scaling():
    model = delays.parse("exp:0.5", seed=0)
    draws = np.array([model.draw(w, t) for w in range(10) for t in range(1, 1001)])
    assert draws.mean() == pytest.approx(0.5, rel=0.05)
    scaled = delays.parse("exp:0.5", seed=0, scale_with_load=True)
    assert scaled.draw(1, 1, load=0.25) == pytest.approx(0.25 * model.draw(1, 1))


def test_none_is_zero():
    assert delays.parse("none").draw(0, 1) == 0.0


@pytest.mark.parametrize("spec", ["exp", "exp:", "exp:a", "exp:0", "exp:1,2", "gamma:1", ""])
def test_bad_specs(spec):
    with pytest.raises(ValueError):
        delays.parse(spec)


def test_shifted_exp_and_pareto_moments():
    se = delays.parse("shifted-exp:1,0.5", seed=2)
    d = np.array([se.draw(w, t) for w in range(5) for t in range(1, 2001)])
    assert d.min() >= 1.0 and d.mean() == pytest.approx(1.5, rel=0.03)
    pa = delays.parse("pareto:0.1,3", seed=2)
    d = np.array([pa.draw(w, t) for w in range(5) for t in range(1, 2001)])
    assert d.min() >= 0.1 and d.mean() == pytest.approx(0.1 * 3 / 2, rel=0.05)  # mean = scale*a/(a-1)
    assert np.mean(d > 0.2) == pytest.approx(0.5 ** 3, abs=0.01)


def test_persistent_slows_the_same_workers_by_factor():
    p = delays.parse("persistent:2,5,0.01", seed=4, n_workers=6)
    slow = p.slow_workers(6)
    assert len(slow) == 2 and slow == delays.parse("persistent:2,5", seed=4, n_workers=6).slow_workers(6)
    for w in range(6):
        pause = p.draw(w, 3, compute=0.002)
        total = pause + 0.002
        expected = 5 * (0.002 + 0.01) if w in slow else 0.002 + 0.01
        assert total == pytest.approx(expected)
    assert p.describe()["slow_workers"] == [w + 1 for w in slow]
    with pytest.raises(ValueError, match="only 3"):
        delays.parse("persistent:4,2", n_workers=3)


def test_trace_replay_and_wraparound(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("worker,iteration,seconds\n1,1,0.1\n1,2,0.2\n2,1,0.5\n2,2,0.6\n")
    tr = delays.parse(f"trace:{f}", n_workers=2)
    assert [tr.draw(0, 1), tr.draw(0, 2), tr.draw(1, 2)] == [0.1, 0.2, 0.6]
    assert tr.draw(0, 3) == 0.1 and tr.draw(1, 4) == 0.6
    with pytest.raises(ValueError, match="no rows for worker"):
        delays.parse(f"trace:{f}", n_workers=3)


@pytest.mark.parametrize("text, message", [("", "empty"), ("1,2\n", "line 1"), ("1,x,0.1\n", "line 1"),
                                           ("1,1,0.1\n0,1,0.1\n", "line 2")])
def test_bad_traces(tmp_path, text, message):
    f = tmp_path / "t.csv"
    f.write_text(text)
    with pytest.raises(ValueError, match=message):
        delays.parse(f"trace:{f}")


def test_missing_trace_file():
    with pytest.raises(ValueError, match="cannot read"):
        delays.parse("trace:no/such.csv")


@pytest.mark.parametrize("spec", ["shifted-exp:1", "shifted-exp:-1,1", "pareto:1,0", "persistent:1.5,2",
                                  "persistent:1,0.5", "persistent:1", "trace:", "weibull:1"])
def test_more_bad_specs(spec):
    with pytest.raises(ValueError):
        delays.parse(spec, n_workers=4)


def test_each_model_writes_its_own_form_and_reads_its_args():
    assert delays.forms() == ["correlated:MEAN,CV,RHO[,GROUP]", "exp:MEAN",
                              "markov:MEAN,FACTOR,P_ENTER,P_LEAVE[,SHIFT]", "none", "pareto:SCALE,SHAPE",
                              "persistent:K,FACTOR[,BASE]", "shifted-exp:SHIFT,MEAN", "trace:FILE"]
    p = delays.parse("persistent:2.0,5", n_workers=4)  # a whole number written as a float is fine
    assert (p.k, p.factor, p.base, p.spec) == (2, 5.0, 0.0, "persistent:2,5")
    assert delays.parse("shifted-exp: 0.5 ,2").spec == "shifted-exp:0.5,2"
    for spec in ("exp:nan", "exp:inf", "shifted-exp:0,-inf", "pareto:1,nan", "persistent:1,2,inf", "none:1"):
        with pytest.raises(ValueError):
            delays.parse(spec, n_workers=4)
    model = delays.Exponential.from_args("0.25", seed=3, scale_with_load=True, n_workers=5)
    assert (model.mean, model.seed, model.scale_with_load) == (0.25, 3, True)


def test_trace_file_names_may_hold_commas_and_colons(tmp_path):
    f = tmp_path / "a,b:c.csv"
    f.write_text("1,1,0.5\n1,2,0.25\n")
    model = delays.parse(f"trace:{f}", n_workers=1)
    assert model.draw(0, 2) == 0.25 and model.spec == f"trace:{f}"


class _Twice(delays.DelayModel):
    """Each pause is twice the iteration number, in milliseconds (no bulk draw of its own)."""

    def __init__(self, scale: float = 1.0, *, seed: int = 0, scale_with_load: bool = False) -> None:
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        self.scale = scale

    def sample(self, rng, worker, iteration, compute):
        return self.scale * 0.002 * iteration + 0.0 * float(rng.random())


def test_the_default_bulk_draw_replays_draw_and_the_defaults_read_optional_args():
    model = _Twice.from_args("", seed=1, scale_with_load=False, n_workers=None)
    assert model.scale == 1.0 and _Twice.form() == "_Twice[:SCALE]"
    bulk = model.sample_bulk(np.random.default_rng(0), np.zeros((3, 2)), first_iteration=4)
    np.testing.assert_allclose(bulk, [[0.008, 0.008], [0.010, 0.010], [0.012, 0.012]])
    assert _Twice.from_args("3", seed=1).scale == 3.0


@pytest.mark.parametrize("spec", ["none", "exp:0.5", "shifted-exp:0.1,0.5", "pareto:0.1,2.5", "persistent:2,5,0.02",
                                  "persistent:1,3", "markov:0.1,5,0.05,0.2", "markov:0.1,5,0.05,0.2,0.01",
                                  "correlated:0.2,1.5,0.4", "correlated:0.2,1.5,0.4,2"])
def test_the_spec_rebuilds_the_model(spec):
    model = delays.parse(spec, seed=2, n_workers=5)
    assert model.spec == spec
    again = delays.parse(model.spec, seed=2, n_workers=5)
    assert [again.draw(w, 3, compute=0.01) for w in range(5)] == [model.draw(w, 3, compute=0.01) for w in range(5)]


@pytest.mark.parametrize("spec", ["none", "exp:0.5", "shifted-exp:0.1,0.5", "pareto:0.1,2.5", "persistent:2,5,0.02",
                                  "markov:0.1,5,0.05,0.2,0.01", "correlated:0.2,1.5,0.4,2"])
def test_uses_compute_says_whether_the_pause_depends_on_the_compute_time(spec):
    """A coded worker pauses before it computes when the model says its pause does not read the
    compute time: it must then be the same whatever compute time is given."""
    model = delays.parse(spec, seed=2, n_workers=5)
    given = [[model.draw(w, t, compute=c) for w in range(5) for t in (1, 7)] for c in (0.0, 0.01, 0.3)]
    assert model.uses_compute == (given[0] != given[1] or given[0] != given[2])


def test_a_plugin_model_is_taken_to_read_the_compute_time():
    assert delays.DelayModel.uses_compute is True

    class Slower(delays.Exponential):  # a built-in's subclass with a sample of its own
        def sample(self, rng, worker, iteration, compute):
            return 2.0 * compute

    class Scaled(delays.Exponential):  # one that only changes something else keeps the built-in's
        spec = "scaled"

    class Declared(delays.Exponential):
        uses_compute = False

        def sample(self, rng, worker, iteration, compute):
            return 2.0 * super().sample(rng, worker, iteration, compute)

    assert Slower.uses_compute and not Scaled.uses_compute and not Declared.uses_compute


# ----------------------------------------------------------------------------- markov and correlated


def _lag1(x: np.ndarray) -> float:
    """Lag-1 autocorrelation along axis 0, pooled over the columns (each centred on its own mean)."""
    c = x - x.mean(axis=0)
    return float(np.sum(c[1:] * c[:-1]) / np.sum(c * c))


def test_markov_moments_match_the_closed_forms():
    model = delays.parse("markov:0.1,5,0.05,0.2,0.02", seed=1)
    pi = model.stationary_fraction()
    assert pi == pytest.approx(0.2) and model.mean() == pytest.approx(0.02 + 0.1 * (0.8 + 0.2 * 5))
    assert model.state_autocorrelation(1) == pytest.approx(0.75) and model.mean_spell() == pytest.approx(5.0)
    # the states of the pure draws: stationary fraction, lag-1 correlation, spell length
    states = np.stack([model.states(w, 10000) for w in range(100)], axis=1)
    assert states.mean() == pytest.approx(pi, rel=0.02)
    assert _lag1(states.astype(float)) == pytest.approx(0.75, rel=0.02)
    starts = np.sum(states[1:] & ~states[:-1])
    assert states[1:].sum() / starts == pytest.approx(model.mean_spell(), rel=0.02)
    # the bulk draws: mean, variance, lag-1 autocorrelation of the pauses
    bulk = model.sample_bulk(np.random.default_rng(2), np.zeros((10000, 200)))
    assert bulk.mean() == pytest.approx(model.mean(), rel=0.02)
    assert bulk.var() == pytest.approx(model.variance(), rel=0.02)
    assert _lag1(bulk) == pytest.approx(model.autocorrelation(1), rel=0.02)
    assert _lag1(bulk[::3]) == pytest.approx(model.autocorrelation(3), rel=0.05)


def test_markov_draws_follow_the_bulk_distribution_and_the_stationary_start():
    from scipy.stats import ks_2samp

    model = delays.parse("markov:0.1,5,0.05,0.2", seed=4)
    exact = np.array([model.draw(w, t) for w in range(20) for t in range(1, 501)])
    bulk = model.sample_bulk(np.random.default_rng(0), np.zeros((500, 20))).ravel()
    assert ks_2samp(exact, bulk).pvalue > 0.001
    first = np.array([model.states(w, 1)[0] for w in range(4000)])  # iteration 1 is already stationary
    assert first.mean() == pytest.approx(0.2, abs=0.02)


def test_markov_draws_are_pure_functions_of_seed_worker_and_iteration():
    spec, B = "markov:0.1,8,0.02,0.1", delays.Markov.BLOCK
    ordered = delays.parse(spec, seed=9)
    its = [1, 2, 3, 50, B - 1, B, B + 1, 2 * B + 7, 3 * B]
    expected = {(w, t): ordered.draw(w, t) for w in range(3) for t in range(1, 3 * B + 1) if t in its}
    shuffled = delays.parse(spec, seed=9)
    keys = list(expected)
    for i in np.random.default_rng(0).permutation(len(keys)):  # any order, iterations skipped
        assert shuffled.draw(*keys[i]) == expected[keys[i]]
    resumed = delays.parse(spec, seed=9)  # a run resumed at iteration 2B + 7 asks for that one first
    assert resumed.draw(1, 2 * B + 7) == expected[(1, 2 * B + 7)]
    np.testing.assert_array_equal(resumed.states(1, 3 * B), ordered.states(1, 3 * B))
    assert not np.array_equal(ordered.states(0, B), ordered.states(1, B))  # each worker its own chain
    assert not np.array_equal(ordered.states(0, B), delays.parse(spec, seed=10).states(0, B))
    slow = ordered.states(0, 500)
    for t in range(1, 40):  # the pause is the worker's exponential times FACTOR while slow
        plain = float(ordered.rng(0, t).exponential(0.1))
        assert ordered.draw(0, t) == pytest.approx(plain * (8 if slow[t - 1] else 1))
    scaled = delays.parse(spec, seed=9, scale_with_load=True)
    assert scaled.draw(2, 3, load=0.25) == pytest.approx(0.25 * expected[(2, 3)])


def test_markov_extreme_chains():
    never = delays.parse("markov:0.1,5,0,1", seed=1)
    always = delays.parse("markov:0.1,5,1,0", seed=1)
    assert not never.states(0, 100).any() and always.states(0, 100).all()
    assert always.draw(0, 7) == pytest.approx(5 * never.draw(0, 7))
    shifted = delays.parse("markov:0.1,5,1,0,0.3", seed=1)  # the shift is a floor, not slowed down
    assert shifted.draw(0, 7) == pytest.approx(0.3 + always.draw(0, 7))
    flip = delays.parse("markov:0.1,5,1,1", seed=1).states(0, 100)  # alternates from its start
    assert np.all(flip[1:] != flip[:-1])


def test_correlated_moments_match_the_closed_forms():
    model = delays.parse("correlated:0.2,1.5,0.4,2", seed=1)
    assert model.mean() == 0.2 and model.variance() == pytest.approx(0.09)
    assert [model.correlation(0, w) for w in range(4)] == [1.0, 0.4, 0.0, 0.0]
    bulk = model.sample_bulk(np.random.default_rng(3), np.zeros((300000, 4)))
    assert bulk.mean() == pytest.approx(0.2, rel=0.02)
    assert bulk.std() / bulk.mean() == pytest.approx(1.5, rel=0.02)
    r = np.corrcoef(bulk.T)
    assert r[0, 1] == pytest.approx(0.4, rel=0.02) and r[2, 3] == pytest.approx(0.4, rel=0.02)
    assert abs(r[0, 2]) < 0.01 and abs(r[1, 3]) < 0.01 and abs(_lag1(bulk)) < 0.01
    one_group = delays.parse("correlated:1,0.5,0.9", seed=1).sample_bulk(np.random.default_rng(4),
                                                                        np.zeros((200000, 5)))
    r = np.corrcoef(one_group.T)[np.triu_indices(5, 1)]
    np.testing.assert_allclose(r, 0.9, rtol=0.02)


def test_correlated_draws_share_the_group_factor_and_follow_the_bulk_distribution():
    from scipy.stats import ks_2samp

    model = delays.parse("correlated:0.2,1,0.6,3", seed=5)
    exact = np.array([[model.draw(w, t) for w in range(6)] for t in range(1, 2001)])
    bulk = model.sample_bulk(np.random.default_rng(1), np.zeros((2000, 6)))
    assert ks_2samp(exact.ravel(), bulk.ravel()).pvalue > 0.001
    r = np.corrcoef(exact.T)
    assert r[0, 2] == pytest.approx(0.6, abs=0.05) and r[3, 5] == pytest.approx(0.6, abs=0.05)
    assert abs(r[0, 3]) < 0.08
    assert model.draw(4, 17) == delays.parse("correlated:0.2,1,0.6,3", seed=5).draw(4, 17)
    # rho = 1: a group pauses alike; rho = 0, CV = 1: exponential pauses
    same = delays.parse("correlated:0.2,1,1,2", seed=5)
    assert same.draw(0, 3) == pytest.approx(same.draw(1, 3)) and same.draw(0, 3) != same.draw(2, 3)
    plain = delays.parse("correlated:0.2,1,0", seed=5)
    assert plain.draw(1, 3) == pytest.approx(delays.parse("exp:0.2", seed=5).draw(1, 3))


@pytest.mark.parametrize("spec", ["markov:0,5,0.1,0.1", "markov:1,0.5,0.1,0.1", "markov:1,2,1.5,0.1", "markov:1,2,0,0",
                                  "markov:1,2,0.1,-0.1", "markov:1,2,0.1", "markov:1,2,0.1,0.2,-1",
                                  "correlated:0,1,0.5", "correlated:1,0,0.5", "correlated:1,1,1.5",
                                  "correlated:1,1,0.5,1.5", "correlated:1,1,0.5,-2", "correlated:1,1"])
def test_bad_markov_and_correlated_specs(spec):
    with pytest.raises(ValueError, match="markov|correlated"):
        delays.parse(spec, n_workers=4)
