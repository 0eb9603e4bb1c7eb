"""``gdcode prepare synthetic``: the seeded Gaussian mixture, dense or sparse, streamed to disk.

Dense: exactly the rows of ``--dataset synthetic:ROWSxCOLS`` with the same seed and test
fraction (:mod:`gdcode.data.synthetic`; the last ``round(ROWS * f)`` rows are held out).

Sparse (``--sparse``): the same model on ``k`` random columns per row. Row i picks ``k``
distinct columns, its mixture component ``c_i`` in {-1, +1} and values
``x_ij = c_i (1.5/k) beta_j + (10/sqrt(k)) z_ij`` on those columns (the dense generator with
``k`` in place of the column count), label +1 with probability ``sigmoid(x_i . beta)``.
Rows come in seeded blocks, so memory stays at one block whatever the size of the set.
"""

from __future__ import annotations

import os

import numpy as np

from gdcode.data import synthetic
from gdcode.data.prepared import PreparedWriter

BLOCK = synthetic.BLOCK


def sparse_block(index: int, cols: int, k: int, seed: int, beta: np.ndarray):
    """Block ``index`` of the sparse sequence: ``(indices, values, y)``, indices sorted per row."""
    rng = np.random.default_rng([seed, 0x5EED, 2, index])
    # k sorted draws from 0..cols-k, plus 0..k-1: k distinct sorted columns per row
    idx = np.sort(rng.integers(0, cols - k + 1, size=(BLOCK, k)), axis=1) + np.arange(k)
    component = rng.integers(0, 2, size=BLOCK) * 2.0 - 1.0
    vals = (1.5 / k) * component[:, None] * beta[idx]
    vals += (10.0 / np.sqrt(k)) * rng.standard_normal((BLOCK, k))
    margin = np.einsum("ij,ij->i", vals, beta[idx])
    p = 1.0 / (1.0 + np.exp(-np.clip(margin, -500, 500)))
    y = np.where(rng.random(BLOCK) < p, 1.0, -1.0)
    return idx, vals, y


def generate_sparse(start: int, stop: int, cols: int, k: int, seed: int):
    """Rows ``start:stop`` of the sparse sequence as ``(CSR, y)``."""
    import scipy.sparse as sp

    beta = synthetic.true_beta(cols, seed)
    idx_parts, val_parts, y_parts = [], [], []
    for b in range(start // BLOCK, (stop - 1) // BLOCK + 1) if stop > start else []:
        idx, vals, y = sparse_block(b, cols, k, seed, beta)
        lo, hi = max(start, b * BLOCK) - b * BLOCK, min(stop, (b + 1) * BLOCK) - b * BLOCK
        idx_parts.append(idx[lo:hi])
        val_parts.append(vals[lo:hi])
        y_parts.append(y[lo:hi])
    n = stop - start
    if n <= 0:
        return sp.csr_matrix((0, cols)), np.empty(0)
    indices = np.concatenate(idx_parts).ravel()
    data = np.concatenate(val_parts).ravel()
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    X = sp.csr_matrix((data, indices.astype(np.int32 if cols < 2**31 else np.int64), indptr),
                      shape=(n, cols))
    return X, np.concatenate(y_parts)


def write(out: str | os.PathLike, rows: int, cols: int, *, seed: int, test_fraction: float,
          nnz_per_row: int | None = None, force: bool = False, chunk_rows: int = 64 * BLOCK,
          progress=None):
    """Stream the synthetic set to a prepared directory; return ``(path, meta)``.

    ``nnz_per_row`` None writes the dense set, an integer the sparse one.
    """
    from gdcode.errors import ConfigError

    if rows < 1 or cols < 1:
        raise ConfigError("--rows and --cols must be positive integers")
    if nnz_per_row is not None and not 1 <= nnz_per_row <= cols:
        raise ConfigError(f"--nnz-per-row {nnz_per_row} must be between 1 and --cols {cols}")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"--test-fraction {test_fraction} must be in [0, 1)")
    n_test = int(round(rows * test_fraction))
    n_train = rows - n_test
    if n_train < 1:
        raise ConfigError(f"{rows} rows with --test-fraction {test_fraction} leave no "
                          "training rows")
    sparse = nnz_per_row is not None
    per_row = nnz_per_row or 0
    writer = PreparedWriter(out, "csr" if sparse else "dense", cols, force=force)
    try:
        for split, lo, hi in (("train", 0, n_train), ("test", n_train, rows)):
            writer.begin(split, hi - lo, (hi - lo) * per_row if sparse else None)
            for a in range(lo, hi, chunk_rows):
                b = min(hi, a + chunk_rows)
                if sparse:
                    X, y = generate_sparse(a, b, cols, per_row, seed)
                else:
                    X, y = synthetic.generate(a, b, cols, seed)
                writer.append(split, X, y)
                if progress is not None:
                    progress(b, rows)
            writer.end(split)
        kind = f"sparse, {nnz_per_row} values per row" if sparse else "dense"
        meta = {"task": "binary", "n_classes": 2, "classes": [-1, 1],
                "label_rule": "generated +1/-1", "standardized": None,
                "split": {"seed": seed, "test_fraction": test_fraction,
                          "rule": "the last round(n*f) generated rows held out (rows are i.i.d.)"},
                "source": {"kind": "synthetic", "rows": rows, "cols": cols, "seed": seed,
                           "nnz_per_row": nnz_per_row,
                           "generator": f"Gaussian mixture of the gradient-coding papers ({kind})"}}
        path = writer.finish(meta)
    except BaseException:
        writer.abort()
        raise
    return path, meta
