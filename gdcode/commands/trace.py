"""Per-worker, per-iteration time traces: convert public traces to gdcode's format, describe them.

gdcode trace import --format FORMAT IN OUT writes IN as a trace OUT of worker,iteration,seconds
rows (workers and iterations numbered from 1), the format that --delay trace:FILE,
--compute trace:FILE and gdcode simulate --fit trace:FILE read. Formats:

  csv  any CSV with a header: name the columns with --worker COL --iteration COL --seconds COL
       (a header name or a 1-based column number; without --iteration each worker's rows are
       numbered in file order)
  pai  Alibaba PAI mini-batch times (cluster-trace-gpu-v2020, mini-batch-time/job_N_norm.csv,
       header ,worker,gpu,time,batch_time_norm): the columns worker, time and batch_time_norm,
       overridable with the same options. The times are normalised to 0-1000 with no published
       unit; they are multiplied by 0.001 (1000 becomes 1 s), so ratios, coefficients of
       variation and correlations are the cluster's and the absolute scale is arbitrary: choose
       it with --mean SECONDS or --scale FACTOR.

Both number the distinct workers and the distinct iterations 1, 2, ... in sorted order (PAI's
iterations 1, 11, 21, ..., sampled every 10 iterations, become 1, 2, 3, ...); OUT records the
original worker names in comment lines. A worker's second row for the same iteration is an
error unless --duplicates says which value to keep (PAI's job 2 repeats one row).

gdcode trace stats FILE prints each worker's mean, coefficient of variation and slow spells
(runs of consecutive iterations slower than --slow FACTOR times the median worker of the
iteration), and the lag-1 autocorrelation and the correlation between workers.

Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math

from gdcode.errors import ConfigError

#: the Examples section of the help page
EXAMPLES = """\
gdcode trace import --format pai job_4_norm.csv job4.csv
gdcode trace import --format pai --mean 0.2 job_4_norm.csv job4.csv
gdcode trace import --format pai --duplicates first job_2_norm.csv job2.csv
gdcode trace import --format csv --worker host --iteration step --seconds step_time times.csv t.csv
gdcode trace stats job4.csv
gdcode simulate --fit trace:job4.csv
gdcode simulate --scheme frc --workers 10 --stragglers 1 --delay trace:job4.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gdcode.traces import DUPLICATES, FORMATS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    imp = sub.add_parser("import", help="convert a trace to gdcode's worker,iteration,seconds CSV",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Convert a per-worker, per-iteration time trace to gdcode's format.\n\nformats:\n"
                                     + "\n".join(f"  {k:<5} {v.description}" for k, v in FORMATS.items()),
                         epilog="Examples:\n  gdcode trace import --format pai job_4_norm.csv job4.csv\n"
                                "  gdcode trace import --format csv --worker host --iteration step --seconds "
                                "step_time times.csv t.csv")
    imp.add_argument("input", metavar="IN", help="the trace to convert (a CSV with a header)")
    imp.add_argument("output", metavar="OUT", help="the gdcode trace to write")
    imp.add_argument("--format", required=True, choices=list(FORMATS), help="the input's format")
    imp.add_argument("--worker", metavar="COL", help="column of the worker (pai: worker)")
    imp.add_argument("--iteration", metavar="COL", help="column of the iteration (pai: time; csv: file order)")
    imp.add_argument("--seconds", metavar="COL", help="column of the time (pai: batch_time_norm)")
    scale = imp.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, metavar="FACTOR",
                       help="multiply the times by FACTOR to get seconds (csv: 1, pai: 0.001)")
    scale.add_argument("--mean", type=float, metavar="SECONDS", help="scale the times so that their mean is SECONDS")
    imp.add_argument("--delimiter", default=",", help="the input's field separator: one character, or tab (default ,)")
    imp.add_argument("--duplicates", choices=DUPLICATES, default="error",
                     help="a worker's repeated row for one iteration: an error (default), or keep the first, "
                          "the last or their mean")
    imp.add_argument("--force", action="store_true", help="replace OUT if it exists")
    st = sub.add_parser("stats", help="per-worker mean, coefficient of variation, slow spells, correlations",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Each worker's mean, coefficient of variation and slow spells, and the lag-1 "
                                    "autocorrelation and\nthe correlation between workers, of a gdcode trace.",
                        epilog="Examples:\n  gdcode trace stats job4.csv\n"
                               "  gdcode trace stats job4.csv --slow 2 --json")
    st.add_argument("file", metavar="FILE", help="a gdcode trace (worker,iteration,seconds)")
    st.add_argument("--slow", type=float, default=1.5, metavar="FACTOR",
                    help="slow: more than FACTOR times the median worker of the iteration (default 1.5)")
    st.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    if args.action == "import":
        return _import(args)
    return _stats(args)


def _import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gdcode import traces

    if args.format == "csv" and not (args.worker and args.seconds):
        raise ConfigError("--format csv needs --worker COL and --seconds COL (and --iteration COL, else each "
                          "worker's rows are numbered in file order)")
    delimiter = "\t" if args.delimiter in ("tab", "\\t") else args.delimiter
    if len(delimiter) != 1:
        raise ConfigError(f"--delimiter {args.delimiter!r} must be one character (or tab)")
    if Path(args.output).exists() and not args.force:
        raise ConfigError(f"{args.output} exists; give --force to replace it")
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise ConfigError("IN and OUT are the same file")
    try:
        trace = traces.import_trace(args.input, args.format, worker=args.worker, iteration=args.iteration,
                                    seconds=args.seconds, scale=args.scale, mean=args.mean, delimiter=delimiter,
                                    duplicates=args.duplicates)
        traces.write_trace(args.output, trace)
    except ValueError as exc:
        hint = " (--duplicates first, last or mean keeps one value)" if "already appears" in str(exc) else ""
        raise ConfigError(_flags(str(exc)) + hint) from None
    skipped = f", {trace.skipped} rows without a time skipped" if trace.skipped else ""
    print(f"wrote {args.output}: {len(trace.rows)} rows, {trace.n_workers} workers, {trace.n_iterations} iterations "
          f"(times multiplied by {trace.scale:.6g}){skipped}")
    return 0


def _flags(message: str) -> str:
    """A library message in the command's terms."""
    for words, flag in (("a scale or a mean", "--scale or --mean"), ("the scale", "--scale"), ("the mean", "--mean")):
        if message.startswith(f"give {words}") or message.startswith(words):
            return message.replace(words, flag, 1)
    return message


def _stats(args: argparse.Namespace) -> int:
    from gdcode import delays, traces

    if not (math.isfinite(args.slow) and args.slow > 0):
        raise ConfigError(f"--slow {args.slow} must be a finite number > 0")
    try:
        series = traces.Series.from_table(delays.read_trace(args.file))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out = traces.stats(series, slow_factor=args.slow)
    out["file"] = args.file
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"trace {args.file}: {out['workers']} workers, {out['iterations']} iterations, {out['values']} values")
    print(f"  all workers: mean {out['mean']:.4g} s, coefficient of variation {out['cv']:.3f}; slow (above "
          f"{args.slow:g} x the {out['reference']}) {100 * out['slow_fraction']:.1f}% of values, "
          f"{out['slow_spells']} spells, mean length {out['mean_spell']:.3g} iterations")
    lengths = list(out["spell_lengths"].items())
    if lengths:
        shown = ", ".join(f"{k}: {v}" for k, v in lengths[:12])
        more = f", ... ({len(lengths) - 12} more lengths, the longest {lengths[-1][0]})" if len(lengths) > 12 else ""
        print(f"  slow spells by length (length: count): {shown}{more}")
    print(f"  {'worker':>6} {'values':>7} {'mean s':>10} {'CV':>7} {'slow %':>7} {'spells':>7} {'mean len':>9} "
          f"{'max len':>8} {'lag-1 r':>8}")
    for w, v in out["per_worker"].items():
        r = "" if v["lag1_r"] is None else f"{v['lag1_r']:.3f}"
        print(f"  {w:>6} {v['values']:>7} {v['mean']:>10.4g} {v['cv']:>7.3f} {100 * v['slow_fraction']:>7.1f} "
              f"{v['slow_spells']:>7} {v['mean_spell']:>9.3g} {v['max_spell']:>8} {r:>8}")
    ac, cc = out["autocorrelation"], out["cross_correlation"]
    if ac["pairs"]:
        print(f"  lag-1 autocorrelation (each worker about its own mean): r = {ac['r']:.3f} over {ac['pairs']} "
              f"pairs, z = {ac['z']:.2f}, p = {ac['p_value']:.3g}")
    if cc.get("pairs"):
        print(f"  correlation between workers in the same iteration: mean r = {cc['mean_r']:.3f} over {cc['pairs']} "
              f"pairs, z = {cc['z']:.2f}, p = {cc['p_value']:.3g}; groups of {cc['group_size']}: within "
              f"{cc['within_r']:.3f}, between {cc['between_r']:.3f}")
    return 0
