"""Kernel throughput: compiled fused kernels against the numpy/scipy two-pass reference.

For each objective and layout (dense float64, dense float32, CSR float64), on data larger
than a typical last-level cache (dense 200000 x 200; CSR 200000 rows, 50000 columns, 30
nonzeros a row), it times the compiled loss-and-gradient kernel on the whole block, the
two-pass reference on the same data (``X @ w``, then ``X.T @ r``, with numpy/scipy; for
float32 the parameters are cast to float32 so that numpy reads ``X`` in place), and a numpy
sum over the dense float64 ``X`` (the machine's read bandwidth), in ``--rounds``
interleaved rounds. Each round gives a ratio (reference seconds over kernel seconds, and the
kernel's GB/s over the sum's), so that a busy moment slows both sides of a ratio alike; a
row reports the median and the range of its ratios over the rounds. The whole table runs
``--repeat`` times (default 3) and every target is checked on every repeat's medians: one
repeat below its target marks it MISSED. BLAS is limited to ``--threads`` threads while
timing the reference. ``--clock cpu`` times the thread's CPU time instead of the elapsed
time (one thread only): on a shared machine it leaves out the time other processes hold the
core, though not their use of the caches. Before measuring, the kernels' prefetch distances
are calibrated for this machine unless they are cached (:mod:`gdcode.kernels.tuning`).

Targets on one thread: every kernel at least 1.2x its reference; dense logistic and
least-squares at least 2.0x and, float64, at least 75% of the read bandwidth (float32: 70%);
CSR logistic and least-squares at least 1.8x.

Then the MLP rows (:mod:`gdcode.bench.mlp`): one forward and backward pass of the compiled MLP
kernel against its numpy twin and the machine's numpy matmul GFLOP/s, best of ``--rounds``.

``--only`` keeps some rows: ``--only logistic:csr,softmax`` times CSR logistic and every
softmax row, ``--only mlp:float32`` the float32 MLP row alone (see :func:`parse_only`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gdcode.bench import mlp as bench_mlp
from gdcode.errors import ConfigError

DENSE_COLS = 200
SPARSE_COLS = 50_000
SPARSE_NNZ = 30
SOFTMAX_CLASSES = 10
OBJECTIVES = ("logistic", "least-squares", "hinge", "softmax")
CASES = (("dense", "float64"), ("dense", "float32"), ("csr", "float64"))
#: the words of ``--only``: objectives (and the MLP), layouts, dtypes
SELECT_WORDS = (*OBJECTIVES, "mlp", "dense", "csr", "float64", "float32")

#: every kernel's minimum speedup over its reference on one thread
MIN_SPEEDUP = 1.2
#: (objective, layout, dtype) -> minimum speedup over the reference on one thread
SPEEDUP_TARGETS = {("logistic", "dense", "float64"): 2.0, ("least-squares", "dense", "float64"): 2.0,
                   ("logistic", "dense", "float32"): 2.0, ("least-squares", "dense", "float32"): 2.0,
                   ("logistic", "csr", "float64"): 1.8, ("least-squares", "csr", "float64"): 1.8}
#: (objective, layout, dtype) -> minimum fraction of the read bandwidth on one thread
BANDWIDTH_TARGETS = {("logistic", "dense", "float64"): 0.75, ("least-squares", "dense", "float64"): 0.75,
                     ("logistic", "dense", "float32"): 0.70, ("least-squares", "dense", "float32"): 0.70}

#: the keys of a JSON result row (one per repeat and case); seconds are medians over the
#: rounds, speedup and read_fraction the medians of the per-round ratios, with their ranges
#: --clock: elapsed time, or the calling thread's CPU time (kernel, reference and sum all run
#: on it with one thread)
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}

JSON_KEYS = ("repeat", "kernel", "layout", "dtype", "rounds", "seconds", "gbps",
             "reference_seconds", "speedup", "speedup_min", "speedup_max", "bandwidth_gbps",
             "read_fraction", "read_fraction_min", "read_fraction_max")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=200_000,
                        help="rows of the dense and the CSR matrix (default 200000)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="timed rounds of each row; each gives one ratio (default 7)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the whole table; a target missed on any of them is "
                             "MISSED (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="n_threads of the kernels and BLAS threads of the reference "
                             "(default 1; the targets are for one thread)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall: elapsed time (default); cpu: this thread's CPU time, which "
                             "leaves out the time other processes hold the core (one thread "
                             "only)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="measure the kernels' prefetch distances again first, even when "
                             "this machine has them cached")
    parser.add_argument("--only", metavar="SELECT[,SELECT...]",
                        help="time only the rows that match one SELECT: words joined by ':' "
                             f"out of {', '.join(SELECT_WORDS)} (e.g. logistic:csr,softmax or "
                             "mlp:float32); default: every row")
    bench_mlp.add_arguments(parser)


def parse_only(spec: str | None) -> list[frozenset[str]] | None:
    """``--only`` as sets of words (None: every row); ConfigError on an unknown word.

    A row is kept when every word of one set names it: its objective (or ``mlp``), layout or
    dtype.
    """
    if spec is None:
        return None
    selects = []
    for part in spec.split(","):
        words = frozenset(w.strip() for w in part.split(":") if w.strip())
        unknown = sorted(words - set(SELECT_WORDS))
        if not words or unknown:
            what = f"unknown word {unknown[0]!r}" if unknown else "an empty selection"
            raise ConfigError(f"--only {spec!r}: {what}; use words out of {', '.join(SELECT_WORDS)} "
                              "joined by ':', selections by ',' (e.g. logistic:csr,softmax)")
        selects.append(words)
    return selects


def selected(only: list[frozenset[str]] | None, *labels: str) -> bool:
    """Whether the row named by ``labels`` (objective, layout, dtype) is kept by ``--only``."""
    return only is None or any(words <= set(labels) for words in only)


@dataclass
class Case:
    """One benchmark row's data: rows ``X`` (ndarray or CSR), labels, parameters."""

    objective: str
    layout: str
    dtype: str
    X: Any
    y: np.ndarray
    w: np.ndarray
    x_bytes: int


def dense_data(rows: int, seed: int) -> np.ndarray:
    """The dense float64 block: standard normal, C-contiguous."""
    return np.random.default_rng([seed, 1]).standard_normal((rows, DENSE_COLS))


def csr_data(rows: int, seed: int):
    """The CSR block: ``SPARSE_NNZ`` uniform random columns a row (duplicates summed)."""
    import scipy.sparse as sp

    rng = np.random.default_rng([seed, 2])
    indices = np.sort(rng.integers(0, SPARSE_COLS, size=(rows, SPARSE_NNZ), dtype=np.int32),
                      axis=1).ravel()
    indptr = np.arange(0, rows * SPARSE_NNZ + 1, SPARSE_NNZ, dtype=np.int32)
    X = sp.csr_matrix((rng.standard_normal(rows * SPARSE_NNZ), indices, indptr),
                      shape=(rows, SPARSE_COLS))
    X.sum_duplicates()
    return X


def labels(objective: str, X, seed: int) -> np.ndarray:
    """Labels of the objective's kind: +1/-1, real numbers, or classes 0..K-1."""
    rng = np.random.default_rng([seed, 3])
    n = X.shape[0]
    if objective == "softmax":
        return rng.integers(0, SOFTMAX_CLASSES, size=n).astype(np.float64)
    if objective == "least-squares":
        return rng.standard_normal(n)
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def parameters(objective: str, n_cols: int, scale: float, seed: int) -> np.ndarray:
    """Parameters giving margins of order one (K x n_cols for softmax)."""
    rng = np.random.default_rng([seed, 4])
    if objective == "softmax":
        return scale * rng.standard_normal((SOFTMAX_CLASSES, n_cols))
    return scale * rng.standard_normal(n_cols)


def x_bytes(X) -> int:
    """Bytes of X that one pass reads (data, indices and indptr for CSR)."""
    if isinstance(X, np.ndarray):
        return X.nbytes
    return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes


def reference(objective: str, X, y: np.ndarray, coef: np.ndarray, w: np.ndarray,
              grad: np.ndarray) -> float:
    """The two-pass numpy/scipy computation: ``X @ w``, then ``X.T @ r``.

    Float32 rows are multiplied by float32 parameters and residuals, so numpy runs sgemv on
    ``X`` in place instead of copying it to float64.
    """
    from gdcode.kernels.reference import binary_derivative, softmax_rows

    dtype = X.dtype
    if objective == "softmax":
        scores = np.asarray(X @ w.T.astype(dtype, copy=False), dtype=np.float64)
        cls = y.astype(np.intp)
        loss, prob = softmax_rows(scores, cls)
        prob[np.arange(cls.size), cls] -= 1.0
        r = (coef[:, None] * prob).astype(dtype, copy=False)
        grad += np.asarray(X.T @ r, dtype=np.float64).T
        return float(coef @ loss)
    margin = np.asarray(X @ w.astype(dtype, copy=False), dtype=np.float64)
    loss, d = binary_derivative(objective, margin, y)
    grad += np.asarray(X.T @ (coef * d).astype(dtype, copy=False), dtype=np.float64)
    return float(coef @ loss)


def _rounds(fns: dict[str, Callable[[], object]], rounds: int,
            clock: str = "wall") -> dict[str, list[float]]:
    """Seconds of each function in each of ``rounds`` interleaved rounds, on ``clock``."""
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: page faults, caches, lazy imports
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = now()
            fn()
            times[name].append(now() - t0)
    return times


def measure(case: Case, X64: np.ndarray, rounds: int, threads: int, clock: str = "wall") -> dict:
    """One result row: the kernel, the reference and the read bandwidth on ``case``, with the
    per-round ratios summarised (median, min, max)."""
    from threadpoolctl import threadpool_limits

    from gdcode import kernels

    stem = kernels.OBJECTIVES[case.objective]
    kernel = kernels.get(f"{stem}_{case.layout}", compiled=True)
    X, y, w = case.X, case.y, case.w
    coef = np.ones(X.shape[0])
    grad = np.zeros_like(w)
    args: tuple
    if case.layout == "csr":
        args = (X.data, X.indices, X.indptr, y, coef, w, grad)
    else:
        args = (X, y, coef, w, grad)

    def run_kernel():
        kernel(*args, n_threads=threads)

    def run_reference():
        reference(case.objective, X, y, coef, w, grad)

    with threadpool_limits(limits=threads):
        t = _rounds({"kernel": run_kernel, "reference": run_reference, "sum": X64.sum}, rounds,
                    clock)
    k, ref, total = (np.array(t[name]) for name in ("kernel", "reference", "sum"))
    speedup = ref / k
    read = (case.x_bytes / k) / (X64.nbytes / total)
    seconds = float(np.median(k))
    return {
        "kernel": case.objective,
        "layout": case.layout,
        "dtype": case.dtype,
        "rounds": rounds,
        "seconds": seconds,
        "gbps": case.x_bytes / seconds / 1e9,
        "reference_seconds": float(np.median(ref)),
        "speedup": float(np.median(speedup)),
        "speedup_min": float(speedup.min()),
        "speedup_max": float(speedup.max()),
        "bandwidth_gbps": X64.nbytes / float(np.median(total)) / 1e9,
        "read_fraction": float(np.median(read)),
        "read_fraction_min": float(read.min()),
        "read_fraction_max": float(read.max()),
    }


def run(rows: int = 200_000, rounds: int = 7, threads: int = 1, seed: int = 0,
        repeat: int = 1, clock: str = "wall", only: list[frozenset[str]] | None = None) -> list[dict]:
    """Measure every objective on every layout (those ``only`` keeps: :func:`parse_only`),
    ``repeat`` times over; the rows of ``gdcode bench kernels`` (each with its ``repeat``,
    from 1)."""
    from gdcode import kernels

    if not kernels.COMPILED:
        raise ConfigError("the compiled kernels are not built, so there is nothing to "
                          "benchmark; run `make install`")
    wanted = [(objective, layout, dtype) for objective in OBJECTIVES for layout, dtype in CASES
              if selected(only, objective, layout, dtype)]
    if not wanted:
        return []
    X64 = dense_data(rows, seed)  # the read bandwidth's reference, whatever is timed
    needed = {case[1:] for case in wanted}  # (layout, dtype): only the blocks some row times
    blocks: dict[tuple[str, str], Any] = {("dense", "float64"): X64}
    if ("dense", "float32") in needed:
        blocks["dense", "float32"] = X64.astype(np.float32)
    if ("csr", "float64") in needed:
        blocks["csr", "float64"] = csr_data(rows, seed)
    cases = []
    for objective, layout, dtype in wanted:
        X = blocks[layout, dtype]
        n_cols = X.shape[1]
        scale = 1.0 / np.sqrt(SPARSE_NNZ if layout == "csr" else n_cols)
        cases.append(Case(objective, layout, dtype, X, labels(objective, X, seed),
                          parameters(objective, n_cols, scale, seed), x_bytes(X)))
    results = []
    for r in range(1, repeat + 1):
        for case in cases:
            results.append({"repeat": r, **measure(case, X64, rounds, threads, clock)})
    return results


def targets(results: list[dict]) -> list[dict]:
    """Every target with its figure on each repeat (that repeat's median over its rounds):
    ``{"kernel", "layout", "dtype", "measure" ("speedup" or "read_fraction"), "goal",
    "values" (one per repeat), "missed" (the repeats below the goal)}``."""
    by_case: dict[tuple[str, str, str], list[dict]] = {}
    for r in results:
        by_case.setdefault((r["kernel"], r["layout"], r["dtype"]), []).append(r)
    out = []
    for key, rows in by_case.items():
        goals = [("speedup", SPEEDUP_TARGETS.get(key, MIN_SPEEDUP))]
        if key in BANDWIDTH_TARGETS:
            goals.append(("read_fraction", BANDWIDTH_TARGETS[key]))
        for name, goal in goals:
            values = [row[name] for row in rows]
            out.append({"kernel": key[0], "layout": key[1], "dtype": key[2], "measure": name,
                        "goal": goal, "values": values,
                        "missed": [row["repeat"] for row in rows if row[name] < goal]})
    return out


def target_lines(results: list[dict], threads: int) -> list[str]:
    """One line per target: the figure on each repeat and whether the target held on all."""
    if threads != 1:
        return [f"(the targets are for one thread; this run used {threads})"]
    lines = []
    for t in targets(results):
        if t["measure"] == "speedup":
            figures = " ".join(f"{v:.2f}x" for v in t["values"])
            goal = f"{t['goal']:.1f}x"
            what = "the reference"
        else:
            figures = " ".join(f"{100 * v:.0f}%" for v in t["values"])
            goal = f"{100 * t['goal']:.0f}%"
            what = "the read bandwidth"
        verdict = ("met" if not t["missed"] else
                   "MISSED on repeat " + ", ".join(str(r) for r in t["missed"]))
        lines.append(f"  {t['kernel']} {t['layout']} {t['dtype']}: {figures} of {what} "
                     f"(target {goal}: {verdict})")
    return lines


def format_table(results: list[dict], rows: int, rounds: int, threads: int,
                 notes: list[str] | None = None, clock: str = "wall") -> str:
    """The human-readable report: one table per repeat, then the targets."""
    head = (f"{'kernel':<14} {'layout':<6} {'dtype':<7} {'seconds':>9} {'GB/s':>6} "
            f"{'reference s':>11} {'speedup':>7} {'(min-max)':>11} {'read GB/s':>9} "
            f"{'of read':>7} {'(min-max)':>9}")
    repeats = sorted({r["repeat"] for r in results})
    out = [f"gdcode bench kernels: {threads} thread(s), {len(repeats)} repeat(s) of "
           f"{rounds} interleaved rounds, {clock} clock; dense {rows}x{DENSE_COLS}, csr {rows}x{SPARSE_COLS} "
           f"with {SPARSE_NNZ} nonzeros a row; softmax with {SOFTMAX_CLASSES} classes",
           "reference: numpy/scipy two passes (X @ w, then X.T @ r); seconds: medians over the "
           "rounds; speedup and of read: medians of the per-round ratios (min-max); read GB/s: "
           "the median numpy sum over the dense float64 X", *(notes or [])]
    for rep in repeats:
        out += ["", f"repeat {rep}:", head, "-" * len(head)]
        for r in (r for r in results if r["repeat"] == rep):
            speed = f"({r['speedup_min']:.2f}-{r['speedup_max']:.2f})"
            read = (f"({100 * r['read_fraction_min']:.0f}-"
                    f"{100 * r['read_fraction_max']:.0f}%)")
            out.append(f"{r['kernel']:<14} {r['layout']:<6} {r['dtype']:<7} "
                       f"{r['seconds']:>9.4g} {r['gbps']:>6.2f} {r['reference_seconds']:>11.4g} "
                       f"{r['speedup']:>6.2f}x {speed:>11} {r['bandwidth_gbps']:>9.2f} "
                       f"{100 * r['read_fraction']:>6.0f}% {read:>9}")
    out += ["", "targets (the median of each repeat, in order):", *target_lines(results, threads)]
    return "\n".join(out)


def _load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "load average unknown"


def main(args: argparse.Namespace) -> int:
    for flag in ("rows", "rounds", "repeat", "threads", "mlp_batch"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.clock == "cpu" and args.threads != 1:
        raise ConfigError("--clock cpu measures one thread's CPU time; use it with --threads 1")
    try:
        sizes = bench_mlp.parse_sizes(args.mlp_sizes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    only = parse_only(args.only)
    from gdcode import kernels
    from gdcode.kernels import calibrate, tuning

    if kernels.COMPILED:
        calibrate.ensure(force=args.recalibrate)
    load_before = _load()
    mlp_dtypes = [dtype for dtype in bench_mlp.DTYPES if selected(only, "mlp", "dense", dtype)]
    results = run(args.rows, args.rounds, args.threads, args.seed, args.repeat, args.clock, only)
    mlp_rows = bench_mlp.run(sizes, args.mlp_batch, args.rounds, args.threads, args.seed, mlp_dtypes)
    if args.json:
        print(json.dumps([{k: r[k] for k in JSON_KEYS} for r in results]
                         + [{k: r[k] for k in bench_mlp.JSON_KEYS} for r in mlp_rows], indent=1))
    else:
        notes = [f"machine: {tuning.cpu_description().get('model', '?')}, "
                 f"{os.cpu_count()} logical CPUs; {load_before} before, {_load()} after",
                 f"prefetch distances: {tuning.describe(kernels._linear)}"]
        if results:
            print(format_table(results, args.rows, args.rounds, args.threads, notes, args.clock))
        else:
            print("\n".join(notes))
        if mlp_dtypes:  # the rows, or the note that the MLP kernel is not built
            print("\n" + "\n".join(bench_mlp.format_rows(mlp_rows)))
        lines = bench_mlp.target_lines(mlp_rows, args.threads)
        if lines:
            print("\nmlp targets:\n" + "\n".join(lines))
    return 0
