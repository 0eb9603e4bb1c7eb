"""Decode diagnostics of a gradient code: ``gdcode codes NAME --workers W --stragglers S [--json]``.

Reports the load of each worker, whether the code is exact, and over the straggler patterns
(all of them when there are at most 10^4, else 10^4 of them: the W bursts of consecutive
workers plus seeded random ones) the worst residual max|a.B - 1|, the worst condition number
of the rows a decode uses, the largest decode weight and the relative error of the decoded
gradient when the workers' messages are rounded to float32. ``gdcode codes --list`` lists
the codes, plug-ins included (with the distribution each comes from). A plug-in code is named
by its entry point or its import path ``MODULE:CLASS``. Code options: ``--option key=value``
(repeatable), e.g. ``--option collect=5``.
"""

from __future__ import annotations

import argparse
import json

from gdcode.errors import ConfigError

#: the Examples section of the help page
EXAMPLES = """\
gdcode codes --list
gdcode codes cyclic-mds --workers 12 --stragglers 3
gdcode codes approx --workers 12 --stragglers 2 --option collect=5 --option rescale=true --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="code name (see --list) or a plug-in MODULE:CLASS")
    parser.add_argument("--list", action="store_true", help="list the codes with a one-line description")
    parser.add_argument("--workers", type=int, default=4, metavar="W", help="number of workers (default: 4)")
    parser.add_argument("--stragglers", type=int, default=0, metavar="S",
                        help="stragglers the code tolerates, 0 <= S < W (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the code and of the sampled patterns")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a code option, e.g. collect=5, degree=3, rescale=true (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` -> (key, value), the value read as int, float, bool or else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--option {text!r} is not of the form key=value")
    low = raw.strip().lower()
    if low in ("true", "yes", "on"):
        return key.strip(), True
    if low in ("false", "no", "off"):
        return key.strip(), False
    for kind in (int, float):
        try:
            return key.strip(), kind(raw)
        except ValueError:
            pass
    return key.strip(), raw


def main(args: argparse.Namespace) -> int:
    from gdcode import codes

    if args.list:
        print(list_codes())
        return 0
    if not args.name:
        raise ConfigError(f"give a code name (one of: {', '.join(codes.names())}) or --list")
    options = dict(parse_option(t) for t in args.option)
    try:
        code = codes.build(args.name, n_workers=args.workers, n_stragglers=args.stragglers,
                           seed=args.seed, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"code {args.name}: {exc}") from None
    report = codes.diagnose(code, seed=args.seed)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_report(report, codes.describe(args.name)))
    return 0


def list_codes() -> str:
    """``gdcode codes --list``: one line per code, its description, and where a plug-in comes from."""
    from gdcode import codes

    sources = dict(codes.CODES.plugins())
    rows = []
    for name in codes.names():
        try:
            text = codes.describe(name)
        except ValueError as exc:  # a plug-in that does not import
            text = f"cannot be used: {exc}"
        if name in sources:
            text = f"[plug-in, {sources[name]}] {text}"
        rows.append((name, text))
    width = max(len(n) for n, _ in rows)
    lines = [f"{name:<{width}}  {text}" for name, text in rows]
    lines.append("(a plug-in code may also be given by its import path MODULE:CLASS)")
    return "\n".join(lines)


def format_report(d, description: str = "") -> str:
    """The human-readable table of a :class:`gdcode.codes.Diagnosis`."""
    load = sorted(set(round(x, 6) for x in d.load))
    if len(load) == 1:
        load_text = f"{load[0]:.4g} of the data on every worker"
    else:
        load_text = f"{min(load):.4g} .. {max(load):.4g} (per worker: " + \
            ", ".join(f"{x:.3g}" for x in d.load) + ")"
    t = d.straggler_tolerance
    pattern_text = (f"{d.patterns_checked} straggler sets of {t} (all of them)" if d.all_patterns
                    else f"{d.patterns_checked} of {d.patterns_total} straggler sets of {t} "
                    "(the W bursts and a seeded sample)")
    if t != d.n_stragglers:
        pattern_text += f"; the code tolerates {t} stragglers, not S = {d.n_stragglers}"
    replies = d.replies_to_decode
    unit = "messages" if d.n_messages > 1 else "replies"
    rows = [
        ("code", f"{d.name}: {description}" if description else d.name),
        ("workers W", str(d.n_workers)),
        ("stragglers S", str(d.n_stragglers)),
        ("options", ", ".join(f"{k}={v}" for k, v in d.options.items()) or "defaults"),
        ("construction", ", ".join(f"{k}={_fact(v)}" for k, v in d.facts.items()) or "-"),
        ("partitions", str(d.n_partitions)),
        ("messages", f"{d.n_messages} per worker per iteration"),
        ("load", load_text),
        ("exact", "yes" if d.exact else "no (approximate)"),
        ("patterns", pattern_text),
        ("not decoded", f"{d.undecoded_patterns} patterns"),
        ("worst residual", f"{_num(d.worst_residual)}  max_j |(a.B)_j - 1|"),
        ("mean residual", _num(d.mean_residual)),
        ("mean rms error", f"{_num(d.mean_rms_error)}  ||a.B - 1|| / sqrt(partitions)"),
        ("worst condition", f"{_num(d.worst_condition)}  of the rows a decode uses"),
        ("max weight", f"{_num(d.max_weight)}  max |a_i|"),
        ("float32 error", f"{_num(d.float32_error)}  relative, messages rounded to float32"),
        ("decodes after", f"{replies['min']} .. {replies['max']} {unit} (mean {replies['mean']:.3g})"
         if replies else "-"),
        ("usable as exact", "yes" if d.usable_for_exact else
         ("no: " + d.refusal if d.refusal else "no (approximate code)")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _fact(v) -> str:
    return _num(v) if isinstance(v, float) else str(v)


def _num(x: float) -> str:
    if x != x:  # nan: nothing decoded
        return "-"
    if x == float("inf"):
        return "inf"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}"
