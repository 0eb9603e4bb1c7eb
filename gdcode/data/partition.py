"""Splitting training rows into partitions, and a worker's share of them.

Pure functions of (rows, partitions, code), so they are tested without MPI.
"""

from __future__ import annotations

import numpy as np


def partition_bounds(n_rows: int, n_parts: int) -> np.ndarray:
    """Row bounds of ``n_parts`` contiguous, near-equal partitions: shape ``(n_parts + 1,)``.

    The first ``n_rows % n_parts`` partitions get one row more (``numpy.array_split``'s rule).
    """
    if n_parts < 1:
        raise ValueError(f"the number of partitions must be positive, got {n_parts}")
    if n_rows < n_parts:
        raise ValueError(f"{n_rows} training rows cannot fill {n_parts} partitions; "
                         "use more rows or fewer workers")
    base, extra = divmod(n_rows, n_parts)
    sizes = np.full(n_parts, base, dtype=np.int64)
    sizes[:extra] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def partition_sizes(n_rows: int, n_parts: int) -> np.ndarray:
    """Rows in each partition."""
    return np.diff(partition_bounds(n_rows, n_parts))


def worker_rows(bounds: np.ndarray, coefficients: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The row ranges a worker reads and one coefficient per row read.

    Parameters
    ----------
    bounds : numpy.ndarray
        From :func:`partition_bounds`.
    coefficients : numpy.ndarray
        The worker's row of the encoding matrix B (one entry per partition).

    Returns
    -------
    ranges : list of (start, stop)
        Row ranges of the partitions with a non-zero coefficient, in partition order.
    row_coef : numpy.ndarray
        ``B[i, j]`` repeated over the rows of each such partition (concatenated in that order).
    """
    ranges, coefs = [], []
    for j in np.flatnonzero(coefficients):
        lo, hi = int(bounds[j]), int(bounds[j + 1])
        ranges.append((lo, hi))
        coefs.append(np.full(hi - lo, float(coefficients[j])))
    row_coef = np.concatenate(coefs) if coefs else np.empty(0)
    return ranges, row_coef


def stack_rows(blocks: list[tuple]) -> tuple:
    """Concatenate ``(X, y)`` row blocks (dense or scipy.sparse) into one ``(X, y)``."""
    import scipy.sparse as sp

    Xs = [b[0] for b in blocks]
    if any(sp.issparse(X) for X in Xs):
        X = sp.vstack(Xs, format="csr")
    else:
        X = np.ascontiguousarray(np.vstack(Xs))
    return X, np.concatenate([b[1] for b in blocks])
