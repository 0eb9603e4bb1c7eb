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


@pytest.mark.parametrize("name", codes.names())
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


def test_every_code_chooses_its_own_closed_form():
    expected = {"uncoded": True, "ignore": True, "cyclic": True, "cyclic-mds": True, "frc": True, "approx": False,
                "sgc": False, "expander": False, "bcc": False}
    for name, has in expected.items():
        code = codes.build(name, 6, 1)
        assert (code.exponential_order_mean(0.5, 2.0) is not None) == has, name
    assert codes.build("frc", 6, 1).exponential_order_mean(0.5, 2.0) == pytest.approx(0.5 + 2.0 * H(3) / 2)
