"""The straggler baselines: stale-gradient reuse, K-batch SGD, adaptive waiting."""

from __future__ import annotations

import numpy as np
import pytest

from gdcode import codes, problem
from gdcode.errors import OptionError
from gdcode.options import RunOptions
from gdcode.waiting import AdaptiveDeadline, WaitRule, km_quantile


def test_wait_rules_parse():
    assert WaitRule.parse("fixed") == WaitRule("fixed")
    assert WaitRule.parse("quantile:0.9").value == 0.9 and WaitRule.parse("mad:2").kind == "mad"
    for bad in ("quantile:0", "quantile:1.5", "mad:-1", "soon", "fixed:1"):
        with pytest.raises(ValueError):
            WaitRule.parse(bad)


def test_the_deadline_is_unbiased_by_the_replies_it_cuts_off():
    rng = np.random.default_rng(0)
    deadline = AdaptiveDeadline(WaitRule.parse("quantile:0.5"), window=3000)
    assert deadline.deadline() is None
    for _ in range(3000):
        a = rng.exponential(1.0, 10)
        cut = np.sort(a)[5]
        a[a > cut] = np.inf  # the slowest were cancelled at the decode
        deadline.observe(a, cut)
    assert deadline.deadline() == pytest.approx(np.log(2), rel=0.03)
    values = np.array([1.0, 2.0, 3.0, 4.0])
    assert km_quantile(values, np.array([True, True, False, False]), 0.5) == 2.0


@pytest.mark.parametrize("name, kwargs", [("ignore", {}), ("approx", {}), ("sgc", {}), ("bcc", {}),
                                          ("expander", {}), ("stale", {})])
def test_codes_that_decode_from_any_set(name, kwargs):
    code = codes.build(name, 6, 1, seed=0, **kwargs)
    assert code.decodes_any_set
    a = code.decode_now([4, 1])
    assert a is not None and set(np.flatnonzero(a)) <= {1, 4} and a.any()
    assert code.decode_now([]) is None


def test_exact_codes_cannot_wait_adaptively():
    assert not codes.build("frc", 6, 1).decodes_any_set
    with pytest.raises(OptionError) as info:
        problem.build(RunOptions(scheme="frc", workers=4, stragglers=1, wait="quantile:0.8"))
    assert info.value.option == "wait"
    with pytest.raises(OptionError) as info:
        problem.build(RunOptions(scheme="kbatch", workers=4))
    assert info.value.option == "batch_size"


def test_kbatch_counts_repeats():
    code = codes.build("kbatch", 3, k=4)
    assert code.decode([0, 0, 2]) is None
    np.testing.assert_array_equal(code.decode([0, 0, 2, 0, 1]), [3, 0, 1])
    first = np.array([[[1.0], [3.0], [10.0]]])
    assert code.decode_times(first)[0] == 3.0  # 1, 2, 3 from worker 0 and 3 from worker 1


def test_kbatch_replay_gives_each_repeat_its_own_pause():
    """The simulator's replay of a kbatch run: a worker's r-th gradient leaves after r + 1 rounds of
    compute and pause, each pause the one the run's worker draws (DelayModel.draw_repeat)."""
    from gdcode import delays, simulate

    code = codes.build("kbatch", 3, k=4)
    delay = delays.parse("exp:0.02", seed=5)
    sim = simulate.simulate(code, delay, draws=6, replay=True, first_iteration=3)
    for d in range(6):
        t = 3 + d
        leave = sorted(sum(delay.draw_repeat(w, t, r) for r in range(j + 1)) for w in range(3) for j in range(4))
        assert sim.times[d] == pytest.approx(leave[3], rel=1e-12)
    assert delay.draw_repeat(1, 4, 0) == delay.draw(1, 4)
    assert delay.draw_repeat(1, 4, 1) != delay.draw_repeat(1, 4, 2)
    bulk = simulate.simulate(code, delay, draws=6, replay=False)  # bulk: each repeat as long as the first
    first = bulk.arrivals[:, :, 0]
    assert bulk.times == pytest.approx(np.sort(np.concatenate([first * j for j in (1, 2, 3, 4)], axis=1))[:, 3])


def test_kbatch_simulation_responders_are_the_gradients_its_times_decode_from():
    """k = 4 gradients from W = 3 workers: a draw's responders repeat workers, decode, and the
    last of them arrives at the draw's time (replayed and bulk alike)."""
    from gdcode import delays, simulate

    code = codes.build("kbatch", 3, k=4)
    delay = delays.parse("exp:0.02", seed=5)
    for replay in (True, False):
        sim = simulate.simulate(code, delay, draws=5, replay=replay)
        for d in range(5):
            responders = sim.responders(d)
            assert len(responders) == 4 and code.decode(responders) is not None
            table = code.repeat_table(sim.decoded_from[d:d + 1])[0]
            counts = np.bincount(responders, minlength=3)
            assert max(table[w, counts[w] - 1] for w in range(3) if counts[w]) == pytest.approx(sim.times[d])


@pytest.mark.mpi
def test_stale_collecting_every_worker_is_uncoded(train):
    common = ("--dataset", "synthetic:1200x20", "--iterations", "8", "--delay", "exp:0.002")
    base = train(3, *common, "--scheme", "uncoded", name="uncoded")
    stale = train(3, *common, "--scheme", "stale", "--collect", "3", name="stale")
    np.testing.assert_allclose(stale.column("train_loss"), base.column("train_loss"), rtol=1e-12)
    assert all(m["staleness"] == [0, 0, 0] for m in stale.metrics[1:])


@pytest.mark.mpi
def test_stale_reuses_old_gradients(train):
    run = train(4, "--dataset", "synthetic:1200x20", "--iterations", "10", "--delay", "persistent:1,30,0.002",
                "--scheme", "stale", "--stragglers", "1", name="stale")
    slow = run.metadata["delay"]["slow_workers"][0]
    ages = [m["staleness"][slow - 1] for m in run.metrics[1:]]
    assert max(ages) >= 5  # the persistent straggler's partition is reused, older and older
    assert run.column("train_loss")[-1] < run.column("train_loss")[0]


@pytest.mark.mpi
def test_kbatch_with_k_equal_to_w_is_uncoded_minibatch_sgd(train):
    # equal pauses for every worker: each sends its first minibatch before anyone sends a second
    common = ("--dataset", "synthetic:1200x20", "--iterations", "6", "--batch-size", "90", "--delay",
              "persistent:0,1,0.03", "--lr", "0.3")
    base = train(3, *common, "--scheme", "uncoded", name="uncoded")
    kb = train(3, *common, "--scheme", "kbatch", name="kbatch")
    np.testing.assert_allclose(kb.column("train_loss"), base.column("train_loss"), rtol=1e-12)
    assert all(m["contributions"] == [1, 1, 1] for m in kb.metrics[1:])


@pytest.mark.mpi
def test_kbatch_lets_fast_workers_contribute_more(train):
    run = train(3, "--dataset", "synthetic:1200x20", "--iterations", "6", "--batch-size", "90",
                "--delay", "persistent:1,20,0.005", "--scheme", "kbatch", "--code-options", "k=6", name="kb")
    slow = run.metadata["delay"]["slow_workers"][0] - 1
    contributions = np.array([m["contributions"] for m in run.metrics[1:]])
    assert contributions.sum(axis=1).tolist() == [6] * 6
    assert contributions[:, slow].sum() < contributions.sum() / 3


@pytest.mark.mpi
def test_adaptive_waiting_never_takes_fewer_than_min_replies(train):
    run = train(5, "--dataset", "synthetic:1200x20", "--iterations", "25", "--delay", "exp:0.02",
                "--scheme", "ignore", "--stragglers", "1", "--wait", "quantile:0.3", "--min-replies", "3",
                name="adaptive")
    lines = run.metrics[1:]
    assert all(m["responders"] >= 3 for m in lines)
    assert any(m.get("deadline") is not None for m in lines)
    assert min(m["responders"] for m in lines) < 4  # the deadline did cut some iterations short
