"""Figures from run directories (written here with the run writer, no MPI)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gdcode import plot
from gdcode.cli import main as cli_main
from gdcode.errors import ConfigError
from gdcode.results import RunWriter, load_run


def make_run(path, scheme="uncoded", stragglers=0, workers=3, iterations=6, delay="exp:0.1", losses=None,
             statuses=None):
    """A run directory as gdcode run writes it."""
    w = RunWriter(path)
    w.write_metadata({"options": {"mode": "coded", "scheme": scheme, "stragglers": stragglers, "workers": workers,
                                  "delay": delay, "collect": None, "lr": 0.5, "seed": 0}})
    losses = np.geomspace(1.0, 1e-3, iterations) if losses is None else losses
    elapsed = 0.0
    for t in range(1, iterations + 1):
        elapsed += 0.1 * t
        w.append_metrics({"iteration": t, "elapsed": elapsed, "train_loss": float(losses[t - 1]),
                          "test_accuracy": 0.5 + 0.05 * t})
        rows = []
        for k in range(1, workers + 1):
            status = statuses(t, k) if statuses else "used"
            rows.append((t, k, None if status == "cancelled" else 0.01 * t * k, status))
        w.append_workers(rows)
    w.write_summary({"status": "ok", "iterations": iterations, "elapsed": elapsed, "train_loss": float(losses[-1])})
    w.close()
    return load_run(path)


@pytest.fixture
def runs(tmp_path):
    a = make_run(tmp_path / "runs" / "a")
    b = make_run(tmp_path / "runs" / "b", scheme="ignore", stragglers=1, losses=np.linspace(0.7, 0.5, 6),
                 statuses=lambda t, k: ["used", "ignored", "cancelled"][k - 1] if t > 1 else "late")
    return [a, b]


@pytest.mark.parametrize("ext", ["png", "svg", "pdf"])
def test_metric_figure_in_each_format(runs, tmp_path, ext):
    out = tmp_path / f"fig.{ext}"
    fig = plot.plot_metric(runs, out)
    head = out.read_bytes()[:200]
    assert {"png": b"\x89PNG", "svg": b"<?xml", "pdf": b"%PDF"}[ext] in head
    ax = fig.axes[0]
    assert ax.get_xlabel() == "elapsed wall-clock time (s)" and ax.get_ylabel() == "training loss f(w)"
    assert ax.get_yscale() == "log"  # the loss spans three decades
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["uncoded", "ignore S=1"]


def test_axis_text_is_in_the_svg(runs, tmp_path):
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        plot.plot_metric(runs, tmp_path / "f.svg", x="iteration", y="test_accuracy")
    text = (tmp_path / "f.svg").read_text()
    assert "test accuracy (fraction)" in text and ">iteration<" in text


def test_linear_scale_when_the_metric_spans_less_than_a_decade(runs, tmp_path):
    fig = plot.plot_metric(runs, tmp_path / "f.png", y="test_accuracy")
    assert fig.axes[0].get_yscale() == "linear"
    assert plot.plot_metric(runs, tmp_path / "g.png", log=False).axes[0].get_yscale() == "linear"


def test_fractions_stay_on_a_linear_axis_however_far_they_rise():
    rising = np.array([0.06, 0.5, 0.97])  # an accuracy from chance level: more than a decade
    assert not plot._log_scale(rising, "test_accuracy") and not plot._log_scale(rising, "test_auc")
    assert plot._log_scale(rising, "train_loss")


def test_labels_name_what_differs(tmp_path):
    a = make_run(tmp_path / "a", workers=3)
    b = make_run(tmp_path / "b", workers=6)
    c = make_run(tmp_path / "c", workers=6)
    assert plot.run_labels([a, b]) == ["uncoded, W=3", "uncoded, W=6"]
    assert plot.run_labels([b, c]) == ["uncoded (b)", "uncoded (c)"]


def test_missing_metric_and_bad_format_are_config_errors(runs, tmp_path):
    with pytest.raises(ConfigError, match="no run has this metric; they have: .*train_loss"):
        plot.plot_metric(runs, tmp_path / "f.png", y="test_auc")
    with pytest.raises(ConfigError, match=r"\.png, \.svg, \.pdf"):
        plot.plot_metric(runs, tmp_path / "f.jpg")
    with pytest.raises(ConfigError, match="does not exist"):
        plot.plot_metric(runs, tmp_path / "nowhere" / "f.png")


def test_worker_table_and_heatmap(runs, tmp_path):
    its, arrival, status = plot.worker_table(runs[1])
    assert its.tolist() == list(range(1, 7))
    statuses = plot.WORKER_STATUSES
    assert [statuses[i] for i in status[1]] == ["used", "ignored", "cancelled"]
    assert [statuses[i] for i in status[0]] == ["late"] * 3
    assert np.isnan(arrival[1, 2]) and arrival[1, 1] == pytest.approx(0.04)
    fig = plot.plot_workers(runs, tmp_path / "w.png")
    assert len(fig.axes) >= 4 and any("cancelled 5" in ax.get_title() for ax in fig.axes)
    assert (tmp_path / "w.png").stat().st_size > 1000


def test_iteration_time_distribution(runs, tmp_path):
    np.testing.assert_allclose(plot.iteration_times(runs[0]), 0.1 * np.arange(1, 7))
    with_start = load_run(runs[0].path)
    with_start.metrics.insert(0, {"iteration": 0, "elapsed": 0.0, "train_loss": 1.0})  # as gdcode run writes
    np.testing.assert_allclose(plot.iteration_times(with_start), 0.1 * np.arange(1, 7))
    fig = plot.plot_iteration_times(runs, tmp_path / "t.png", extra={"sim: uncoded": np.full(10, 0.3)})
    ax = fig.axes[0]
    assert ax.get_ylabel() == "iteration time (s)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["uncoded", "ignore S=1", "sim: uncoded"]


def test_cli_plots_a_folder_of_runs(runs, tmp_path, capsys):
    out = tmp_path / "loss.png"
    assert cli_main(["plot", str(tmp_path / "runs"), "--out", str(out), "--x", "iteration"]) == 0
    assert out.exists() and "2 runs" in capsys.readouterr().out
    assert cli_main(["plot", str(runs[0].path), "--kind", "workers", "--out", str(tmp_path / "w.svg")]) == 0
    assert cli_main(["plot", str(runs[0].path), str(runs[1].path), "--kind", "iteration-times",
                     "--out", str(tmp_path / "t.pdf"), "--label", "A", "--label", "B"]) == 0


@pytest.mark.parametrize("argv", [["--out", "x.gif"], ["--y", "nothing", "--out", "f.png"],
                                  ["--label", "one", "--out", "f.png"]])
def test_cli_bad_input_exits_2(runs, tmp_path, argv, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["plot", str(runs[0].path), str(runs[1].path), *argv]) == 2
    assert "error" in capsys.readouterr().err
    assert cli_main(["plot", str(tmp_path / "none"), "--out", "f.png"]) == 2


def test_ranks_never_import_matplotlib():
    code = ("import sys, gdcode.runtime.coded, gdcode.runtime.session, gdcode.simulate, gdcode.cli; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def make_seeded(path, seed, scheme="uncoded", losses=None):
    """A run of one seed: its losses shifted by the seed, its iterations slower for higher seeds."""
    w = RunWriter(path)
    w.write_metadata({"options": {"mode": "coded", "scheme": scheme, "stragglers": 0, "workers": 3, "lr": 0.5,
                                  "seed": seed, "name": path.name, "out": str(path.parent)}})
    elapsed = 0.0
    for t in range(0, 9):
        elapsed += 0.1 * (1 + seed) * (t > 0)
        loss = (losses[t] if losses is not None else 1.0 / (t + 1)) + 0.01 * seed
        w.append_metrics({"iteration": t, "elapsed": elapsed, "train_loss": loss, "responders": 2 + t % 2})
    w.write_summary({"status": "ok", "iterations": 8})
    w.close()
    return load_run(path)


def test_band_over_seeds_is_one_curve_per_configuration(tmp_path, capsys):
    runs = [make_seeded(tmp_path / "runs" / f"{s}-seed{k}", k, scheme=s) for s in ("uncoded", "frc") for k in (0, 1, 2)]
    fig = plot.plot_metric(runs, tmp_path / "b.png", x="iteration", band="range")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["uncoded (3 seeds)", "frc (3 seeds)"]
    assert len(ax.lines) == 2 and len(ax.collections) == 2  # two means, two bands
    np.testing.assert_allclose(ax.lines[0].get_ydata(), 1.0 / np.arange(1, 10) + 0.01)  # the mean of 0, .01, .02
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(1.0 / 9) and band.max() == pytest.approx(1.02)  # lowest and highest seed
    # elapsed differs between seeds: interpolated over the range every seed covers
    fig = plot.plot_metric(runs, tmp_path / "e.png", x="elapsed", band="sd")
    xs = fig.axes[0].lines[0].get_xdata()
    assert xs[0] == 0 and xs[-1] == pytest.approx(0.8)  # seed 0 ends first
    grid, mean, low, high = plot.seed_band(runs[:3], "iteration", "train_loss", band="sd")
    np.testing.assert_allclose(high - mean, 0.01)  # sd of 0, .01, .02
    # from the command line, with a folder of runs
    assert cli_main(["plot", str(tmp_path / "runs"), "--band", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 5000 and "6 runs" in capsys.readouterr().out
    assert cli_main(["plot", str(tmp_path / "runs"), "--band", "--kind", "workers", "--out",
                     str(tmp_path / "w.png")]) == 2


def test_coinciding_curves_stay_distinguishable_and_iterations_are_integers(tmp_path):
    same = np.geomspace(1, 0.1, 9)
    runs = [make_seeded(tmp_path / s, 0, scheme=s, losses=same) for s in ("uncoded", "frc", "cyclic")]
    fig = plot.plot_metric(runs, tmp_path / "f.png", x="iteration")
    lines = fig.axes[0].lines
    np.testing.assert_array_equal(lines[0].get_ydata(), lines[1].get_ydata())  # they coincide...
    styles = {(ln.get_linestyle(), ln.get_marker()) for ln in lines}
    assert len(styles) == 3  # ...but each has its own dash and marker
    assert len({str(ln.get_markevery()) for ln in lines}) == 3  # at points of its own
    ticks = fig.axes[0].get_xticks()
    assert np.allclose(ticks, np.round(ticks))
    fig = plot.plot_metric(runs, tmp_path / "r.png", x="iteration", y="responders")
    assert np.allclose(fig.axes[0].get_yticks(), np.round(fig.axes[0].get_yticks()))


def test_plot_without_matplotlib_names_the_extra(runs, tmp_path):
    code = ("import sys\n"
            "for name in ('matplotlib', 'matplotlib.pyplot'):\n    sys.modules[name] = None  # not installed\n"
            "from gdcode.cli import main\n"
            "sys.exit(main(['plot', sys.argv[1], '--out', sys.argv[2]]))\n")
    res = subprocess.run([sys.executable, "-c", code, str(runs[0].path), str(tmp_path / "f.png")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "gdcode[plot]" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "f.png").exists()
