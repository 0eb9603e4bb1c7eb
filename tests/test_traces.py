"""Traces: importing public formats into gdcode's worker,iteration,seconds CSV, their statistics."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from gdcode import delays, traces
from gdcode.cli import main as cli_main

# a small file in the layout of Alibaba's cluster-trace-gpu-v2020/mini-batch-time/job_N_norm.csv:
# a row index, the worker (0-based), the GPU request, the iteration (every 10th), the time normalised to 0-1000
PAI = """,worker,gpu,time,batch_time_norm
0,0,50,1,309
1,1,50,1,59
2,2,50,1,57
3,0,50,11,276
4,1,50,11,66
5,2,50,11,
6,0,50,21,276
7,1,50,21,58
8,2,50,21,58
9,0,50,31,320
10,1,50,31,60
11,2,50,31,89
"""


def _cli(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli_main(argv)
    return code, buf.getvalue()


def test_pai_import_scales_renumbers_and_replays(tmp_path):
    src, out = tmp_path / "job_4_norm.csv", tmp_path / "job4.csv"
    src.write_text(PAI)
    trace = traces.import_trace(str(src), "pai")
    assert trace.scale == 0.001 and trace.skipped == 1 and trace.n_workers == 3 and trace.n_iterations == 4
    assert trace.worker_names == {1: "0", 2: "1", 3: "2"}
    traces.write_trace(str(out), trace)
    text = out.read_text()
    assert text.startswith("worker,iteration,seconds\n# imported (format pai) from job_4_norm.csv")
    assert "# worker 1 = 0" in text and str(tmp_path) not in text
    table = delays.read_trace(str(out))
    assert sorted(table) == [1, 2, 3]
    assert table[1][0] == {1: 0.309, 2: 0.276, 3: 0.276, 4: 0.32}  # iterations 1, 11, 21, 31 -> 1..4
    assert table[3][0] == {1: 0.057, 3: 0.058, 4: 0.089}  # the empty cell is left out
    model = delays.parse(f"trace:{out}", n_workers=3)
    assert [model.draw(0, t) for t in (1, 2, 3, 4, 5)] == [0.309, 0.276, 0.276, 0.32, 0.309]
    # the column map and the scale are overridable
    again = traces.import_trace(str(src), "pai", seconds="batch_time_norm", iteration="4", mean=2.0)
    assert np.mean([r[2] for r in again.rows]) == pytest.approx(2.0)
    assert [r[:2] for r in again.rows] == [r[:2] for r in trace.rows]


def test_a_gdcode_trace_round_trips_through_the_generic_import(tmp_path):
    model = delays.parse("markov:0.1,5,0.1,0.3", seed=2)
    rows = [(w + 1, t, model.draw(w, t)) for w in range(4) for t in range(1, 201)]
    first = tmp_path / "a.csv"
    first.write_text("worker,iteration,seconds\n" + "".join(f"{w},{t},{v!r}\n" for w, t, v in rows))
    trace = traces.import_trace(str(first), "csv", worker="worker", iteration="iteration", seconds="seconds")
    assert trace.rows == sorted(rows)  # exactly the same numbers
    second = tmp_path / "b.csv"
    traces.write_trace(str(second), trace)
    table = delays.read_trace(str(second))
    assert [(w, t, v) for w in sorted(table) for t, v in sorted(table[w][0].items())] == sorted(rows)
    # and once more, from the written file (comments and all)
    third = traces.import_trace(str(second), "csv", worker="1", iteration="2", seconds="3")
    assert third.rows == sorted(rows)


def test_repeated_rows_are_an_error_unless_told_which_to_keep(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("w,i,s\n1,1,1\n1,2,2\n1,2,4\n2,1,3\n")
    cols = {"worker": "w", "iteration": "i", "seconds": "s"}
    with pytest.raises(ValueError, match="line 4.*already appears on line 3"):
        traces.import_trace(str(f), "csv", **cols)
    got = {d: traces.import_trace(str(f), "csv", duplicates=d, **cols).rows[1][2] for d in ("first", "last", "mean")}
    assert got == {"first": 2.0, "last": 4.0, "mean": 3.0}
    with pytest.raises(ValueError, match="duplicates must be"):
        traces.import_trace(str(f), "csv", duplicates="sum", **cols)
    code, _ = _cli(["trace", "import", "--format", "csv", "--worker", "w", "--iteration", "i", "--seconds", "s",
                    "--duplicates", "mean", str(f), str(tmp_path / "o.csv")])
    assert code == 0 and delays.read_trace(str(tmp_path / "o.csv"))[1][0] == {1: 1.0, 2: 3.0}


def test_the_generic_csv_reads_names_numbers_text_workers_and_file_order(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("host;step;secs\nb;100;1.5\na;100;2\nb;200;1\na;200;3\nc;200;0.5\n")
    tr = traces.import_trace(str(f), "csv", worker="host", iteration="step", seconds="secs", delimiter=";")
    assert tr.worker_names == {1: "a", 2: "b", 3: "c"}
    assert tr.rows == [(1, 1, 2.0), (1, 2, 3.0), (2, 1, 1.5), (2, 2, 1.0), (3, 2, 0.5)]
    by_order = traces.import_trace(str(f), "csv", worker="1", seconds="3", scale=2.0, delimiter=";")
    assert by_order.columns["iteration"] is None
    assert by_order.rows == [(1, 1, 4.0), (1, 2, 6.0), (2, 1, 3.0), (2, 2, 2.0), (3, 1, 1.0)]
    numeric = tmp_path / "n.csv"  # numeric ids sort as numbers: 2 before 10
    numeric.write_text("w,it,s\n10,3,1\n2,3,2\n10,20,3\n2,20,4\n")
    tr = traces.import_trace(str(numeric), "csv", worker="w", iteration="it", seconds="s")
    assert tr.worker_names == {1: "2", 2: "10"} and tr.rows == [(1, 1, 2.0), (1, 2, 4.0), (2, 1, 1.0), (2, 2, 3.0)]


@pytest.mark.parametrize(("text", "kwargs", "message"), [
    ("w,i,s\n1,1,1\n", {"fmt": "parquet"}, "unknown trace format"),
    ("w,i,s\n1,1,1\n", {"worker": "host", "seconds": "s"}, "no column 'host'"),
    ("w,i,s\n1,1,1\n", {"worker": "w"}, "needs the seconds column"),
    ("w,i,s\n1,1,-1\n", {"worker": "w", "iteration": "i", "seconds": "s"}, "line 2.*>= 0"),
    ("w,i,s\n1,1,x\n", {"worker": "w", "iteration": "i", "seconds": "s"}, "line 2.*not a number"),
    ("w,i,s\n1,1,1\n1,1,2\n", {"worker": "w", "iteration": "i", "seconds": "s"}, "line 3.*already appears on line 2"),
    ("", {"worker": "w", "seconds": "s"}, "empty"),
    ("w,i,s\n1,1,\n", {"worker": "w", "seconds": "s"}, "no rows with a time"),
    ("w,i,s\n1,1\n", {"worker": "w", "seconds": "s"}, "line 2: 2 fields"),
    ("w,i,s\n1,1,1\n", {"worker": "w", "seconds": "s", "scale": 1.0, "mean": 1.0}, "not both"),
    ("w,i,s\n1,1,1\n", {"worker": "w", "seconds": "s", "scale": 0.0}, "scale must be"),
])
def test_bad_input_is_a_value_error_in_library_terms(tmp_path, text, kwargs, message):
    f = tmp_path / "t.csv"
    f.write_text(text)
    kwargs = {"fmt": "csv", **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        traces.import_trace(str(f), **kwargs)
    assert "--" not in str(info.value)
    with pytest.raises(ValueError, match="cannot read"):
        traces.import_trace(str(tmp_path / "missing.csv"), "pai")


def _series(values, censored=None) -> traces.Series:
    values = np.asarray(values, float)
    return traces.Series(workers=list(range(1, values.shape[1] + 1)), iterations=np.arange(1, values.shape[0] + 1),
                         values=values, censored=censored if censored is not None else np.zeros(values.shape, bool))


def test_stats_give_means_coefficients_of_variation_and_slow_spells():
    x = np.ones((8, 4))
    x[:, 1] = 1.2
    x[[1, 2, 3, 6], 3] = 5.0  # worker 4 slow in iterations 2-4 and 7
    x[5, 2] = np.nan  # worker 3 missing at iteration 6
    out = traces.stats(_series(x))
    w4, w3 = out["per_worker"][4], out["per_worker"][3]
    assert (w4["slow_spells"], w4["mean_spell"], w4["max_spell"]) == (2, 2.0, 3)
    assert w4["mean"] == pytest.approx(x[:, 3].mean()) and w4["cv"] == pytest.approx(x[:, 3].std() / x[:, 3].mean())
    assert w4["slow_fraction"] == pytest.approx(0.5) and w3["values"] == 7 and w3["slow_spells"] == 0
    assert out["per_worker"][2]["slow_fraction"] == 0  # 1.2 is not 1.5 times the median
    assert out["slow_spells"] == 2 and out["spell_lengths"] == {"1": 1, "3": 1}
    assert traces.slow_spells(np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], bool)) == [2, 1, 3]
    with pytest.raises(ValueError, match="slow factor"):
        traces.stats(_series(x), slow_factor=0)


def test_correlation_statistics_match_the_models():
    markov = delays.parse("markov:0.1,6,0.05,0.25", seed=1)
    x = markov.sample_bulk(np.random.default_rng(0), np.zeros((4000, 8)))
    ac = traces.autocorrelation(_series(x))
    assert ac["r"] == pytest.approx(markov.autocorrelation(1), abs=0.03) and ac["p_value"] < 1e-6
    assert ac["pairs"] == 8 * 3999 and set(ac["per_worker"]) == set(range(1, 9))
    cc = traces.cross_correlation(_series(x))
    assert abs(cc["mean_r"]) < 0.02 and cc["p_value"] > 0.001

    corr = delays.parse("correlated:0.2,1.2,0.5,4", seed=1)
    y = corr.sample_bulk(np.random.default_rng(0), np.zeros((4000, 8)))
    cc = traces.cross_correlation(_series(y))
    assert cc["group_size"] == 4 and cc["within_r"] == pytest.approx(0.5, abs=0.03) and abs(cc["between_r"]) < 0.02
    assert cc["p_value"] < 1e-6 and cc["spec"].startswith("correlated:") and cc["spec"].endswith(",4")
    rebuilt = delays.parse(cc["spec"])
    assert rebuilt.mean() == pytest.approx(0.2, rel=0.05) and rebuilt.cv == pytest.approx(1.2, rel=0.05)
    assert traces.autocorrelation(_series(y))["p_value"] > 0.001
    whole = delays.parse("correlated:0.2,1,0.5", seed=1).sample_bulk(np.random.default_rng(0), np.zeros((3000, 6)))
    cc = traces.cross_correlation(_series(whole))
    assert cc["group_size"] == 6 and cc["spec"].count(",") == 2  # GROUP 0: all workers
    assert delays.parse(cc["spec"]).rho == pytest.approx(0.5, abs=0.03)
    # missing values: pairs are counted over the iterations both workers have
    z = x.copy()
    z[::2, 0] = np.nan
    assert traces.autocorrelation(_series(z))["per_worker"][1]["pairs"] == 0
    assert traces.cross_correlation(_series(z))["pairs"] == 28


def test_series_from_rows_keeps_gaps_as_missing_iterations():
    s = traces.Series.from_rows([(1, 3, 0.5), (1, 5, 0.7), (2, 4, 0.1, True)])
    assert s.workers == [1, 2] and s.iterations.tolist() == [3, 4, 5]
    assert np.isnan(s.values[1, 0]) and s.values[1, 1] == 0.1 and s.censored[1, 1]
    sparse = traces.Series.from_rows([(1, 1, 0.5), (1, 1000, 0.7)])
    assert sparse.iterations.tolist() == [1, 1000]  # too sparse for a full grid


def test_the_trace_command_imports_and_describes(tmp_path):
    src, out = tmp_path / "job.csv", tmp_path / "out.csv"
    src.write_text(PAI)
    code, text = _cli(["trace", "import", "--format", "pai", str(src), str(out)])
    assert code == 0 and "11 rows, 3 workers, 4 iterations" in text and "1 rows without a time skipped" in text
    assert delays.read_trace(str(out))[1][0][4] == 0.32
    code, text = _cli(["trace", "stats", str(out), "--json"])
    stats = json.loads(text)
    assert code == 0 and stats["workers"] == 3 and stats["per_worker"]["1"]["slow_fraction"] == 1.0
    code, text = _cli(["trace", "stats", str(out)])
    assert code == 0 and "coefficient of variation" in text and "lag-1" in text


@pytest.mark.parametrize("argv", [
    ["trace", "import", "--format", "csv", "IN", "OUT"],  # no column map
    ["trace", "import", "--format", "pai", "IN", "EXISTS"],  # OUT exists
    ["trace", "import", "--format", "pai", "--mean", "-1", "IN", "OUT"],
    ["trace", "import", "--format", "pai", "--delimiter", ";;", "IN", "OUT"],
    ["trace", "import", "--format", "pai", "--seconds", "nope", "IN", "OUT"],
    ["trace", "stats", "MISSING"],
    ["trace", "stats", "IN", "--slow", "0"],
])
def test_the_trace_command_exits_2_on_bad_input(tmp_path, capsys, argv):
    (tmp_path / "IN").write_text(PAI)
    (tmp_path / "EXISTS").write_text("x")
    argv = [str(tmp_path / a) if a in ("IN", "OUT", "EXISTS", "MISSING") else a for a in argv]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gdcode trace: error: ") and len(err.strip().splitlines()) == 1
    if "--mean" in argv:
        assert "--mean must be" in err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        cli_main(["trace", "--help"])
    page = capsys.readouterr().out  # the examples are the page's epilog (commands/trace.py EXAMPLES)
    assert "Examples:" in page and "gdcode trace import" in page and "``" not in page and ":func:" not in page
