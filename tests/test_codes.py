"""Gradient codes: registry, exact decoding over every straggler pattern, bad input (no MPI)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdcode import cli, codes, problem
from gdcode.codes.diagnostics import straggler_patterns
from gdcode.errors import OptionError
from gdcode.options import RunOptions

ALL_CODES = ["uncoded", "ignore", "frc", "cyclic", "cyclic-mds", "approx", "partial-frc",
             "partial-cyclic", "expander", "sgc", "bcc"]
EXACT_CODES = ["uncoded", "frc", "cyclic", "cyclic-mds", "partial-frc", "partial-cyclic", "bcc"]
W_MAX = 12


def allowed(name: str, W: int) -> list[int]:
    """Every S the code accepts at W (frc layouts need S+1 dividing W)."""
    if name in ("frc", "partial-frc", "approx"):
        return [S for S in range(W) if W % (S + 1) == 0]
    return list(range(W))


def exact_cases():
    for name in EXACT_CODES:
        for W in range(1, W_MAX + 1):
            for S in allowed(name, W):
                yield name, W, S


def arrivals(code, responders, rng):
    """An arrival sequence for ``responders`` (coded message) in the form ``decode`` takes."""
    order = list(rng.permutation(list(responders)))
    if code.n_messages == 1:
        return order
    return [(i, 0) for i in rng.permutation(code.n_workers)] + [(i, 1) for i in order]


def test_names_lists_every_code_with_construction_decode_and_reference():
    assert set(ALL_CODES) <= set(codes.names())
    for name in codes.names():
        doc = codes.get_class(name).__doc__
        for part in ("Construction:", "Decode", "Reference"):
            assert part in doc, f"{name} docstring lacks {part}"
        assert "arXiv:" in doc, name
        assert codes.describe(name)


@pytest.mark.parametrize("name", EXACT_CODES)
def test_every_responder_set_of_size_w_minus_s_decodes_exactly(name):
    rng = np.random.default_rng(0)
    checked = 0
    for W in range(1, W_MAX + 1):
        for S in allowed(name, W):
            code = codes.build(name, n_workers=W, n_stragglers=S, seed=W + S)
            assert code.exact
            tol = code.straggler_tolerance
            patterns, total = straggler_patterns(W, tol, max_patterns=10_000, seed=1)
            assert len(patterns) == total  # all of them at W <= 12
            for stragglers in patterns:
                alive = sorted(set(range(W)) - set(stragglers.tolist()))
                a = code.decode(arrivals(code, alive, rng))
                assert a is not None, (name, W, S, stragglers)
                a = np.asarray(a).reshape(code.n_messages, W)
                assert np.all(a[:, list(stragglers)][-1] == 0)  # nothing from a straggler
                np.testing.assert_allclose(code.combined(a), 1.0, rtol=0, atol=1e-9)
                checked += 1
    assert checked >= 12  # at least one pattern per W


@pytest.mark.parametrize("name, W, S", [c for c in exact_cases() if c[2] > 0 and c[1] <= 9])
def test_fewer_replies_than_needed_give_none(name, W, S):
    code = codes.build(name, n_workers=W, n_stragglers=S, seed=3)
    rng = np.random.default_rng(W * 100 + S)
    one = code.n_messages == 1
    if name in ("frc", "partial-frc", "bcc"):
        # every holder of one partition (a whole group or batch) missing: no decode, however
        # many others replied
        coded = code.message_matrices[-1]
        holders = np.flatnonzero(coded[:, np.flatnonzero(coded[0])[0]])
        rest = sorted(set(range(W)) - set(holders.tolist()))
        assert code.decode(arrivals(code, rest, rng)) is None
    elif name == "uncoded":
        assert code.decode(list(range(W - 1))) is None
    else:
        need = W - getattr(code, "design_stragglers", S)
        for few in itertools.islice(itertools.combinations(range(W), need - 1), 50):
            assert code.decode(arrivals(code, few, rng)) is None
    if not one:
        # every coded message but one private message missing
        seq = [(i, 0) for i in range(1, W)] + [(i, 1) for i in range(W)]
        assert code.decode(seq) is None


def test_frc_decodes_as_soon_as_every_group_has_replied():
    code = codes.build("frc", n_workers=6, n_stragglers=2)
    assert code.load().tolist() == [0.5] * 6
    assert code.decode([0]) is None
    assert code.decode([0, 1, 2]) is None  # one group only
    a = code.decode([1, 0, 4])
    np.testing.assert_array_equal(a, [0, 1, 0, 0, 1, 0])  # first reply of each group, 2 of W-S=4
    np.testing.assert_array_equal(code.decode([1, 0, 4, 3, 5]), a)  # later replies ignored


def test_cyclic_codes_need_w_minus_s_and_hold_a_cyclic_window():
    for name in ("cyclic", "cyclic-mds"):
        code = codes.build(name, n_workers=7, n_stragglers=2)
        for i in range(7):
            assert sorted(code.partitions_of(i).tolist()) == sorted((i + np.arange(3)) % 7)
        assert code.decode([0, 1, 2, 3]) is None
        assert code.decode([0, 1, 2, 3, 4]) is not None


def test_cyclic_mds_with_even_w_minus_s_is_built_for_one_more_straggler():
    code = codes.build("cyclic-mds", n_workers=8, n_stragglers=2)  # W - S = 6, even
    assert code.design_stragglers == 3
    assert set(np.count_nonzero(code.B, axis=1)) == {4}
    a = code.decode([7, 0, 3, 5, 2])  # W - 3 replies suffice
    np.testing.assert_allclose(a @ code.B, 1.0, atol=1e-12)
    odd = codes.build("cyclic-mds", n_workers=9, n_stragglers=2)
    assert odd.design_stragglers == 2 and set(np.count_nonzero(odd.B, axis=1)) == {3}


def test_codes_are_deterministic_from_their_seed():
    for name in ("cyclic", "expander", "sgc", "bcc", "partial-cyclic"):
        one = codes.build(name, n_workers=10, n_stragglers=1, seed=5)
        two = codes.build(name, n_workers=10, n_stragglers=1, seed=5)
        other = codes.build(name, n_workers=10, n_stragglers=1, seed=6)
        np.testing.assert_array_equal(one.B, two.B)
        assert not np.array_equal(one.B, other.B), name


def test_multi_message_codes_expose_their_messages():
    for name, W, S in [("partial-frc", 6, 1), ("partial-cyclic", 5, 2)]:
        code = codes.build(name, n_workers=W, n_stragglers=S, pieces=S + 3)
        assert code.n_messages == 2 and len(code.message_matrices) == 2
        private, coded = code.message_matrices
        np.testing.assert_array_equal(private + coded, code.B)
        assert code.n_partitions == W * (S + 3 - S)
        assert (np.count_nonzero(private, axis=1) == 2).all()  # P - S - 1 private pieces
        assert (np.count_nonzero(private, axis=0) <= 1).all()  # held by one worker only
        assert (np.count_nonzero(coded, axis=1) == S + 1).all()
        np.testing.assert_allclose(code.load(), (S + 3) / code.n_partitions)
        assert code.slowdown_tolerated() == pytest.approx((S + 3) / 2)
        seq = [(i, 0) for i in range(W)] + [(i, 1) for i in range(S, W)]
        a = code.decode(seq + seq)  # repeats are ignored
        assert a.shape == (2, W)
        np.testing.assert_array_equal(a[0], 1.0)
        np.testing.assert_allclose(code.combined(a), 1.0, atol=1e-12)
    single = codes.build("frc", n_workers=4, n_stragglers=1)
    assert single.n_messages == 1 and len(single.message_matrices) == 1
    assert single.message_matrices[0] is single.B


@pytest.mark.parametrize("name", ["frc", "cyclic", "cyclic-mds", "approx", "expander", "sgc", "bcc",
                                  "partial-cyclic"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_decode_is_consistent_on_prefixes_and_ignores_repeats(name, data):
    W, S = 6, data.draw(st.sampled_from([0, 1, 2]))
    code = codes.build(name, n_workers=W, n_stragglers=S, seed=1)
    order = data.draw(st.permutations(range(W)))
    repeats = data.draw(st.lists(st.integers(0, W - 1), max_size=4))
    if code.n_messages == 1:
        seq = list(order) + repeats
    else:
        seq = [(i, 0) for i in range(W)] + [(i, 1) for i in order] + [(i, 1) for i in repeats]
    full = code.decode(seq)
    assert full is not None  # every worker replied
    first = next(m for m in range(len(seq) + 1) if code.decode(seq[:m]) is not None)
    for m in range(first, len(seq) + 1):
        np.testing.assert_array_equal(code.decode(seq[:m]), full)
    with_repeats = [x for item in seq for x in (item, item)]
    np.testing.assert_array_equal(code.decode(with_repeats), full)


@pytest.mark.parametrize("name, W, S, options, message", [
    ("frc", 5, 1, {}, "S\\+1 to divide W"),
    ("approx", 7, 2, {}, "S\\+1 to divide W"),
    ("partial-frc", 10, 3, {}, "S\\+1 to divide W"),
    ("cyclic", 4, 4, {}, "0 <= S < W"),
    ("frc", 4, 5, {}, "0 <= S < W"),
    ("cyclic-mds", 4, -1, {}, "0 <= S < W"),
    ("uncoded", -2, 0, {}, "W = -2 must be a positive integer"),
    ("cyclic", 0, 0, {}, "positive integer"),
    ("nonsense", 4, 1, {}, "unknown code 'nonsense'; known codes: approx"),
    ("approx", 6, 1, {"collect": 0}, "collect = 0 replies must be"),
    ("approx", 6, 1, {"collect": 7}, "between 1 and W = 6"),
    ("approx", 6, 1, {"rescale": "yes"}, "rescale"),
    ("expander", 5, 1, {"degree": 3}, "W\\*d even"),
    ("expander", 5, 1, {"degree": 5}, "1 <= d < W"),
    ("expander", 6, 1, {"decoder": "magic"}, "decoder 'magic'"),
    ("sgc", 6, 1, {"degree": 7}, "1 <= d <= W"),
    ("sgc", 6, 1, {"p": 1.0}, "0 <= p < 1"),
    ("bcc", 6, 1, {"batches": 0}, "1 <= b <= W"),
    ("partial-cyclic", 6, 2, {"pieces": 3}, "pieces P = 3 must be an integer >= S\\+2 = 4"),
    ("cyclic", 6, 1, {"collect": 3}, "takes no option collect"),
])
def test_bad_parameters_raise_value_error_naming_the_constraint(name, W, S, options, message):
    with pytest.raises(ValueError, match=message):
        codes.build(name, n_workers=W, n_stragglers=S, **options)


def test_bad_code_parameters_are_exit_2_errors_of_gdcode_run(tmp_path, capsys):
    with pytest.raises(OptionError, match="fractional repetition needs S\\+1 to divide W") as info:
        problem.check(RunOptions(scheme="frc", workers=5, stragglers=1, out=str(tmp_path)))
    assert info.value.option == "scheme"
    for argv, message in [
        (["--scheme", "frc", "--workers", "5", "--stragglers", "1"], "S+1 = 2 does not divide W = 5"),
        (["--scheme", "bogus", "--workers", "4"], "unknown code 'bogus'"),
        (["--scheme", "approx", "--workers", "6", "--stragglers", "1", "--collect", "9"],
         "--collect 9: must be between 1 and W = 6"),
    ]:
        code = cli.main(["run", *argv, "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
    assert not any(tmp_path.iterdir())  # nothing was launched or written


def test_partition_sizes_are_bound_after_building():
    code = codes.build("ignore", n_workers=4, n_stragglers=1)
    np.testing.assert_array_equal(code.partition_sizes, np.ones(4))
    np.testing.assert_array_equal(code.decode([3, 0, 1]), [4 / 3, 4 / 3, 0, 4 / 3])
    code.bind_partition_sizes([1, 2, 3, 4])
    np.testing.assert_array_equal(code.decode([3, 0, 1]), [10 / 7, 10 / 7, 0, 10 / 7])
    for bad in ([1, 2, 3], [1, 2, 3, 0], [1, 2, 3, np.inf], [[1, 2], [3, 4]]):
        with pytest.raises(ValueError, match="partition_sizes"):
            code.bind_partition_sizes(bad)
    assert "partition_sizes" not in codes.accepted_options("ignore")
    other = codes.build("partial-frc", n_workers=4, n_stragglers=1)
    other.bind_partition_sizes(np.arange(1, other.n_partitions + 1))
    assert other.partition_sizes.sum() == other.n_partitions * (other.n_partitions + 1) / 2


def test_a_plugin_class_that_is_no_gradient_code_is_refused(monkeypatch):
    monkeypatch.setattr(codes.CODES, "_loaded", {"fake:Code": lambda *a, **k: object()})
    with pytest.raises(ValueError, match="not a gdcode.codes.GradientCode"):
        codes.build("fake:Code", n_workers=2)


@pytest.mark.parametrize("name", ["cyclic", "cyclic-mds"])
def test_decoding_weights_are_solved_once_per_set_and_do_not_depend_on_arrival_order(name, monkeypatch):
    from gdcode.codes import base

    code = codes.build(name, 5, 2)
    calls = []
    solve = base.lstsq_weights
    monkeypatch.setattr(base, "lstsq_weights", lambda B, rows: calls.append(tuple(rows)) or solve(B, rows))
    a = code.decode([3, 0, 4])
    b = code.decode([4, 3, 0])
    np.testing.assert_array_equal(a, b)
    assert calls == [(0, 3, 4)]  # the second decode came from the cache
    a[:] = 0.0  # the caller's copy: the cache keeps its own
    np.testing.assert_array_equal(code.decode([0, 3, 4]), b)
    np.testing.assert_allclose(b @ code.B, np.ones(code.n_partitions), atol=1e-10)


def test_send_order_puts_one_member_of_every_group_first():
    frc = codes.build("frc", 6, 2)  # groups {0, 1, 2} and {3, 4, 5}
    assert frc.send_order().tolist() == [0, 3, 1, 4, 2, 5]
    assert codes.build("approx", 8, 1).send_order().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


@pytest.mark.parametrize("name", codes.names())
def test_send_order_is_a_permutation_and_keeps_distinct_workers_in_order(name):
    code = codes.build(name, 6, 1)
    order = code.send_order()
    assert sorted(order.tolist()) == list(range(6))
    support = np.concatenate([m != 0 for m in code.message_matrices], axis=1)
    if len({row.tobytes() for row in support}) == 6:  # no two workers hold the same partitions
        assert order.tolist() == list(range(6))


@pytest.mark.parametrize("chunk_bytes", [8, 200, 1 << 22])
def test_the_vectorised_decode_rules_agree_with_the_whole_table_in_any_chunks(monkeypatch, chunk_bytes):
    """kth_arrival and coverage_time work on chunks of rows; the answer is the whole table's."""
    from gdcode.codes import base

    monkeypatch.setattr(base, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(7)
    arrivals = rng.exponential(1.0, size=(37, 9))
    arrivals[3, 4] = np.inf  # a worker that never replies in one draw
    for k in (1, 5, 9):
        assert np.array_equal(codes.kth_arrival(arrivals, k), np.sort(arrivals, axis=1)[:, k - 1])
    # holder sets of different sizes, repeated partitions and one held by a single worker
    B = np.zeros((9, 6))
    for col, holders in enumerate([[0, 1, 2], [3], [4, 5, 6, 7, 8], [0, 1, 2], [2, 7], [3]]):
        B[holders, col] = rng.uniform(0.5, 2.0, size=len(holders))
    expected = np.max([arrivals[:, np.flatnonzero(B[:, c])].min(axis=1) for c in range(6)], axis=0)
    assert np.array_equal(codes.coverage_time(arrivals, B), expected)
    B[:, 5] = 0.0  # a partition nobody holds never arrives
    assert np.all(codes.coverage_time(arrivals, B) == np.inf)
    assert np.all(codes.coverage_time(arrivals, np.zeros((9, 0))) == -np.inf)
