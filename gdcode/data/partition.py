"""Splitting training rows into partitions, and a worker's share of them.

Pure functions of (rows, partitions, code), so they are tested without MPI.
"""

from __future__ import annotations

import numpy as np

from gdcode.kernels.reference import issparse


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


def worker_rows(bounds: np.ndarray,
                coefficients: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
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
    """Concatenate ``(X, y)`` row blocks (dense or scipy.sparse) into one ``(X, y)``.

    One block comes back as it is (as CSR when sparse); several are copied once into
    preallocated arrays, so a worker's peak memory is at most twice its rows.
    """
    if not blocks:
        raise ValueError("stack_rows needs at least one block")
    Xs = [b[0] for b in blocks]
    if len(blocks) == 1:
        X = Xs[0].tocsr() if issparse(Xs[0]) else np.ascontiguousarray(Xs[0])
        return X, np.asarray(blocks[0][1])
    y = np.concatenate([b[1] for b in blocks])
    if any(issparse(X) for X in Xs):
        import scipy.sparse as sp

        return _stack_csr([sp.csr_matrix(X) for X in Xs]), y
    out = np.empty((sum(X.shape[0] for X in Xs), Xs[0].shape[1]),
                   dtype=np.result_type(*[X.dtype for X in Xs]))
    row = 0
    for X in Xs:
        out[row:row + X.shape[0]] = X
        row += X.shape[0]
    return out, y


def _stack_csr(Xs: list) -> object:
    import scipy.sparse as sp

    n_cols = Xs[0].shape[1]
    if any(X.shape[1] != n_cols for X in Xs):
        raise ValueError("row blocks have different numbers of columns")
    nnz = sum(X.nnz for X in Xs)
    rows = sum(X.shape[0] for X in Xs)
    index = np.int32 if max(nnz, n_cols) < np.iinfo(np.int32).max else np.int64
    data = np.empty(nnz, dtype=np.result_type(*[X.dtype for X in Xs]))
    indices = np.empty(nnz, dtype=index)
    indptr = np.empty(rows + 1, dtype=index)
    indptr[0] = 0
    r = v = 0
    for X in Xs:
        k, m = X.nnz, X.shape[0]
        data[v:v + k] = X.data[X.indptr[0]:X.indptr[0] + k]
        indices[v:v + k] = X.indices[X.indptr[0]:X.indptr[0] + k]
        indptr[r + 1:r + m + 1] = X.indptr[1:] - X.indptr[0] + v
        r, v = r + m, v + k
    return sp.csr_matrix((data, indices, indptr), shape=(rows, n_cols), copy=False)
