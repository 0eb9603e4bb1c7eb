"""Calibrate the compiled kernels' prefetch distances on this machine (well under a second).

``python -m gdcode.kernels.calibrate [--force]`` measures and caches them
(:mod:`gdcode.kernels.tuning` says where, and when this runs by itself).

What is measured, on one thread, on synthetic blocks larger than the last-level cache (so that
the rows stream from memory, as the kernels' blocks do): the least-squares kernel on dense
float64 rows and on the same bytes as float32 rows, 200 columns, for each candidate distance
of :data:`DENSE_CANDIDATES` (bytes each row stream is prefetched ahead), and on a CSR block
(30 random columns of 50000 a row) for each of :data:`CSR_CANDIDATES` (entries ahead). The
candidates are timed in interleaved rounds, in a rotating order, each call on the next of
eight slices of the block (so that its rows have left the cache since they were last read),
each candidate keeping its best call; the chosen one is the fastest in the company of its
neighbours (:func:`choose`). Least squares stands
for every objective: the loops that the distances tune are the same for all of them. The
largest interleaved copy on which softmax CSR rows go in one fused pass rather than two is
not measured but read from the last-level cache's size (:func:`softmax_fused_kib`). The
chosen values change only the speed of the kernels, never their results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from gdcode import kernels
from gdcode.kernels import tuning

#: bytes of each dense row stream prefetched ahead, tried for float64 and float32 rows
DENSE_CANDIDATES = (0, 2048, 3072, 4096, 6144, 8192, 12288, 16384)
#: CSR entries prefetched ahead
CSR_CANDIDATES = (0, 64, 128, 256, 512, 1024)
#: timed rounds over the candidates
ROUNDS = 7
#: candidates within this fraction of the best time count as equally fast (see choose)
PLATEAU = 0.03
#: each block is read in this many slices, one a call, in turn
SLICES = 8
DENSE_COLS = 200
CSR_COLS = 50_000
CSR_NNZ = 30
#: the synthetic blocks are at least this large, and twice the last-level cache (at most
#: MAX_BYTES): the rows must come from memory
MIN_BYTES = 64 << 20
MAX_BYTES = 256 << 20


def last_level_cache_bytes() -> int:
    """The largest CPU cache of this machine (Linux sysfs), or 32 MiB when unknown."""
    best = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        entries = list(base.glob("index*"))
    except OSError:
        entries = []
    for entry in entries:
        try:
            text = (entry / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * scale)
    return best or 32 << 20


def softmax_fused_kib(cache_bytes: int | None = None, limit: int = 65536) -> int:
    """KiB of the largest interleaved copy of W and G (all threads) on which softmax CSR
    rows go in one fused pass: a quarter of the last-level cache (``cache_bytes``, this
    machine's by default), at most ``limit``.

    Measured on the 2-core Zen 1 VM (8 MB of L3; 200000 rows of 30 nonzeros, thread CPU
    time, medians of 3-7 interleaved rounds), the two-pass loop's time over the fused one's,
    by the interleaved copy's size: 10 classes 1.08 at 0.9 MiB, 0.94 at 2.8, 1.04 at 3.7,
    0.78 at 4.6, 0.60 at 5.5; 3 classes 1.14 at 1.2, 0.64 at 3.1; 33 classes 1.11 at 1.1,
    1.07 at 2.8, 0.92 at 3.9, 0.82 at 4.9. From a quarter of the cache up the two passes
    took at most 1.07 times as long as the fused loop, which took up to 1.7 times as long
    as they did.
    """
    cache = last_level_cache_bytes() if cache_bytes is None else cache_bytes
    return int(min(cache // 4 // 1024, limit))


def block_bytes() -> int:
    """Bytes of each synthetic block: twice the last-level cache, within MIN_BYTES..MAX_BYTES."""
    return int(min(max(2 * last_level_cache_bytes(), MIN_BYTES), MAX_BYTES))


def _best_times(runs: Sequence[Callable[[], object]], set_param: Callable[[int], None],
                candidates: Sequence[int], rounds: int) -> dict[int, float]:
    """Best seconds of each candidate, in interleaved rounds in a rotating order. Each timed
    call runs the next of ``runs`` (slices of one block, in turn), so that the slice it reads
    was last read ``len(runs) - 1`` calls earlier and has left the cache since."""
    best = {c: float("inf") for c in candidates}
    set_param(candidates[len(candidates) // 2])
    for run in runs:  # warm-up: page faults, caches
        run()
    n, calls = len(candidates), 0
    for r in range(rounds):
        for k in range(n):
            c = candidates[(k + r) % n]
            set_param(c)
            run = runs[calls % len(runs)]
            calls += 1
            t0 = time.perf_counter()
            run()
            best[c] = min(best[c], time.perf_counter() - t0)
    return best


def choose(times: dict[int, float], tolerance: float = PLATEAU) -> int:
    """The fastest candidate inside a plateau: among the candidates within ``tolerance`` of
    the best time, the fastest one whose neighbours in the sorted list of candidates are
    within it too (a missing neighbour, past either end, counts as within); the fastest
    candidate when none is. The fastest alone may sit at the edge of a cliff: on the EPYC VM,
    6 KB ahead streams at 87% of a bare read and 4 KB at 59%, while 8-16 KB all reach about
    90%, and a busier moment can push a distance at the edge off it. Where the optimum is a
    single point, that point is chosen."""
    order = sorted(times)
    best = min(times.values())
    good = [times[c] <= best * (1.0 + tolerance) for c in order]
    inner = [order[k] for k in range(len(order))
             if good[k] and (k == 0 or good[k - 1]) and (k == len(order) - 1 or good[k + 1])]
    return min(inner or order, key=lambda c: (times[c], c))


def calibrate(linear: ModuleType | None = None, rounds: int | None = None,
              nbytes: int | None = None) -> tuple[dict[str, int], dict[str, Any]]:
    """Measure the best parameters on this machine; return ``(params, measured)``, where
    ``measured`` maps each parameter to ``{candidate: best seconds}``. The module's
    parameters are left at the chosen values."""
    linear = linear or kernels._linear
    if linear is None:
        raise RuntimeError("the compiled kernels are not built; run `make install`")
    from threadpoolctl import threadpool_limits

    nbytes = nbytes or block_bytes()
    rounds = rounds or ROUNDS
    previous = linear.tuning()
    params: dict[str, int] = {}
    measured: dict[str, Any] = {}
    try:
        with threadpool_limits(limits=1):
            # dense: one buffer seen as float64 and as float32 rows; every 32-bit word is
            # 1.0f, so both views hold normal numbers (no subnormal slow paths); allocated as
            # numpy allocates a dataset (huge pages where the system gives them)
            buf = np.full(nbytes // 4, 0x3F800000, dtype=np.uint32)
            for name, dtype in (("dense_ahead_f64", np.float64), ("dense_ahead_f32", np.float32)):
                flat = buf.view(dtype)
                rows = flat.size // DENSE_COLS // SLICES
                w, g = np.full(DENSE_COLS, 1e-3), np.zeros(DENSE_COLS)
                y, coef = np.zeros(rows), np.ones(rows)
                runs = [_dense_run(linear, flat[k * rows * DENSE_COLS:(k + 1) * rows * DENSE_COLS]
                                   .reshape(rows, DENSE_COLS), y, coef, w, g)
                        for k in range(SLICES)]
                times = _best_times(runs, _setter(linear, name), DENSE_CANDIDATES, rounds)
                params[name] = choose(times)
                linear.set_tuning(**{name: params[name]})
                measured[name] = {str(c): t for c, t in times.items()}
            # CSR on the same buffer (no second allocation to fault in): its first two thirds
            # as float64 data, its last third as int32 column indices, 12 bytes an entry
            rows = max(1, nbytes // (12 * CSR_NNZ) // SLICES)
            nnz = SLICES * rows * CSR_NNZ
            data = buf[: 2 * nnz].view(np.float64)
            indices = buf[2 * nnz: 3 * nnz].view(np.int32)
            rng = np.random.default_rng(12345)
            for lo in range(0, nnz, 1 << 20):
                hi = min(nnz, lo + (1 << 20))
                indices[lo:hi] = rng.integers(0, CSR_COLS, size=hi - lo, dtype=np.int32)
            indptr = np.arange(0, rows * CSR_NNZ + 1, CSR_NNZ, dtype=np.int32)
            y, coef = np.zeros(rows), np.ones(rows)
            w, g = np.full(CSR_COLS, 1e-3), np.zeros(CSR_COLS)
            runs = [_csr_run(linear, data, indices, indptr + k * rows * CSR_NNZ, y, coef, w, g)
                    for k in range(SLICES)]
            times = _best_times(runs, _setter(linear, "csr_ahead"), CSR_CANDIDATES, rounds)
            params["csr_ahead"] = choose(times)
            measured["csr_ahead"] = {str(c): t for c, t in times.items()}
            params["softmax_fused_kib"] = softmax_fused_kib(limit=linear.TUNING_MAX)
    except BaseException:
        linear.set_tuning(**previous)
        raise
    linear.set_tuning(**params)
    return params, measured


def _setter(linear: ModuleType, name: str) -> Callable[[int], None]:
    def set_param(value: int) -> None:
        linear.set_tuning(**{name: value})

    return set_param


def _dense_run(linear, X, y, coef, w, g) -> Callable[[], object]:
    return lambda: linear.least_squares_dense(X, y, coef, w, g)


def _csr_run(linear, data, indices, indptr, y, coef, w, g) -> Callable[[], object]:
    return lambda: linear.least_squares_csr(data, indices, indptr, y, coef, w, g)


def ensure(force: bool = False, log: Callable[[str], None] | None = None) -> str:
    """Calibrate unless this machine and build have cached parameters (or ``force``); apply
    them either way. Returns :data:`gdcode.kernels.tuning.source`. Does nothing without the
    compiled kernels or with ``GDCODE_NO_CALIBRATION`` set. The figures are cached when the
    cache directory is writable; otherwise they serve this process only."""
    linear = kernels._linear
    if linear is None or tuning.disabled():
        return tuning.apply_cached(linear)
    if not force and tuning.apply_cached(linear) == "cache":
        return tuning.source
    t0 = time.perf_counter()
    params, measured = calibrate(linear)
    seconds = time.perf_counter() - t0
    try:
        path = tuning.write(tuning.machine_key(linear), params, measured, round(seconds, 3))
    except OSError as exc:
        tuning.mark_calibrated(None, f"measured now in {seconds:.2f} s; not cached: {exc}")
    else:
        tuning.mark_calibrated(path, f"measured now in {seconds:.2f} s, cached in {path}")
    if log:
        log(f"gdcode: calibrated the kernels' prefetch distances in {seconds:.2f} s: "
            + ", ".join(f"{k}={v}" for k, v in params.items()))
    return tuning.source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdcode.kernels.calibrate",
                                     description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--force", action="store_true",
                        help="measure again even when this machine and build have cached figures")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    if not kernels.COMPILED:
        if not args.quiet:
            print("gdcode: the compiled kernels are not built; nothing to calibrate", file=sys.stderr)
        return 0
    ensure(force=args.force)
    if not args.quiet:
        print(f"kernel tuning: {tuning.describe(kernels._linear)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
