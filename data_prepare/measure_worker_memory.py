# Launch: .venv/bin/python data_prepare/measure_worker_memory.py [--rows 1000000] [--nnz-per-row 84]
#         [--cols 100000] [--workers 4] [--keep] [--json]
"""Peak resident memory of each worker of a real run on a large sparse prepared dataset.

1. ``gdcode prepare synthetic --sparse`` writes a CSR dataset (the defaults: 10^6 rows of 84
   values, about 1 GB) and a small one with the same columns (4 000 rows, the baseline).
2. ``gdcode run --dataset DIR --workers W --iterations 2`` trains on each. While a job runs,
   this script reads every rank's peak resident set size (``VmHWM`` in ``/proc/PID/status``;
   the rank comes from ``PMI_RANK`` in its environment).
3. A worker's share is the bytes of its own rows (data, indices, indptr and labels). The
   check: peak <= 2 x share + the same worker's peak on the small dataset (the interpreter,
   numpy, scipy and MPI with next to no data).

Linux only (it reads ``/proc``). The datasets go to a temporary directory, removed at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MB = 1 << 20


def gdcode_command() -> list[str]:
    return [sys.executable, "-m", "gdcode"]


def prepare(out: Path, rows: int, cols: int, k: int) -> None:
    subprocess.run([*gdcode_command(), "prepare", "synthetic", "--sparse", "--rows", str(rows),
                    "--cols", str(cols), "--nnz-per-row", str(k), "--test-fraction", "0",
                    "--out", str(out)], check=True)


def _rank_of(pid: int, token: str) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    if f"GDCODE_MEMCHECK={token}".encode() not in env:
        return None
    for item in env:
        if item.startswith(b"PMI_RANK="):
            return int(item.split(b"=", 1)[1])
    return None


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run_and_watch(dataset: Path, workers: int, out: Path, name: str) -> dict[int, int]:
    """Run ``gdcode run`` and return each rank's peak RSS in bytes (last value seen)."""
    token = uuid.uuid4().hex
    env = dict(os.environ, GDCODE_MEMCHECK=token, PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen([*gdcode_command(), "run", "--dataset", str(dataset), "--workers",
                             str(workers), "--iterations", "2", "--out", str(out), "--name", name],
                            env=env)
    peaks: dict[int, int] = {}
    pids: dict[int, int] = {}
    while proc.poll() is None:
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in pids.values():
                rank = _rank_of(int(entry), token)
                if rank is not None:
                    pids[rank] = int(entry)
        for rank, pid in pids.items():
            kib = _hwm_kib(pid)
            if kib is not None:
                peaks[rank] = max(peaks.get(rank, 0), kib * 1024)
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"gdcode run exited with {proc.returncode}")
    if len(peaks) != workers + 1:
        raise SystemExit(f"saw {len(peaks)} ranks, expected {workers + 1}")
    return peaks


def shares(dataset: Path, workers: int) -> list[int]:
    """Bytes of each worker's rows under the uncoded layout (one partition per worker)."""
    from gdcode.data import partition_bounds
    from gdcode.data.prepared import PreparedSource

    src = PreparedSource(dataset)
    indptr = src._files["train"]["indptr"].read_all()
    value_bytes = src._files["train"]["data"].dtype.itemsize + \
        src._files["train"]["indices"].dtype.itemsize
    out = []
    bounds = partition_bounds(src.n_train, workers)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        nnz = int(indptr[hi] - indptr[lo])
        out.append(nnz * value_bytes + (hi - lo + 1) * 8 + (hi - lo) * 8)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cols", type=int, default=100_000)
    p.add_argument("--nnz-per-row", type=int, default=84)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--keep", action="store_true", help="keep the datasets and runs")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="gdcode-memcheck-"))
    try:
        big, small = work / "big", work / "small"
        t0 = time.perf_counter()
        prepare(big, args.rows, args.cols, args.nnz_per_row)
        prepare(small, 4000, args.cols, args.nnz_per_row)
        prep_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in big.glob("*.npy"))
        base = run_and_watch(small, args.workers, work / "runs", "small")
        t0 = time.perf_counter()
        peak = run_and_watch(big, args.workers, work / "runs", "big")
        run_s = time.perf_counter() - t0
        share = shares(big, args.workers)
        rows = []
        for w in range(args.workers):
            r = w + 1
            limit = 2 * share[w] + base[r]
            rows.append({"rank": r, "share_mb": share[w] / MB, "peak_mb": peak[r] / MB,
                         "baseline_mb": base[r] / MB,
                         "above_baseline_over_share": (peak[r] - base[r]) / share[w],
                         "limit_mb": limit / MB, "ok": bool(peak[r] < limit)})
        result = {"dataset_mb": size / MB, "rows": args.rows, "cols": args.cols,
                  "nnz_per_row": args.nnz_per_row, "workers": args.workers,
                  "prepare_seconds": prep_s, "run_seconds": run_s,
                  "coordinator_peak_mb": peak[0] / MB, "coordinator_baseline_mb": base[0] / MB,
                  "workers_detail": rows, "ok": all(r["ok"] for r in rows)}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"dataset {result['dataset_mb']:.0f} MB on disk ({args.rows} rows x {args.cols} cols, "
              f"{args.nnz_per_row} values per row), {args.workers} workers, uncoded, 2 iterations")
        print(f"{'rank':>4} {'share MB':>9} {'peak MB':>8} {'baseline MB':>11} "
              f"{'(peak-base)/share':>17} {'limit MB':>9}  ok")
        for r in rows:
            print(f"{r['rank']:>4} {r['share_mb']:>9.1f} {r['peak_mb']:>8.1f} {r['baseline_mb']:>11.1f} "
                  f"{r['above_baseline_over_share']:>17.2f} {r['limit_mb']:>9.1f}  {r['ok']}")
        print(f"coordinator (rank 0, holds every row for evaluation): peak "
              f"{result['coordinator_peak_mb']:.0f} MB, baseline {result['coordinator_baseline_mb']:.0f} MB")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
