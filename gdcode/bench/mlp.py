"""The MLP rows of ``gdcode bench kernels``: the fused BLAS kernel against its numpy twin and numpy matmul.

For the network ``--mlp-sizes`` (default 784-1024-1024-1024-10, relu, softmax output) on a
block of ``--mlp-batch`` rows (default 128), in float64 and float32, it times one forward and
backward pass (loss and gradient sum of the block) of the compiled kernel ``mlp_dense``
(workspace allocated once, outside the timing) and of its numpy twin
(:func:`gdcode.kernels.reference.mlp_dense`, which allocates its intermediates), and a numpy
matmul of two square ``MATMUL_N`` x ``MATMUL_N`` matrices of the same dtype: the machine's
matmul speed, measured in the same run. The three are timed in interleaved rounds and each
keeps its best, with BLAS limited to ``--threads`` threads.

GFLOP/s count the GEMM flops of a pass: ``2 B sum(d_in d_out)`` forward, the same for the
weight gradients, and again for the deltas of every layer but the first, ``B`` the batch;
the elementwise work (activations, softmax) is not counted.

Targets on one thread: the compiled kernel at least 1.0x its twin and at least 50% of the
numpy matmul GFLOP/s.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_SIZES = (784, 1024, 1024, 1024, 10)
DEFAULT_BATCH = 128
DTYPES = ("float64", "float32")
#: side of the square matmul that measures the machine's numpy GFLOP/s
MATMUL_N = 1024
#: minimum compiled/twin speed ratio and fraction of the matmul GFLOP/s, on one thread
RATIO_TARGET = 1.0
MATMUL_TARGET = 0.5

JSON_KEYS = ("kernel", "layout", "dtype", "sizes", "batch", "activation", "seconds", "gflops", "twin_seconds",
             "twin_gflops", "ratio", "matmul_gflops", "of_matmul")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mlp-sizes", default=",".join(map(str, DEFAULT_SIZES)), metavar="D0,D1,...,K",
                        help="layer widths of the MLP rows: input, hidden..., classes "
                             f"(default {'-'.join(map(str, DEFAULT_SIZES)).replace('-', ',')})")
    parser.add_argument("--mlp-batch", type=int, default=DEFAULT_BATCH, metavar="B",
                        help=f"rows of the MLP block (default {DEFAULT_BATCH})")


def parse_sizes(text: str) -> tuple[int, ...]:
    """``--mlp-sizes`` as widths; ValueError unless at least two whole numbers >= 1 (K >= 2)."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if len(sizes) < 2 or min(sizes) < 1 or sizes[-1] < 2:
        raise ValueError(f"--mlp-sizes {text!r} must be widths >= 1 separated by commas, the last (classes) >= 2")
    return sizes


def gemm_flops(sizes: tuple[int, ...], batch: int) -> int:
    """The GEMM flops of one forward and backward pass (see the module docstring)."""
    products = [d_in * d_out for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True)]
    return 2 * batch * (3 * sum(products) - products[0])


def _best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def measure(sizes: tuple[int, ...], batch: int, dtype: str, repeats: int, threads: int, seed: int,
            activation: str = "relu") -> dict:
    """One MLP row: compiled kernel, numpy twin and square numpy matmul in ``dtype``."""
    from threadpoolctl import threadpool_limits

    from gdcode import kernels
    from gdcode.kernels import reference
    from gdcode.models import MLP

    rng = np.random.default_rng([seed, 5])
    K = sizes[-1]
    X = rng.random((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, K, batch).astype(np.float64)
    coef = np.ones(batch)
    w = MLP(hidden=sizes[1:-1], activation=activation).initial_point(sizes[0], K, seed)
    grad = np.zeros_like(w)
    kernel = kernels.get("mlp_dense", compiled=True)
    work = np.empty(reference.mlp_work_size(sizes, batch, dtype), dtype=dtype)
    A = rng.standard_normal((MATMUL_N, MATMUL_N)).astype(dtype)
    B = rng.standard_normal((MATMUL_N, MATMUL_N)).astype(dtype)
    C = np.empty_like(A)

    fns = {"kernel": lambda: kernel(X, y, coef, w, grad, sizes, activation, work),
           "twin": lambda: reference.mlp_dense(X, y, coef, w, grad, sizes, activation),
           "matmul": lambda: np.matmul(A, B, out=C)}
    with threadpool_limits(limits=threads):
        best = _best(fns, repeats)
    flops = gemm_flops(sizes, batch)
    matmul = 2 * MATMUL_N**3 / best["matmul"] / 1e9
    gflops = flops / best["kernel"] / 1e9
    return {"kernel": "mlp", "layout": "dense", "dtype": dtype, "sizes": list(sizes), "batch": batch,
            "activation": activation, "seconds": best["kernel"], "gflops": gflops,
            "twin_seconds": best["twin"], "twin_gflops": flops / best["twin"] / 1e9,
            "ratio": best["twin"] / best["kernel"], "matmul_gflops": matmul, "of_matmul": gflops / matmul}


def run(sizes: tuple[int, ...] = DEFAULT_SIZES, batch: int = DEFAULT_BATCH, repeats: int = 11, threads: int = 1,
        seed: int = 0, dtypes: Sequence[str] = DTYPES) -> list[dict]:
    """The MLP rows of ``dtypes`` (default float64 then float32; an empty list when the MLP
    kernel is not built)."""
    from gdcode import kernels

    if not kernels.MLP_COMPILED:
        return []
    return [measure(sizes, batch, dtype, repeats, threads, seed) for dtype in dtypes]


def target_lines(results: list[dict], threads: int) -> list[str]:
    """One line per row: the ratio to the twin and the fraction of matmul, and whether each target is met."""
    if threads != 1:
        return []
    lines = []
    for r in results:
        ok_ratio, ok_matmul = r["ratio"] >= RATIO_TARGET, r["of_matmul"] >= MATMUL_TARGET
        lines.append(f"  mlp dense {r['dtype']}: {r['ratio']:.2f}x the twin (target {RATIO_TARGET:.1f}x: "
                     f"{'met' if ok_ratio else 'MISSED'}), {100 * r['of_matmul']:.0f}% of numpy matmul "
                     f"(target {100 * MATMUL_TARGET:.0f}%: {'met' if ok_matmul else 'MISSED'})")
    return lines


def format_rows(results: list[dict]) -> list[str]:
    """The MLP table (no targets)."""
    if not results:
        return ["mlp: the compiled MLP kernel is not built"]
    r0 = results[0]
    head = (f"{'kernel':<14} {'dtype':<7} {'seconds':>9} {'GFLOP/s':>8} {'twin s':>9} {'twin GF/s':>9} "
            f"{'ratio':>6} {'matmul GF/s':>11} {'of matmul':>9}")
    out = [f"mlp {'-'.join(map(str, r0['sizes']))} ({r0['activation']}, softmax), batch {r0['batch']}: one "
           "forward and backward pass; twin: numpy (reference.mlp_dense); matmul: numpy "
           f"{MATMUL_N}x{MATMUL_N} in this run", head, "-" * len(head)]
    for r in results:
        out.append(f"{'mlp':<14} {r['dtype']:<7} {r['seconds']:>9.4g} {r['gflops']:>8.1f} {r['twin_seconds']:>9.4g} "
                   f"{r['twin_gflops']:>9.1f} {r['ratio']:>5.2f}x {r['matmul_gflops']:>11.1f} "
                   f"{100 * r['of_matmul']:>8.0f}%")
    return out
