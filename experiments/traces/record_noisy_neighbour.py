#!/usr/bin/env python
"""Record ``noisy-neighbour-w6.csv``: a real per-worker time trace of this machine under a bursty neighbour.

Launch: ``.venv/bin/python experiments/traces/record_noisy_neighbour.py [--out FILE]``
(a minute or so; it replaces FILE only with ``--force``).

It starts a neighbour job (four processes that each spin for a random 0.05-0.4 s, then sleep for a
random 0.05-0.4 s, seeded), runs ``gdcode run --workers 6 --record-delays`` with enough compute
per iteration that the neighbour's bursts show as slow spells, stops the neighbour (by pid),
and converts the recorded compute seconds with ``gdcode trace import --format csv --mean 0.02``
so that its mean pause is 20 ms. The values depend on the machine and the moment: a new
recording is a new trace, not the same one.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def neighbour(seed: int) -> None:
    """Spin and sleep in random bursts until killed."""
    rng = random.Random(seed)
    while True:
        end = time.monotonic() + rng.uniform(0.05, 0.4)
        while time.monotonic() < end:
            pass
        time.sleep(rng.uniform(0.05, 0.4))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / "noisy-neighbour-w6.csv"))
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = ap.parse_args(argv)
    if Path(args.out).exists() and not args.force:
        print(f"{args.out} exists: pass --force to replace it", file=sys.stderr)
        return 2
    procs = [subprocess.Popen([sys.executable, __file__, "--neighbour", str(seed)]) for seed in (1, 2, 3, 4)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "compute.csv"
            subprocess.run([sys.executable, "-m", "gdcode", "run", "--workers", "6", "--dataset", "synthetic:48000x400",
                            "--iterations", str(args.iterations), "--lr", "0.5", "--out", tmp, "--name", "recording",
                            "--quiet", "--record-delays", str(raw)], check=True)
            subprocess.run([sys.executable, "-m", "gdcode", "trace", "import", "--format", "csv", "--worker", "worker",
                            "--iteration", "iteration", "--seconds", "seconds", "--mean", "0.02", "--force",
                            str(raw), args.out], check=True)
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGTERM)
            p.wait()
    subprocess.run([sys.executable, "-m", "gdcode", "trace", "stats", args.out], check=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--neighbour":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        neighbour(int(sys.argv[2]))
    sys.exit(main())
