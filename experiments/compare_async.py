#!/usr/bin/env python
"""Coded against asynchronous training under the same delays, from one TOML file.

Launch: ``.venv/bin/python experiments/compare_async.py [CONFIG] [--quick] [--out DIR]``
(CONFIG defaults to ``experiments/compare_async.toml``).

For every delay and every variant in the config's ``[compare]`` table it runs
``gdcode run CONFIG --delay DELAY --VARIANT-OPTION VALUE ... --out OUT --name NAME`` (so the
shared options come from the config's ``[run]`` table), then prints one table: per run its
status, real elapsed seconds, the updates the final model absorbed, the final training loss,
test accuracy, and the elapsed time at which the training loss first reached ``--target-loss``.
A variant whose scheme this gdcode does not have is skipped with a message. The table is also
written to ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def option_args(options: dict) -> list[str]:
    """``{"average-every": 5, "intercept": True}`` -> ``["--average-every", "5", "--intercept"]``."""
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + flag[2:])
        else:
            out += [flag, str(value)]
    return out


def skip_reason(variant: dict) -> str | None:
    """Why this gdcode cannot run the variant (an unknown scheme), or None."""
    from gdcode import codes

    if variant.get("mode", "coded") == "coded" and variant.get("scheme", "uncoded") not in codes.names():
        return (f"scheme {variant['scheme']!r} is not in this gdcode (known: {', '.join(codes.names())}); "
                "skipped")
    return None


def row_of(run, target: float | None) -> dict:
    """One table row from a run directory read back."""
    s = run.summary or {}
    reached = None
    if target is not None:
        hits = [m["elapsed"] for m in run.metrics if m["train_loss"] <= target]
        reached = hits[0] if hits else None
    return {"status": s.get("status", "failed"), "elapsed": s.get("elapsed"), "updates": s.get("iterations"),
            "train_loss": s.get("train_loss"), "test_accuracy": s.get("test_accuracy"), "to_target": reached}


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(HERE / "compare_async.toml"))
    ap.add_argument("--out", default="compare-async-results", help="directory of the run directories")
    ap.add_argument("--quick", action="store_true", help="apply the config's [compare] quick options")
    args = ap.parse_args()

    from gdcode.config import load_toml
    from gdcode.results import load_run

    config = Path(args.config)
    shared = load_toml(config)  # checks the [run] table before anything runs
    with config.open("rb") as fh:
        compare = tomllib.load(fh).get("compare", {})
    delays, variants = compare.get("delays", []), compare.get("variant", [])
    if not delays or not variants:
        print(f"{config}: [compare] needs delays = [...] and [[compare.variant]] tables", file=sys.stderr)
        return 2
    extra = option_args(compare.get("quick", {})) if args.quick else []
    target = compare.get("quick", {}).get("target-loss") if args.quick else None
    target = target if target is not None else shared.get("target_loss")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    for delay in delays:
        for variant in variants:
            label = variant.get("label") or slug(" ".join(f"{k}-{v}" for k, v in variant.items()))
            options = {k: v for k, v in variant.items() if k != "label"}
            name = f"{slug(label)}--{slug(delay)}"
            reason = skip_reason(options)
            if reason:
                print(f"[{label} | {delay}] {reason}", flush=True)
                rows.append((label, delay, {"status": "skipped"}))
                continue
            if (out / name / "summary.json").exists():
                print(f"[{label} | {delay}] already in {out / name}; reading it", flush=True)
            else:
                cmd = [sys.executable, "-m", "gdcode", "run", str(config), "--delay", delay, *option_args(options),
                       *extra, "--out", str(out), "--name", name]
                print(f"[{label} | {delay}] {' '.join(cmd[1:])}", flush=True)
                res = subprocess.run(cmd)
                if res.returncode not in (0, 3):
                    print(f"[{label} | {delay}] failed with exit code {res.returncode}", file=sys.stderr)
                    rows.append((label, delay, {"status": f"exit {res.returncode}"}))
                    continue
            rows.append((label, delay, row_of(load_run(out / name), target)))

    head = ["variant", "delay", "status", "elapsed s", "updates", "train loss", "test acc",
            f"s to loss {target:g}" if target is not None else "s to target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, delay, r in rows:
        cells = [label, delay, r["status"], fmt(r.get("elapsed"), ".3f"), fmt(r.get("updates"), "d"),
                 fmt(r.get("train_loss"), ".5f"), fmt(r.get("test_accuracy"), ".4f"), fmt(r.get("to_target"), ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    (out / "table.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
