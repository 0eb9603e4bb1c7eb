"""``gdcode bench simulator``: the simulator at W=1000, against the closed forms.

For uncoded, frc (S=4), cyclic-mds (S=50) and approx (S=4, collect W-S) at W=1000 workers
under ``exp:0.1`` pauses scaled by load (Lee et al.'s model, where the order statistics have
closed forms), 20 000 draws each: the seconds :func:`gdcode.simulate.simulate` takes (building
the code, drawing the pauses, decoding every draw), the simulated mean iteration time and the
closed form's (:func:`gdcode.simulate.closed_form_mean`; approx has none, so 200 of its draws
are checked against the code's own ``decode`` instead). Each row is the median and range over
``--repeat`` rounds, measured in one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

SCHEMES = (("uncoded", 0), ("frc", 4), ("cyclic-mds", 50), ("approx", 4))
#: the targets: seconds per scheme and the largest relative gap to the closed form
TARGET_SECONDS, TARGET_GAP = 1.0, 0.02


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1000, help="W (default 1000)")
    parser.add_argument("--draws", type=int, default=20000, help="draws per scheme (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")


def measure(name: str, workers: int, stragglers: int, draws: int, seed: int) -> dict:
    """One scheme, once: seconds, simulated mean, closed form or the check against ``decode``."""
    from gdcode import codes, delays, simulate

    t0 = time.perf_counter()
    code = codes.build(name, workers, stragglers)
    delay = delays.parse("exp:0.1", seed=seed, scale_with_load=True)
    sim = simulate.simulate(code, delay, draws=draws)
    seconds = time.perf_counter() - t0
    closed = simulate.closed_form_mean(code, delay)
    row: dict[str, Any] = {"scheme": name, "workers": workers, "stragglers": stragglers, "draws": draws,
                           "seconds": seconds, "mean_seconds": float(sim.times.mean()), "closed_form_seconds": closed}
    if closed is not None:
        row["gap_to_closed_form"] = abs(row["mean_seconds"] - closed) / closed
    else:
        generic, _ = simulate.decode_times(code, sim.arrivals[:200], generic=True)
        row["agrees_with_decode"] = bool(np.allclose(generic, sim.times[:200]))
    return row


def main(args: argparse.Namespace) -> int:
    rounds: dict[str, list[dict]] = {name: [] for name, _ in SCHEMES}
    for r in range(args.repeat):
        for name, stragglers in SCHEMES:
            rounds[name].append(measure(name, args.workers, stragglers, args.draws, seed=r))
    rows: list[dict[str, Any]] = []
    for results in rounds.values():
        secs = [x["seconds"] for x in results]
        row = {**results[0], "seconds": float(np.median(secs)), "seconds_min": min(secs), "seconds_max": max(secs),
               "mean_seconds": float(np.median([x["mean_seconds"] for x in results]))}
        if "gap_to_closed_form" in results[0]:
            row["gap_to_closed_form"] = max(x["gap_to_closed_form"] for x in results)
        else:
            row["agrees_with_decode"] = all(x["agrees_with_decode"] for x in results)
        row["target_met"] = bool(max(secs) <= TARGET_SECONDS and row.get("gap_to_closed_form", 0.0) <= TARGET_GAP
                                 and row.get("agrees_with_decode", True))
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"simulator benchmark: W={args.workers}, {args.draws} draws, exp:0.1 scaled by load, {args.repeat} "
          f"rounds; {os.cpu_count()} cores; targets: <= {TARGET_SECONDS:g} s, within {TARGET_GAP:.0%} of the "
          "closed form")
    print(f"{'scheme':<12}{'S':>4}{'seconds (median, range)':>28}{'mean s/it':>12}{'closed form':>13}{'gap':>10}"
          "  target")
    for row in rows:
        closed = f"{row['closed_form_seconds']:.6f}" if row["closed_form_seconds"] is not None else "none"
        gap = f"{row['gap_to_closed_form']:.2%}" if "gap_to_closed_form" in row else \
            ("decode ok" if row["agrees_with_decode"] else "MISMATCH")
        spread = f"{row['seconds']:.3f} ({row['seconds_min']:.3f}-{row['seconds_max']:.3f})"
        print(f"{row['scheme']:<12}{row['stragglers']:>4}{spread:>28}{row['mean_seconds']:>12.6f}{closed:>13}"
              f"{gap:>10}  {'met' if row['target_met'] else 'MISSED'}")
    return 0
