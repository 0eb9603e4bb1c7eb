"""Decode diagnostics, the exact-use check and the ``gdcode codes`` command (no MPI)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gdcode import cli, codes, problem
from gdcode.codes import diagnostics
from gdcode.codes.diagnostics import straggler_patterns
from gdcode.errors import OptionError
from gdcode.options import RunOptions

KEYS = {"name", "n_workers", "n_stragglers", "exact", "load", "worst_residual", "worst_condition",
        "max_weight", "float32_error", "patterns_checked", "usable_for_exact"}


def test_every_pattern_when_few_else_bursts_and_a_seeded_sample():
    pats, total = straggler_patterns(8, 3)
    assert total == 56 and len(pats) == 56 and len({tuple(p) for p in pats}) == 56
    pats, total = straggler_patterns(30, 4, max_patterns=500, seed=3)
    assert total == math.comb(30, 4) and pats.shape == (500, 4)
    rows = {tuple(p) for p in pats}
    assert len(rows) == 500 and all(list(p) == sorted(p) for p in rows)
    assert all(tuple(sorted((i + np.arange(4)) % 30)) in rows for i in range(30))  # every burst
    np.testing.assert_array_equal(pats, straggler_patterns(30, 4, max_patterns=500, seed=3)[0])
    assert not np.array_equal(pats, straggler_patterns(30, 4, max_patterns=500, seed=4)[0])


def test_diagnose_frc_exact_without_rounding_and_early():
    d = codes.diagnose(codes.build("frc", n_workers=12, n_stragglers=2))
    assert d.exact and d.usable_for_exact and d.refusal is None
    assert d.patterns_checked == 66 and d.all_patterns and d.undecoded_patterns == 0
    assert d.worst_residual == 0.0 and d.worst_condition == 1.0 and d.max_weight == 1.0
    assert d.load == [0.25] * 12
    assert d.replies_to_decode["min"] == 4 and d.replies_to_decode["max"] <= 10  # before W-S
    assert 0 < d.float32_error < 1e-6


def test_cyclic_mds_is_better_conditioned_than_random_cyclic():
    for W, S in [(12, 3), (15, 4)]:
        rnd = codes.diagnose(codes.build("cyclic", n_workers=W, n_stragglers=S))
        mds = codes.diagnose(codes.build("cyclic-mds", n_workers=W, n_stragglers=S))
        assert mds.worst_residual < 1e-12 and rnd.worst_residual < 1e-9
        assert mds.worst_condition < rnd.worst_condition / 10
        assert mds.max_weight < rnd.max_weight
        assert mds.float32_error < rnd.float32_error
        assert rnd.replies_to_decode == {"min": W - S, "mean": W - S, "max": W - S}


def test_diagnose_two_message_and_approximate_codes():
    d = codes.diagnose(codes.build("partial-frc", n_workers=6, n_stragglers=1))
    assert d.n_messages == 2 and d.worst_residual == 0.0 and d.usable_for_exact
    # every private message, then at least one coded message per group (3 groups of 2)
    assert 6 + 3 <= d.replies_to_decode["min"] <= d.replies_to_decode["max"] <= 6 + 5
    e = codes.diagnose(codes.build("approx", n_workers=12, n_stragglers=2, collect=3))
    assert not e.exact and not e.usable_for_exact and e.refusal is None
    # one of the 4 groups of 3 is always missing after 3 replies, often two
    assert e.worst_residual == 1.0 and 0.5 <= e.mean_rms_error < 1
    b = codes.diagnose(codes.build("bcc", n_workers=9, n_stragglers=2, batches=5))
    assert b.undecoded_patterns > 0 and b.refusal is None  # not exact: it waits for coverage


def test_uncoded_tolerates_no_straggler_whatever_s():
    d = codes.diagnose(codes.build("uncoded", n_workers=5, n_stragglers=2))
    assert d.straggler_tolerance == 0 and d.patterns_checked == 1 and d.usable_for_exact


def test_cyclic_mds_bursts_at_large_w_are_refused_for_exact_use():
    code = codes.build("cyclic-mds", n_workers=60, n_stragglers=13)
    d = codes.diagnose(code, max_patterns=60)  # only the 60 bursts, the worst case
    assert d.worst_residual > 1e-6 and not d.usable_for_exact
    assert "refused for exact use" in d.refusal and "frc" in d.refusal


def test_check_usable_refuses_an_inaccurate_exact_code(monkeypatch, tmp_path, capsys):
    code = codes.build("cyclic", n_workers=9, n_stragglers=2)
    codes.check_usable(code)  # accurate: passes
    codes.check_usable(codes.build("approx", n_workers=6, n_stragglers=1, collect=2))
    monkeypatch.setattr(diagnostics, "EXACT_RESIDUAL_LIMIT", 1e-300)
    monkeypatch.setattr(diagnostics, "_USABLE_CACHE", {})
    with pytest.raises(ValueError, match=r"code 'cyclic' at W = 9, S = 2 has a worst decode "
                                         r"residual .* refused for exact use; use cyclic-mds .* or frc"):
        codes.check_usable(code)
    codes.check_usable(codes.build("frc", n_workers=9, n_stragglers=2))  # 0/1 weights: no check
    with pytest.raises(OptionError, match="code 'cyclic' at W = 9") as info:
        problem.check(RunOptions(scheme="cyclic", workers=9, stragglers=2, out=str(tmp_path)))
    assert info.value.option == "scheme"
    assert cli.main(["run", "--scheme", "cyclic-mds", "--workers", "9", "--stragglers", "2",
                     "--out", str(tmp_path)]) == 2
    assert "refused for exact use; use frc" in capsys.readouterr().err


def test_check_usable_caches_its_answer(monkeypatch):
    monkeypatch.setattr(diagnostics, "_USABLE_CACHE", {})
    calls = []
    real = diagnostics.worst_residual
    monkeypatch.setattr(diagnostics, "worst_residual", lambda code: calls.append(1) or real(code))
    for _ in range(3):
        codes.check_usable(codes.build("cyclic-mds", n_workers=10, n_stragglers=3))
    assert len(calls) == 1


def test_gdcode_codes_json(capsys):
    assert cli.main(["codes", "approx", "--workers", "6", "--stragglers", "1",
                     "--option", "collect=3", "--option", "rescale=true", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert KEYS <= set(out)
    assert out["name"] == "approx" and out["options"] == {"collect": 3, "rescale": True}
    assert out["exact"] is False and out["usable_for_exact"] is False
    assert out["patterns_checked"] == 6 and len(out["load"]) == 6


def test_gdcode_codes_table_and_list(capsys):
    assert cli.main(["codes", "cyclic-mds", "--workers", "10", "--stragglers", "3"]) == 0
    out = capsys.readouterr().out
    for label in ("load", "worst residual", "worst condition", "max weight", "float32 error",
                  "usable as exact  yes", "120 straggler sets of 3 (all of them)"):
        assert label in out, label
    assert cli.main(["codes", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in codes.names())


@pytest.mark.parametrize("argv, message", [
    (["frc", "--workers", "5", "--stragglers", "1"], "S+1 = 2 does not divide W = 5"),
    (["cyclic", "--workers", "4", "--stragglers", "4"], "0 <= S < W"),
    (["cyclic", "--workers", "4", "--stragglers", "-1"], "0 <= S < W"),
    (["nope"], "unknown code 'nope'"),
    (["sgc", "--option", "degree"], "not of the form key=value"),
    (["sgc", "--option", "colour=red"], "takes no option colour"),
    ([], "give a code name"),
])
def test_gdcode_codes_bad_input_exits_2(argv, message, capsys):
    assert cli.main(["codes", *argv]) == 2
    assert message in capsys.readouterr().err
