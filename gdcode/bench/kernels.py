"""Kernel throughput: compiled fused kernels against the numpy/scipy two-pass reference.

For each objective and layout (dense float64, dense float32, CSR float64), on data larger
than a typical last-level cache (dense 200000 x 200; CSR 200000 rows, 50000 columns, 30
nonzeros a row), it times the compiled loss-and-gradient kernel on the whole block, the
two-pass reference on the same data (``X @ w``, then ``X.T @ r``, with numpy/scipy; for
float32 the parameters are cast to float32 so that numpy reads ``X`` in place), and a numpy
sum over the dense float64 ``X``. The three are timed in interleaved rounds and each keeps
its best round, so a busy machine slows all three alike. The machine's single-read bandwidth
is the best sum of the whole run, the same figure in every row. BLAS is limited to
``--threads`` threads while timing the reference.

Targets on one thread: dense logistic and least-squares at least 2.0x the reference and at
least 70% of the read bandwidth; CSR logistic and least-squares at least 1.8x the reference.

Then the MLP rows (:mod:`gdcode.bench.mlp`): one forward and backward pass of the compiled MLP
kernel against its numpy twin and the machine's numpy matmul GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
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

#: (objective, layout) -> minimum speedup over the reference on one thread
SPEEDUP_TARGETS = {("logistic", "dense"): 2.0, ("least-squares", "dense"): 2.0,
                   ("logistic", "csr"): 1.8, ("least-squares", "csr"): 1.8}
#: (objective, layout) -> minimum fraction of the read bandwidth on one thread
BANDWIDTH_TARGETS = {("logistic", "dense"): 0.7, ("least-squares", "dense"): 0.7}

JSON_KEYS = ("kernel", "layout", "dtype", "seconds", "gbps", "reference_seconds", "speedup",
             "bandwidth_gbps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=200_000,
                        help="rows of the dense and the CSR matrix (default 200000)")
    parser.add_argument("--repeats", type=int, default=11,
                        help="timed rounds; each measurement keeps its best (default 11)")
    parser.add_argument("--threads", type=int, default=1,
                        help="n_threads of the kernels and BLAS threads of the reference "
                             "(default 1; the targets are for one thread)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data")
    bench_mlp.add_arguments(parser)


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


def _best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall-clock seconds of each function, timed in interleaved rounds."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():  # warm-up: page faults, caches, lazy imports
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def measure(case: Case, X64: np.ndarray, repeats: int, threads: int) -> dict:
    """One result row: the kernel, the reference and the read bandwidth on ``case``."""
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
        best = _best({"kernel": run_kernel, "reference": run_reference, "sum": X64.sum},
                     repeats)
    seconds, ref = best["kernel"], best["reference"]
    return {
        "kernel": case.objective,
        "layout": case.layout,
        "dtype": case.dtype,
        "seconds": seconds,
        "gbps": case.x_bytes / seconds / 1e9,
        "reference_seconds": ref,
        "speedup": ref / seconds,
        "bandwidth_gbps": X64.nbytes / best["sum"] / 1e9,  # this row's; see run()
    }


def run(rows: int = 200_000, repeats: int = 11, threads: int = 1, seed: int = 0) -> list[dict]:
    """Measure every objective on every layout; the rows of ``gdcode bench kernels``."""
    from gdcode import kernels

    if not kernels.COMPILED:
        raise ConfigError("the compiled kernels are not built, so there is nothing to "
                          "benchmark; run `make install`")
    X64 = dense_data(rows, seed)
    X32 = X64.astype(np.float32)
    Xcsr = csr_data(rows, seed)
    blocks = {("dense", "float64"): X64, ("dense", "float32"): X32, ("csr", "float64"): Xcsr}
    results = []
    for objective in OBJECTIVES:
        for layout, dtype in CASES:
            X = blocks[layout, dtype]
            n_cols = X.shape[1]
            scale = 1.0 / np.sqrt(SPARSE_NNZ if layout == "csr" else n_cols)
            case = Case(objective, layout, dtype, X, labels(objective, X, seed),
                        parameters(objective, n_cols, scale, seed), x_bytes(X))
            results.append(measure(case, X64, repeats, threads))
    bandwidth = max(r["bandwidth_gbps"] for r in results)
    for r in results:
        r["bandwidth_gbps"] = bandwidth
    return results


def target_lines(results: list[dict], threads: int) -> list[str]:
    """One line per speed target: the measured figures and whether each is met."""
    if threads != 1:
        return [f"(the targets are for one thread; this run used {threads})"]
    lines = []
    for r in results:
        key = (r["kernel"], r["layout"])
        if key not in SPEEDUP_TARGETS:
            continue
        goal = SPEEDUP_TARGETS[key]
        parts = [f"{r['speedup']:.2f}x the reference (target {goal:.1f}x: "
                 f"{'met' if r['speedup'] >= goal else 'MISSED'})"]
        if key in BANDWIDTH_TARGETS:
            frac, goal = r["gbps"] / r["bandwidth_gbps"], BANDWIDTH_TARGETS[key]
            parts.append(f"{100 * frac:.0f}% of the read bandwidth (target {100 * goal:.0f}%: "
                         f"{'met' if frac >= goal else 'MISSED'})")
        lines.append(f"  {r['kernel']} {r['layout']} {r['dtype']}: {', '.join(parts)}")
    return lines


def format_table(results: list[dict], rows: int, repeats: int, threads: int) -> str:
    """The human-readable report."""
    head = (f"{'kernel':<14} {'layout':<6} {'dtype':<7} {'seconds':>9} {'GB/s':>6} "
            f"{'reference s':>11} {'speedup':>7} {'read GB/s':>9} {'of read':>7}")
    out = [f"gdcode bench kernels: {threads} thread(s), best of {repeats} interleaved rounds; "
           f"dense {rows}x{DENSE_COLS}, csr {rows}x{SPARSE_COLS} with {SPARSE_NNZ} nonzeros "
           f"a row; softmax with {SOFTMAX_CLASSES} classes",
           "reference: numpy/scipy two passes (X @ w, then X.T @ r); read GB/s: the best numpy "
           "sum over the dense float64 X in this run", "", head, "-" * len(head)]
    for r in results:
        out.append(f"{r['kernel']:<14} {r['layout']:<6} {r['dtype']:<7} {r['seconds']:>9.4g} "
                   f"{r['gbps']:>6.2f} {r['reference_seconds']:>11.4g} {r['speedup']:>6.2f}x "
                   f"{r['bandwidth_gbps']:>9.2f} {100 * r['gbps'] / r['bandwidth_gbps']:>6.0f}%")
    out += ["", "targets:", *target_lines(results, threads)]
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    if args.rows < 1:
        raise ConfigError(f"--rows must be at least 1, got {args.rows}")
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if args.mlp_batch < 1:
        raise ConfigError(f"--mlp-batch must be at least 1, got {args.mlp_batch}")
    try:
        sizes = bench_mlp.parse_sizes(args.mlp_sizes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    results = run(args.rows, args.repeats, args.threads, args.seed)
    mlp_rows = bench_mlp.run(sizes, args.mlp_batch, args.repeats, args.threads, args.seed)
    if args.json:
        print(json.dumps([{k: r[k] for k in JSON_KEYS} for r in results]
                         + [{k: r[k] for k in bench_mlp.JSON_KEYS} for r in mlp_rows], indent=1))
    else:
        print(format_table(results, args.rows, args.repeats, args.threads))
        print("\n" + "\n".join(bench_mlp.format_rows(mlp_rows)))
        lines = bench_mlp.target_lines(mlp_rows, args.threads)
        if lines:
            print("\nmlp targets:\n" + "\n".join(lines))
    return 0
