"""Figures from run directories: ``gdcode plot RUN_DIR... [--x elapsed|iteration] [--y train_loss|...] --out FIG.png``.

``--kind metric`` (default) draws a metric against elapsed time or iteration, one line per
run, the legend from each run's scheme and the options that differ between the runs, on a
log scale when the metric spans a decade or more. ``--kind workers`` draws each run's
per-worker reply arrivals and statuses (used, ignored, late, cancelled) from
``workers.csv``; ``--kind iteration-times`` the distribution of iteration times per run.
The format follows the extension of ``--out``: .png, .svg or .pdf. A RUN_DIR that is not a
run directory but holds run directories stands for all of them.
"""

from __future__ import annotations

import argparse

from gdcode.errors import ConfigError

#: the Examples section of the help page
EXAMPLES = """\
gdcode plot results/run-a results/run-b --out loss.png
gdcode plot experiment-results/erasurehead/runs --x iteration --y test_auc --out auc.pdf
gdcode plot experiment-results/erasurehead/runs --band --out loss.png    # mean and range over seeds
gdcode plot results/run-a --kind workers --out workers.png
gdcode plot results --kind iteration-times --out times.svg
"""

KINDS = ("metric", "workers", "iteration-times")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or folders of them)")
    parser.add_argument("--out", required=True, help="figure file: .png, .svg or .pdf")
    parser.add_argument("--kind", choices=KINDS, default="metric", help="what to draw (default: metric)")
    parser.add_argument("--x", choices=("elapsed", "iteration"), default="elapsed",
                        help="x axis of --kind metric (default: elapsed)")
    parser.add_argument("--y", default="train_loss",
                        help="metric of --kind metric: train_loss, test_loss, test_accuracy, test_auc, "
                             "test_rmse, decode_seconds, gradient_error, ... (default: train_loss)")
    parser.add_argument("--title", default=None, help="figure title")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--log", dest="log", action="store_const", const=True, default=None,
                       help="log-scale y axis (default: when the values span a decade)")
    scale.add_argument("--linear", dest="log", action="store_const", const=False, help="linear y axis")
    parser.add_argument("--label", action="append", default=None, metavar="TEXT",
                        help="legend text of each run, in order (repeat once per run; with --band once per curve)")
    parser.add_argument("--band", nargs="?", const="range", default=None, choices=("range", "sd"),
                        help="--kind metric: runs that differ only in --seed are one curve, their mean, with a band "
                             "over the seeds: range (the default) from the lowest to the highest seed, sd one "
                             "standard deviation either side")


def find_runs(paths: list[str]) -> list:
    """The runs named by ``paths``: run directories, or folders holding them at any depth."""
    from gdcode.results import find_run_dirs, load_run

    try:
        return [load_run(d) for d in find_run_dirs(paths)]
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def main(args: argparse.Namespace) -> int:
    from gdcode import plot

    plot.require_matplotlib()
    plot.check_output(args.out)
    runs = find_runs(args.runs)
    if args.band is not None and args.kind != "metric":
        raise ConfigError(f"--band applies to --kind metric, not --kind {args.kind}")
    if args.label is not None and len(args.label) != len(runs) and args.band is None:
        raise ConfigError(f"--label given {len(args.label)} times for {len(runs)} runs; give one per run")
    if args.kind == "metric":
        plot.plot_metric(runs, args.out, x=args.x, y=args.y, title=args.title, log=args.log, labels=args.label,
                         band=args.band)
    elif args.kind == "workers":
        plot.plot_workers(runs, args.out, title=args.title, labels=args.label)
    else:
        plot.plot_iteration_times(runs, args.out, title=args.title, labels=args.label, log=args.log)
    print(f"wrote {args.out} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
    return 0
