"""Minibatch SGD pieces of the asynchronous modes, without MPI.

A worker holds the rows of its partition. Each step it takes a minibatch
(:class:`BatchSampler`: epochs of a seeded permutation, ``--batch-size`` rows a step, the
whole partition when the size is 0) and computes the stochastic gradient of
``f(w) = (1/n) sum_i loss_i(w) + (lambda/2) ||w||^2``:

* dense rows: ``g = (1/b) sum_{i in batch} grad loss_i(w) + lambda w``;
* CSR rows (:func:`sparse_step`): only the batch's non-zero columns ``J`` change, and the
  regulariser is split over the rows as in Hogwild (Niu et al., 2011): column ``j`` gets
  ``lambda (n / n_j) w_j`` from every batch row that uses it, where ``n_j`` counts the
  partition's rows using ``j`` (:func:`column_shares`), so the expected step is still the
  full gradient's.

:class:`Staleness` is the parameter server's rule for ``--max-staleness``.
"""

from __future__ import annotations

import numpy as np


class BatchSampler:
    """Minibatches of ``range(n_rows)``: consecutive slices of seeded per-epoch permutations.

    Parameters
    ----------
    n_rows : int
        Rows of the worker's partition.
    batch_size : int
        Rows a step; 0 (or at least ``n_rows``) means the whole partition every step.
    rng : numpy.random.Generator
        The worker's stream (drawn from only when batches are proper subsets).
    """

    def __init__(self, n_rows: int, batch_size: int, rng: np.random.Generator) -> None:
        if n_rows < 1:
            raise ValueError("a worker needs at least one row")
        if batch_size < 0:
            raise ValueError(f"batch size {batch_size} must be >= 0")
        self.n_rows = n_rows
        self.full = batch_size == 0 or batch_size >= n_rows
        self.size = n_rows if self.full else batch_size
        self.rng = rng
        self._perm = np.empty(0, dtype=np.intp)
        self._pos = 0

    def next(self) -> np.ndarray | None:
        """Sorted row indices of the next batch, or None for the whole partition."""
        if self.full:
            return None
        out = np.empty(self.size, dtype=np.intp)
        got = 0
        while got < self.size:
            if self._pos >= self._perm.size:
                self._perm = self.rng.permutation(self.n_rows)
                self._pos = 0
            take = min(self.size - got, self._perm.size - self._pos)
            out[got:got + take] = self._perm[self._pos:self._pos + take]
            got += take
            self._pos += take
        out.sort()
        return out


def column_shares(X) -> np.ndarray:
    """``n / n_j`` per column of CSR rows ``X`` (0 for columns no row uses)."""
    n, p = X.shape
    counts = np.bincount(X.indices[X.indptr[0]:X.indptr[-1]], minlength=p).astype(np.float64)
    return np.divide(float(n), counts, out=np.zeros(p), where=counts > 0)


def restrict_columns(Xb) -> tuple[np.ndarray, object]:
    """The non-zero columns ``J`` of CSR rows and the rows restricted to them (``Xb[:, J]``)."""
    import scipy.sparse as sp

    lo, hi = Xb.indptr[0], Xb.indptr[-1]
    cols, local = np.unique(Xb.indices[lo:hi], return_inverse=True)
    Xs = sp.csr_matrix((Xb.data[lo:hi], local.reshape(-1), Xb.indptr - lo), shape=(Xb.shape[0], cols.size))
    return cols, Xs


def sparse_step(model, Xb, yb: np.ndarray, w: np.ndarray, l2: float, share: np.ndarray, lr: float
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """One SGD step on CSR rows, touching only the parameters of their non-zero columns.

    Parameters
    ----------
    model : gdcode.models.Model
    Xb, yb
        The batch (scipy CSR rows and labels).
    w : numpy.ndarray
        The model the gradient is taken at (read only); for ``softmax`` the flattened
        ``(K, n_cols)`` matrix.
    l2 : float
        lambda.
    share : numpy.ndarray
        :func:`column_shares` of the partition the batch comes from.
    lr : float
        The step size.

    Returns
    -------
    index : numpy.ndarray
        The entries of ``w`` the step changes: those of the batch's columns ``J`` (for each
        of the K rows of a softmax parameter matrix).
    delta : numpy.ndarray
        Their change: ``-lr ((1/b) sum_i grad loss_i(w) + lambda (1/b) sum_i share_j w_j 1[j in row i])``.
    loss : float
        The batch's mean loss.
    """
    b, p = Xb.shape
    K = model.n_classes(w.size, p)
    cols, Xs = restrict_columns(Xb)
    wJ = np.ascontiguousarray(w.reshape(K, p)[:, cols]).reshape(-1)
    g = np.zeros(wJ.size)
    loss = model.loss_grad_sum(Xs, yb, np.ones(b), wJ, g)
    uses = np.bincount(Xs.indices, minlength=cols.size)  # type: ignore[attr-defined]  # batch rows using each column of J
    g += l2 * np.tile(share[cols] * uses, K) * wJ
    g *= -lr / b
    index = (np.arange(K)[:, None] * p + cols[None, :]).reshape(-1)
    return index, g, loss / b


def dense_gradient(model, Xb, yb: np.ndarray, w: np.ndarray, l2: float, grad: np.ndarray,
                   blocks: int = 2048, poll=None) -> float:
    """``grad <- (1/b) sum_i grad loss_i(w) + lambda w`` over the batch; returns the batch's mean loss.

    The rows go through the kernel ``blocks`` rows at a time, calling ``poll()`` between
    blocks (a worker answers its peers there); ``Xb`` may be dense or CSR.
    """
    b = Xb.shape[0]
    grad[:] = 0.0
    loss = 0.0
    ones = np.ones(min(b, blocks))
    for lo in range(0, b, blocks):
        hi = min(lo + blocks, b)
        loss += model.loss_grad_sum(Xb[lo:hi], yb[lo:hi], ones[:hi - lo], w, grad)
        if poll is not None and hi < b:
            poll()
    grad /= b
    grad += l2 * w
    return loss / b


class Staleness:
    """``--max-staleness K``: the server drops an update computed on a model more than K versions old.

    Parameters
    ----------
    max_staleness : int or None
        K; None accepts every update.
    n_workers : int
        Workers W, for the per-worker counts.

    Attributes
    ----------
    applied, dropped : numpy.ndarray
        Updates applied and dropped, per worker.
    version : int
        Updates applied so far: the server model's version.
    """

    def __init__(self, max_staleness: int | None, n_workers: int) -> None:
        if max_staleness is not None and max_staleness < 0:
            raise ValueError(f"max staleness {max_staleness} must be >= 0")
        self.max_staleness = max_staleness
        self.applied = np.zeros(n_workers, dtype=np.int64)
        self.dropped = np.zeros(n_workers, dtype=np.int64)
        self.max_seen = 0
        self.version = 0

    def admit(self, worker: int, base_version: int) -> bool:
        """Account one update from ``worker`` computed on model version ``base_version``.

        Returns True when it is to be applied (the version then advances by one), False
        when it is dropped.
        """
        staleness = self.version - base_version
        if staleness < 0:
            raise ValueError(f"an update based on version {base_version} came before version {self.version}")
        self.max_seen = max(self.max_seen, staleness)
        if self.max_staleness is not None and staleness > self.max_staleness:
            self.dropped[worker] += 1
            return False
        self.applied[worker] += 1
        self.version += 1
        return True
