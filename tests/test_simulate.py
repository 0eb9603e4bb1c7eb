"""The simulator: closed forms, decode rules against the codes' own decode, delays, replay and fits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gdcode import codes, delays, simulate
from gdcode.cli import main as cli_main
from gdcode.errors import ConfigError


def H(m: int) -> float:
    return sum(1.0 / i for i in range(1, m + 1))


def needs(name: str) -> None:
    if name not in codes.names():
        pytest.skip(f"the code {name!r} is not in this gdcode yet")


# ----------------------------------------------------------------------------- closed forms

MEAN = 2.0  # shifted-exp:1,MEAN, mu = 1/MEAN
MU = 1.0 / MEAN

# (scheme, n, s, the closed form)
CLOSED = [
    ("uncoded", 12, 0, lambda n, s: (1 / n) * (1 + H(n) / MU)),
    ("ignore", 12, 2, lambda n, s: (1 / n) * (1 + (H(n) - H(s)) / MU)),
    ("ignore", 10, 5, lambda n, s: (1 / n) * (1 + (H(n) - H(s)) / MU)),
    ("cyclic", 12, 2, lambda n, s: ((s + 1) / n) * (1 + (H(n) - H(s)) / MU)),
    ("cyclic", 8, 1, lambda n, s: ((s + 1) / n) * (1 + (H(n) - H(s)) / MU)),
    ("cyclic-mds", 11, 2, lambda n, s: ((s + 1) / n) * (1 + (H(n) - H(s)) / MU)),
    ("cyclic-mds", 12, 3, lambda n, s: ((s + 1) / n) * (1 + (H(n) - H(s)) / MU)),
    ("frc", 12, 2, lambda n, s: ((s + 1) / n) * (1 + H(n // (s + 1)) / ((s + 1) * MU))),
    ("frc", 12, 3, lambda n, s: ((s + 1) / n) * (1 + H(n // (s + 1)) / ((s + 1) * MU))),
    ("frc", 6, 1, lambda n, s: ((s + 1) / n) * (1 + H(n // (s + 1)) / ((s + 1) * MU))),
]


@pytest.mark.parametrize(("scheme", "n", "s", "form"), CLOSED, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CLOSED])
def test_closed_forms_within_two_percent(scheme, n, s, form):
    needs(scheme)
    res = _cli_json(["simulate", "--scheme", scheme, "--workers", str(n), "--stragglers", str(s),
                     "--delay", f"shifted-exp:1,{MEAN:g}", "--delay-scale-with-load", "--draws", "20000",
                     "--json"])
    expected = form(n, s)
    assert res["draws"] == 20000 and res["decode_method"] == "vectorised"
    assert res["mean_iteration_seconds"] == pytest.approx(expected, rel=0.02)
    assert res["closed_form_mean_seconds"] == pytest.approx(expected, rel=1e-12)


def test_exact_codes_beat_their_order_statistics_as_the_reference_says():
    """With equal load, frc (stop on cover) decodes earlier than a wait-for-(n-s) code."""
    needs("frc")
    needs("cyclic")
    model = delays.parse("shifted-exp:1,2", scale_with_load=True, n_workers=12)
    frc = simulate.simulate(codes.build("frc", 12, 2), model, draws=4000).times.mean()
    cyc = simulate.simulate(codes.build("cyclic", 12, 2), model, draws=4000).times.mean()
    assert frc < 0.7 * cyc


def _cli_json(argv, capsys=None) -> dict:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli_main(argv)
    assert code == 0
    return json.loads(buf.getvalue())


# ----------------------------------------------------------------------------- decode rules


def _options(name: str, W: int, S: int) -> list[dict]:
    accepted = codes.accepted_options(name)
    out = [{}]
    if "collect" in accepted:
        out += [{"collect": 1}, {"collect": max(1, (W - S) // 2)}, {"collect": W}]
    if "batches" in accepted:
        out += [{"batches": W}]
    return out


def _build_or_none(name, W, S, opts):
    try:
        return codes.build(name, W, S, seed=3, **opts)
    except ValueError:  # a layout this (W, S) does not allow
        return None


@pytest.mark.parametrize("name", sorted(set(codes.names()) - {"kbatch"}))  # kbatch's rule models repeats
def test_vectorised_rule_agrees_with_the_codes_own_decode(name):
    rng = np.random.default_rng(7)
    checked = 0
    for W, S in [(4, 0), (4, 1), (6, 1), (6, 2), (7, 2), (9, 2), (12, 3)]:
        for opts in _options(name, W, S):
            code = _build_or_none(name, W, S, opts)
            if code is None:
                continue
            M = getattr(code, "n_messages", 1)
            A = rng.exponential(1.0, (200, W, M))
            A[:20] = np.round(A[:20], 1)  # ties
            A = np.cumsum(A, axis=2)  # a worker's messages arrive in order
            fast, method = simulate.decode_times(code, A)
            slow, generic = simulate.decode_times(code, A, generic=True)
            assert generic == "generic"
            assert method == "vectorised", f"{name} has no vectorised rule"
            np.testing.assert_array_equal(fast, slow)
            checked += 1
    assert checked


def test_decode_time_bisection_equals_the_incremental_search():
    rng = np.random.default_rng(2)
    code = codes.build("ignore", 7, 3)
    for _ in range(50):
        a = rng.exponential(1.0, 7)
        order = np.argsort(a, kind="stable")
        for k in range(1, 8):
            if code.decode([int(w) for w in order[:k]]) is not None:
                break
        t, responders = simulate.decode_time(code, a)
        assert t == a[order[k - 1]] and responders == [int(w) for w in order[:k]]
    a = np.full(7, np.inf)
    a[:3] = 1.0
    assert simulate.decode_time(code, a)[0] == np.inf


def test_twenty_thousand_draws_of_twelve_workers_take_well_under_a_second():
    import time

    model = delays.parse("exp:1")
    t0 = time.perf_counter()
    simulate.simulate(codes.build("ignore", 12, 3), model, draws=20000)
    assert time.perf_counter() - t0 < 5.0  # generous: the point is no per-draw Python loop


# ----------------------------------------------------------------------------- delays and time models


@pytest.mark.parametrize("spec", ["exp:0.3", "shifted-exp:0.5,0.2", "pareto:0.1,2.5"])
def test_bulk_pauses_follow_the_models_distribution(spec):
    from scipy.stats import ks_2samp

    model = delays.parse(spec, seed=4)
    exact = np.array([model.draw(w, t) for w in range(4) for t in range(1, 501)])
    bulk = simulate.sample_pauses(model, np.full(4, 1.0), np.zeros((500, 4)), 500).ravel()
    assert ks_2samp(exact, bulk).pvalue > 0.001


def test_replay_gives_the_runs_own_pauses_and_load_scaling():
    model = delays.parse("exp:0.3", seed=5, scale_with_load=True)
    load = np.array([0.25, 0.5, 0.25])
    p = simulate.sample_pauses(model, load, np.zeros((6, 3)), 6, replay=True, first_iteration=4)
    for d in range(6):
        for w in range(3):
            assert p[d, w] == model.draw(w, 4 + d, load[w])
    bulk = simulate.sample_pauses(model, load, np.zeros((20000, 3)), 20000)
    np.testing.assert_allclose(bulk.mean(axis=0), 0.3 * load, rtol=0.05)


def test_persistent_stragglers_stay_slow():
    model = delays.parse("persistent:1,5,0.1", seed=0, n_workers=4)
    slow = model.slow_workers(4)[0]
    sim = simulate.simulate(codes.build("uncoded", 4), model, draws=50)
    np.testing.assert_allclose(sim.times, 0.5)
    np.testing.assert_allclose(sim.pauses[:, slow], 0.5)
    assert simulate.simulate(codes.build("ignore", 4, 1), model, draws=50).times.max() == pytest.approx(0.1)
    # with compute: slow = FACTOR * (compute + BASE)
    comp = simulate.parse_compute("0.4", 4)  # 0.4 s per full dataset, load 1/4 -> 0.1 s each
    sim = simulate.simulate(codes.build("uncoded", 4), model, draws=5, compute=comp)
    np.testing.assert_allclose(sim.times, 5 * (0.1 + 0.1))
    replayed = simulate.simulate(codes.build("uncoded", 4), model, draws=5, compute=comp, replay=True)
    np.testing.assert_allclose(replayed.times, sim.times)


def test_compute_and_comm_add_to_every_arrival():
    code = codes.build("uncoded", 4)
    sim = simulate.simulate(code, delays.parse("none"), draws=3, compute=simulate.parse_compute("0.1,0.2,0.3,0.4", 4),
                            comm=0.01)
    np.testing.assert_allclose(sim.times, 0.4 / 4 + 0.01)
    cf = simulate.closed_form_mean(code, delays.parse("shifted-exp:1,2", scale_with_load=True),
                                   simulate.parse_compute("0.5", 4), comm=0.01)
    assert cf == pytest.approx(0.25 * (1.5 + 2 * H(4)) + 0.01)


def test_trace_compute_replays_measured_times(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("worker,iteration,seconds\n1,1,0.5\n1,2,0.25\n2,1,0.125\n2,2,0.75\n")
    comp = simulate.parse_compute(f"trace:{path}", 2)
    table = comp.table(codes.build("uncoded", 2), 3)
    np.testing.assert_allclose(table, [[0.5, 0.125], [0.25, 0.75], [0.5, 0.125]])  # wraps around
    with pytest.raises(ConfigError, match="no rows for worker 3"):
        comp.table(codes.build("uncoded", 3), 2)


def test_one_message_without_compute_arrives_at_its_pause_without_a_copy():
    code = codes.build("uncoded", 4)
    pause = np.random.default_rng(1).random((6, 4))
    A = simulate.all_arrivals(code, None, pause)
    assert A.shape == (6, 4, 1) and np.shares_memory(A, pause) and not A.flags.writeable
    np.testing.assert_array_equal(A[:, :, 0], pause)
    with pytest.raises(ValueError, match="read-only"):
        A += 1.0
    assert pause.flags.writeable  # the caller's array is left as it was
    shifted = simulate.all_arrivals(code, None, pause, comm=0.25)
    assert shifted.flags.writeable and not np.shares_memory(shifted, pause)
    np.testing.assert_array_equal(shifted[:, :, 0], pause + 0.25)


@pytest.mark.parametrize(("name", "stragglers"), [("uncoded", 0), ("frc", 1), ("cyclic-mds", 2)])
def test_no_compute_decodes_as_zero_compute_does(name, stragglers):
    code = codes.build(name, 6, stragglers)
    delay = delays.parse("exp:0.1", seed=3, scale_with_load=True)
    none = simulate.simulate(code, delay, draws=500)
    zero = simulate.simulate(code, delay, draws=500, compute=simulate.parse_compute("0.0,0,0,0,0,0", 6))
    assert not none.arrivals.flags.writeable and zero.arrivals.flags.writeable
    np.testing.assert_array_equal(none.times, zero.times)
    np.testing.assert_array_equal(none.arrivals, zero.arrivals)


def test_multi_message_arrivals_match_the_engine_rule():
    needs("partial-frc")
    code = codes.build("partial-frc", 4, 1)
    rng = np.random.default_rng(0)
    comp, pause = rng.random((5, 4)), rng.random((5, 4))
    A = simulate.all_arrivals(code, comp, pause)
    share = simulate.message_shares(code)
    for d in range(5):
        for w in range(4):
            np.testing.assert_allclose(A[d, w], simulate.message_arrivals(comp[d, w:w + 1], pause[d, w:w + 1],
                                                                          share[w])[0])


@pytest.mark.parametrize("bad", [["--compute", "x"], ["--compute", "1,2"], ["--compute", "-1"], ["--comm", "-1"],
                                 ["--delay", "gamma:1"], ["--stragglers", "4"], ["--scheme", "nope"],
                                 ["--draws", "0"], ["--delay", "persistent:1,5"]])
def test_bad_input_exits_2(bad, capsys):
    assert cli_main(["simulate", "--workers", "4", *bad]) == 2
    assert "error" in capsys.readouterr().err


# ----------------------------------------------------------------------------- training replay

RUN_VALUES = None


def _values(**kw):
    from gdcode import problem
    from gdcode.options import RunOptions

    return problem.build(RunOptions(dataset="synthetic:1200x10", test_fraction=0.0, lr=1.0, seed=1, workers=4,
                                    **kw))


def test_replay_of_an_exact_code_is_plain_gradient_descent():
    from gdcode import models, optim
    from gdcode.data import open_dataset

    values = _values()
    code = codes.build("uncoded", 4)
    sim = simulate.simulate(code, delays.parse("exp:0.1", seed=1), draws=20)
    res = simulate.train_replay(sim, values, iterations=20)
    src = open_dataset("synthetic:1200x10", seed=1, test_fraction=0.0)
    X, y = src.train_set()
    model = models.get("logistic")
    w = optim.initial_point(10, 1)
    losses = []
    for _ in range(20):
        w = w - 1.0 * model.full_gradient(X, y, w, 1.0 / 1200)
        losses.append(model.objective(X, y, w, 1.0 / 1200))
    np.testing.assert_allclose(res.train_loss, losses, rtol=1e-10)
    np.testing.assert_allclose(res.seconds, np.cumsum(sim.times[:20]))
    assert np.all(res.gradient_error < 1e-12)


def test_time_to_target_and_gradient_error_of_ignore():
    values = _values()
    code = codes.build("ignore", 4, 1)
    sim = simulate.simulate(code, delays.parse("exp:0.1", seed=1), draws=100)
    res = simulate.train_replay(sim, values, iterations=100, target_loss=0.14)
    assert res.target_iteration is not None and res.train_loss[-1] <= 0.14 < res.train_loss[-2]
    assert res.target_seconds == pytest.approx(sim.times[:res.target_iteration].sum())
    assert res.gradient_error.mean() > 0.01


def test_cli_time_to_target():
    out = _cli_json(["simulate", "--scheme", "ignore", "--workers", "4", "--stragglers", "1", "--delay", "exp:0.1",
                     "--dataset", "synthetic:1200x10", "--test-fraction", "0", "--lr", "1", "--target-loss", "0.14",
                     "--iterations", "60",
                     "--json"])
    tt = out["time_to_target"]
    assert tt["target_reached"] and tt["seconds_to_target"] > 0 and tt["mean_gradient_error"] > 0


# ----------------------------------------------------------------------------- fitting


def _sample(values, censored=()):
    return simulate.Sample(observed=np.asarray(values, float), censored=np.asarray(censored, float), what="test")


def test_fit_finds_a_shifted_exponential():
    rng = np.random.default_rng(0)
    x = 0.3 + rng.exponential(0.2, 1000)
    rep = simulate.fit_sample(_sample(x), bootstrap=100)
    by = {r["model"]: r for r in rep["models"]}
    assert rep["best"] == "shifted-exp" and rep["best_fits"]
    assert by["shifted-exp"]["params"] == pytest.approx([0.3, 0.2], rel=0.1)
    assert not by["exp"]["fits"]  # a shift of 0.3 s is no exponential


def test_fit_rejects_exponential_for_heavy_tails():
    rng = np.random.default_rng(1)
    x = 0.05 * (1 + rng.pareto(1.5, 400))
    rep = simulate.fit_sample(_sample(x), bootstrap=100)
    by = {r["model"]: r for r in rep["models"]}
    assert rep["best"] == "pareto" and by["pareto"]["fits"]
    assert by["pareto"]["params"][1] == pytest.approx(1.5, rel=0.2)
    assert not by["exp"]["fits"]


def test_censored_exponential_mean_is_recovered():
    rng = np.random.default_rng(2)
    x = rng.exponential(1.0, 3000)
    cap = 1.2
    rep = simulate.fit_sample(simulate.Sample(observed=x[x <= cap], censored=np.full(np.sum(x > cap), cap),
                                              what="t", observed_cap=np.full(np.sum(x <= cap), cap)),
                              bootstrap=50)
    by = {r["model"]: r for r in rep["models"]}
    assert by["exp"]["params"][0] == pytest.approx(1.0, rel=0.06)
    assert by["exp"]["fits"]


def test_fit_refuses_too_little_data():
    with pytest.raises(ConfigError, match="too few"):
        simulate.fit_sample(_sample([0.1, 0.2]))
    with pytest.raises(ConfigError, match="same"):
        simulate.fit_sample(_sample([0.1] * 10))


def test_fit_of_a_missing_run_exits_2(tmp_path, capsys):
    assert cli_main(["simulate", "--fit", str(tmp_path)]) == 2
    assert "not a gdcode run directory" in capsys.readouterr().err


def test_persistent_stragglers_are_flagged():
    per = {w: {"measured": 40, "censored": 0, "mean_measured": 0.5} for w in range(1, 7)}
    assert simulate.persistent_stragglers(per) == []
    per[3] = {"measured": 0, "censored": 40, "mean_measured": None}
    per[5] = {"measured": 40, "censored": 0, "mean_measured": 1.5}
    assert simulate.persistent_stragglers(per) == [3, 5]


def test_bulk_pauses_are_the_documented_streams():
    """The bulk draws are one generator seeded [seed, 0x5171], in this order: fixed forever."""
    W, draws = 3, 50

    def rng():
        return np.random.default_rng([7, 0x5171])

    cases = {"exp:0.5": rng().exponential(0.5, (draws, W)),
             "shifted-exp:0.1,0.5": 0.1 + rng().exponential(0.5, (draws, W)),
             "pareto:0.1,2.5": 0.1 * (1.0 + rng().pareto(2.5, (draws, W))),
             "none": np.zeros((draws, W))}
    for spec, expected in cases.items():
        got = simulate.sample_pauses(delays.parse(spec, seed=7), np.ones(W), np.zeros((draws, W)), draws)
        np.testing.assert_array_equal(got, expected)
    load = np.array([0.5, 0.25, 1.0])
    scaled = simulate.sample_pauses(delays.parse("exp:0.5", seed=7, scale_with_load=True), load,
                                    np.zeros((draws, W)), draws)
    np.testing.assert_array_equal(scaled, cases["exp:0.5"] * load)


class _NoRule(codes.GradientCode):
    """A code with only a decode: wait for the first two replies."""

    def decode(self, responders):
        got = self._arrivals(responders)
        return None if len(got) < 2 else np.ones(self.n_workers)


def test_a_code_without_its_own_rule_is_decoded_generically():
    code = _NoRule(4, 0)
    A = np.random.default_rng(1).exponential(1.0, (30, 4, 1))
    times, method = simulate.decode_times(code, A)
    assert method == "generic" and not simulate.has_vectorised_rule(code)
    np.testing.assert_array_equal(times, np.sort(A[:, :, 0], axis=1)[:, 1])
    assert simulate.closed_form_mean(code, delays.parse("exp:1")) is None


@pytest.mark.parametrize("replay", [False, True])
def test_generic_kbatch_responders_decode_at_the_draws_time(replay):
    """With generic=True kbatch's times come from its own decode of the first arrivals, and so do
    its responders: they decode, at the draw's time (decode_time), not at the vectorised rule's."""
    code = codes.build("kbatch", 3, k=2)
    sim = simulate.simulate(code, delays.parse("exp:0.02", seed=5), draws=40, replay=replay, generic=True)
    assert sim.method == "generic"
    vectorised_differs = False
    for d in range(40):
        time, expected = simulate.decode_time(code, sim.arrivals[d, :, 0])
        responders = sim.responders(d)
        assert responders == expected and code.decode(responders) is not None
        assert time == sim.times[d] == max(sim.arrivals[d, w, 0] for w in responders)
        vectorised_differs |= code.responders(sim.arrivals[d]) != responders
    assert vectorised_differs  # the draws tell the two rules apart


def test_every_code_chooses_its_own_closed_form():
    expected = {"uncoded": True, "ignore": True, "cyclic": True, "cyclic-mds": True, "frc": True, "approx": False,
                "sgc": False, "expander": False, "bcc": False}
    for name, has in expected.items():
        code = codes.build(name, 6, 1)
        assert (code.exponential_order_mean(0.5, 2.0) is not None) == has, name
    assert codes.build("frc", 6, 1).exponential_order_mean(0.5, 2.0) == pytest.approx(0.5 + 2.0 * H(3) / 2)


# ----------------------------------------------------------------------------- delays with memory, fits in time

from gdcode import markovfit, traces  # noqa: E402


def _write_trace(path, table: np.ndarray) -> str:
    """``table`` (iterations x workers) as a gdcode trace file."""
    T, W = table.shape
    path.write_text("worker,iteration,seconds\n" + "".join(f"{w + 1},{t + 1},{float(table[t, w])!r}\n"
                                                          for w in range(W) for t in range(T)))
    return str(path)


@pytest.mark.parametrize("spec", ["markov:0.1,5,0.05,0.2", "correlated:0.1,1.5,0.5,2"])
def test_replay_gives_the_runs_own_pauses_for_models_with_memory(spec):
    model = delays.parse(spec, seed=5, scale_with_load=True)
    load = np.array([0.25, 0.5, 0.25, 0.5])
    p = simulate.sample_pauses(model, load, np.zeros((30, 4)), 30, replay=True, first_iteration=4090)
    fresh = delays.parse(spec, seed=5, scale_with_load=True)  # asked in another order: the same numbers
    for d in reversed(range(30)):
        for w in range(4):
            assert p[d, w] == fresh.draw(w, 4090 + d, load[w])
    bulk = simulate.sample_pauses(model, load, np.zeros((40000, 4)), 40000)
    np.testing.assert_allclose(bulk.mean(axis=0), model.mean() * load, rtol=0.05)
    out = _cli_json(["simulate", "--scheme", "ignore", "--workers", "4", "--stragglers", "1", "--delay", spec,
                     "--draws", "2000", "--json"])
    assert out["delay"] == spec and out["mean_iteration_seconds"] > 0 and out["closed_form_mean_seconds"] is None


def test_hmm_likelihood_is_the_forward_recursion():
    rng = np.random.default_rng(3)
    for T in (1, 2, 7, 64):
        x = 0.01 + rng.exponential(0.2, (T, 3))  # at least the shift: possible in the normal state
        x[rng.random((T, 3)) < 0.2] = np.nan
        cens = rng.random((T, 3)) < 0.1
        logE = markovfit.log_emissions(x, cens, 0.15, 4.0, 0.01)
        pe, pl = 0.1, 0.35
        pi = pe / (pe + pl)
        P = np.array([[1 - pe, pe], [pl, 1 - pl]])
        expected = 0.0
        for w in range(3):
            a = np.array([1 - pi, pi]) * np.exp(logE[0, w])
            for t in range(1, T):
                a = (a @ P) * np.exp(logE[t, w])
            expected += np.log(a.sum())
        assert markovfit.hmm_loglik(logE, pe, pl) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("spec", ["markov:0.1,6,0.05,0.25", "markov:0.05,4,0.03,0.2,0.1", "markov:0.2,10,0.01,0.05"])
def test_the_markov_fit_recovers_known_parameters_within_its_intervals(spec, seed=0):
    truth = delays.parse(spec, seed=seed)
    x = truth.sample_bulk(np.random.default_rng(seed), np.zeros((1500, 8)))
    series = traces.Series(workers=list(range(1, 9)), iterations=np.arange(1, 1501), values=x)
    fit = markovfit.fit_markov(series)
    assert fit["fitted"]
    want = {"mean": truth.mean_pause, "factor": truth.factor, "p_enter": truth.p_enter, "p_leave": truth.p_leave}
    for name, value in want.items():
        lo, hi = fit["ci"][name]
        assert lo <= value <= hi, (name, value, lo, hi)
        assert lo < fit["params"][name] < hi
    assert fit["params"]["shift"] == pytest.approx(truth.shift, abs=0.005)
    assert fit["stationary_fraction"] == pytest.approx(truth.stationary_fraction(), rel=0.25)
    assert fit["memoryless"]["p_value"] < 1e-6  # the slow spells last
    assert delays.parse(fit["spec"]).factor == pytest.approx(fit["params"]["factor"], rel=1e-3)
    split = fit["split"]
    assert split["threshold"] > truth.mean_pause and sum(split["transitions"].values()) == 8 * 1499
    assert split["p_enter"][1] <= split["p_enter"][0] <= split["p_enter"][2]


def test_the_markov_intervals_cover_the_truth_about_95_percent_of_the_time():
    truth = delays.parse("markov:0.1,5,0.08,0.3")
    want = {"mean": 0.1, "factor": 5.0, "p_enter": 0.08, "p_leave": 0.3}
    covered = dict.fromkeys(want, 0)
    for seed in range(10):
        x = truth.sample_bulk(np.random.default_rng(200 + seed), np.zeros((500, 6)))
        fit = markovfit.fit_markov(traces.Series(workers=list(range(1, 7)), iterations=np.arange(1, 501), values=x))
        for name, value in want.items():
            lo, hi = fit["ci"][name]
            covered[name] += lo <= value <= hi
    assert min(covered.values()) >= 8, covered  # fewer than 8 of 10 at 95%: probability 1.2%


def test_a_fit_without_a_slow_state_says_so():
    x = np.random.default_rng(0).exponential(0.1, (400, 4))
    fit = markovfit.fit_markov(traces.Series(workers=[1, 2, 3, 4], iterations=np.arange(1, 401), values=x))
    assert fit["fitted"] and fit["memoryless"]["p_value"] > 0.01
    few = markovfit.fit_markov(traces.Series(workers=[1], iterations=np.arange(1, 3), values=np.ones((2, 1))))
    assert not few["fitted"] and "too few" in few["reason"]


def test_fit_trace_names_the_model_that_made_the_data(tmp_path):
    W, T = 8, 500
    cases = {"markov": delays.parse("markov:0.1,6,0.05,0.25", seed=1),
             "correlated": delays.parse("correlated:0.2,1.2,0.5,4", seed=1),
             "exp": delays.parse("exp:0.2", seed=1)}
    for name, model in cases.items():
        table = model.sample_bulk(np.random.default_rng(7), np.zeros((T, W)))
        rep = simulate.fit_trace(_write_trace(tmp_path / f"{name}.csv", table), bootstrap=20)
        v = rep["verdict"]
        assert v["model"] == name or (name, v["model"]) == ("exp", "shifted-exp"), (name, v)  # shift ~ 0
        assert rep["observed"] == W * T and rep["censored"] == 0 and rep["markov"]["fitted"]
        assert delays.parse(v["spec"], n_workers=W).spec  # a spec that simulate --delay takes
        if name == "correlated":
            assert rep["cross_correlation"]["group_size"] == 4 and v["spec"].endswith(",4")
        if name == "exp":
            assert rep["autocorrelation"]["p_value"] > 0.01 and any("no significant correlation in time" in r
                                                                  for r in v["reasons"])


def test_cli_fit_of_a_trace(tmp_path, capsys):
    table = delays.parse("markov:0.1,6,0.05,0.25", seed=2).sample_bulk(np.random.default_rng(2), np.zeros((600, 6)))
    path = _write_trace(tmp_path / "t.csv", table)
    out = _cli_json(["simulate", "--fit", f"trace:{path}", "--bootstrap", "20", "--json"])
    assert out["trace"] == path and out["verdict"]["model"] == "markov"
    assert {"markov", "autocorrelation", "cross_correlation", "models", "best"} <= set(out)
    assert out["markov"]["ci"]["p_leave"][0] < 0.25 < out["markov"]["ci"]["p_leave"][1]
    assert cli_main(["simulate", "--fit", f"trace:{path}", "--bootstrap", "20"]) == 0
    text = capsys.readouterr().out
    assert "overall: markov fits best; simulate with --delay markov:" in text
    assert "lag-1 autocorrelation" in text and "likelihood ratio" in text and "95% confidence" in text
    assert cli_main(["simulate", "--fit", f"trace:{tmp_path / 'none.csv'}"]) == 2
    assert "--fit trace:" in capsys.readouterr().err


class _FakeRun:
    """What run_sample reads of a run directory: metadata, workers.csv rows and elapsed times."""

    def __init__(self, rows, elapsed, W):
        self.path = "fake"
        self.metadata = {"options": {"mode": "coded", "workers": W}, "code": {"load": [1.0] * W}}
        self.workers = rows
        self.metrics = [{"iteration": t, "elapsed": e} for t, e in enumerate(elapsed, 1)]

    def column(self, key):
        return np.array([m[key] for m in self.metrics], float)


def test_a_runs_reply_times_become_a_series_with_censored_values():
    model = delays.parse("markov:0.05,8,0.05,0.3", seed=3)
    W, T = 6, 300
    rows, elapsed, clock = [], [], 0.0
    for t in range(1, T + 1):
        pauses = [model.draw(w, t) for w in range(W)]
        cut = sorted(pauses)[W - 2]  # the coordinator stops after W - 1 replies (one straggler tolerated)
        for w, p in enumerate(pauses):
            late = p > cut
            rows.append({"iteration": t, "worker": w + 1, "arrival": None if late else p,
                         "status": "cancelled" if late else "used"})
        clock += cut
        elapsed.append(clock)
    sample = simulate.run_sample(_FakeRun(rows, elapsed, W))
    s = sample.series
    assert s is not None and s.values.shape == (T, W) and s.censored.sum() == sample.censored.size == T
    assert np.all(s.values[s.censored] > 0)
    rep = simulate.fit_sample(sample, bootstrap=10)
    mk = rep["markov"]
    assert mk["fitted"] and rep["verdict"]["model"] == "markov"
    for name, value in (("factor", 8), ("p_enter", 0.05), ("p_leave", 0.3)):
        lo, hi = mk["ci"][name]
        assert lo <= value <= hi, (name, lo, hi)


def test_adaptive_waiting_takes_at_least_min_replies_and_never_waits_past_everyone():
    code = codes.build("ignore", 6, 2)
    sim = simulate.simulate(code, delays.parse("markov:0.02,8,0.05,0.25", seed=3), draws=3000,
                            wait="quantile:0.75", min_replies=3)
    first = sim.arrivals.min(axis=2)
    ordered = np.sort(first, axis=1)
    assert sim.adaptive
    assert np.all(sim.times >= ordered[:, 2] - 1e-15) and np.all(sim.times <= ordered[:, -1] + 1e-15)
    fixed = simulate.simulate(code, delays.parse("markov:0.02,8,0.05,0.25", seed=3), draws=3000)
    assert np.allclose(sim.times[:2], fixed.times[:2])  # the code's own rule until two iterations are known
    taken = [len(sim.responders(d)) for d in range(sim.times.size)]
    assert min(taken) >= 3 and max(taken) == 6 and 3 < np.mean(taken) < 6
    # a later quantile waits longer
    later = simulate.simulate(code, delays.parse("markov:0.02,8,0.05,0.25", seed=3), draws=3000,
                              wait="quantile:0.9", min_replies=3)
    assert later.times.mean() > sim.times.mean()
