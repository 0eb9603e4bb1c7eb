"""Stochastic gradient coding: a pair-wise balanced assignment and fixed weights 1/(d(1-p))."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode.codes.base import GradientCode, check_collect, kth_arrival, uniform_sample_moments
from gdcode.codes.registry import CODES


def pair_overlaps(M: np.ndarray) -> np.ndarray:
    """``lambda[j, k]``: how many workers hold both partitions ``j`` and ``k`` (diagonal: d)."""
    Mi = M.astype(np.int64)
    return Mi.T @ Mi


def balanced_assignment(n: int, d: int, rng: np.random.Generator, sweeps: int = 60) -> np.ndarray:
    """A 0/1 ``n x n`` matrix with ``d`` ones per row and per column and near-equal pair overlaps.

    Starts from the cyclic layout (worker i holds i..i+d-1) under random relabellings of
    workers and partitions, then swaps partitions between pairs of workers (which keeps every
    row and column sum) when the swap does not increase ``sum_{j<k} lambda_jk^2``. That sum is
    smallest when every pair overlap is the floor or the ceiling of the mean
    ``d(d-1)/(n-1)``; the search stops there or after ``sweeps * n`` swap attempts.
    """
    M = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        M[i, (i + np.arange(d)) % n] = 1
    M = M[rng.permutation(n)][:, rng.permutation(n)]
    if d in (0, 1, n - 1, n) or n < 4:
        return M  # every assignment is equally balanced
    lam = pair_overlaps(M)
    target = _best_objective(n, d)
    obj = _objective(lam)
    for _ in range(sweeps * n):
        if obj <= target:
            break
        a, b = rng.choice(n, 2, replace=False)
        only_a = np.flatnonzero((M[a] == 1) & (M[b] == 0))
        only_b = np.flatnonzero((M[b] == 1) & (M[a] == 0))
        if not only_a.size:
            continue
        j = only_a[rng.integers(only_a.size)]
        k = only_b[rng.integers(only_b.size)]
        xs = only_a[only_a != j]  # a keeps these and trades j for k
        ys = only_b[only_b != k]  # b keeps these and trades k for j
        delta = (2 * (lam[k, xs] - lam[j, xs]).sum() + 2 * xs.size
                 + 2 * (lam[j, ys] - lam[k, ys]).sum() + 2 * ys.size)
        if delta <= 0:
            M[a, j], M[a, k], M[b, k], M[b, j] = 0, 1, 0, 1
            lam[j, xs] -= 1
            lam[xs, j] -= 1
            lam[k, xs] += 1
            lam[xs, k] += 1
            lam[k, ys] -= 1
            lam[ys, k] -= 1
            lam[j, ys] += 1
            lam[ys, j] += 1
            obj += delta
    return M


def _objective(lam: np.ndarray) -> int:
    off = lam[np.triu_indices(lam.shape[0], 1)]
    return int((off ** 2).sum())


def _best_objective(n: int, d: int) -> int:
    """The least ``sum_{j<k} lambda_jk^2`` possible: overlaps all the floor or ceiling of the mean."""
    pairs = n * (n - 1) // 2
    total = n * d * (d - 1) // 2
    lo = total // pairs
    n_hi = total - lo * pairs
    return (pairs - n_hi) * lo ** 2 + n_hi * (lo + 1) ** 2


@CODES.register("sgc")
class StochasticGradientCode(GradientCode):
    """Stochastic gradient coding: d partitions per worker, pair-wise balanced, fixed weights 1/(d(1-p)).

    Construction: W partitions; each worker holds d of them and each partition is held by d
    workers, with the pair overlaps (workers holding both of two partitions) as equal as a
    seeded local search makes them (``pair_overlap_range``; every overlap is d(d-1)/(W-1)
    in a perfect design). Worker i sends the sum of its d partition gradients and the
    coordinator weights every reply by ``1/(d(1-p))``, ``p`` being the straggler
    probability.

    Decode: after ``collect`` distinct replies (default W-S), the fixed weight on each of the
    first ``collect``. Unbiased when each worker replies independently with probability
    ``1-p``, and when the replies are a uniformly random set of ``collect`` workers with
    ``p = 1 - collect/W`` (the default ``p``). Covariance of the partition weights
    ``w = a B``: ``c^2 q(1-q) W/(W-1) B^T (I - J/W) B`` for a uniformly random set of
    ``collect`` replies (``q = collect/W``, ``c = 1/(d(1-p))``), ``c^2 p(1-p) B^T B`` for
    independent stragglers. Not exact.

    Reference: Bitar, Wootters, El Rouayheb, "Stochastic Gradient Coding for Straggler
    Mitigation in Distributed Learning", IEEE JSAIT 2020, arXiv:1905.05383.

    Parameters
    ----------
    degree : int, optional
        d, partitions per worker (1 <= d <= W; default S + 1).
    p : float, optional
        Straggler probability, 0 <= p < 1 (default ``1 - collect/W``, which is S/W).
    collect : int, optional
        Replies to decode from (default W - S).
    """

    exact = False

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0,
                 degree: int | None = None, p: float | None = None,
                 collect: int | None = None) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        W = self.n_workers
        d = self.n_stragglers + 1 if degree is None else degree
        if int(d) != d or not 1 <= d <= W:
            raise ValueError(f"degree d = {degree} must be an integer with 1 <= d <= W = {W}")
        self.degree = int(d)
        self.collect = check_collect(collect, W, self.n_stragglers)
        p = 1.0 - self.collect / W if p is None else p
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"straggler probability p = {p} must satisfy 0 <= p < 1")
        self.p = float(p)
        self.weight = 1.0 / (self.degree * (1.0 - self.p))
        self.B = balanced_assignment(W, self.degree, np.random.default_rng(self.seed)).astype(float)
        lam = pair_overlaps(self.B)
        off = lam[np.triu_indices(W, 1)]
        self.pair_overlap_range = (int(off.min()), int(off.max())) if off.size else (0, 0)

    def facts(self) -> dict:
        return {"degree": self.degree, "p": self.p, "weight": self.weight, "collect": self.collect,
                "pair_overlap_range": list(self.pair_overlap_range)}

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        got = self._arrivals(responders)
        if len(got) < self.collect:
            return None
        a = np.zeros(self.n_workers)
        a[got[:self.collect]] = self.weight
        return a

    decodes_any_set = True

    def decode_now(self, responders: Sequence[int]) -> np.ndarray | None:
        """Every responder at weight ``W / (degree k)`` for ``k`` of them: unbiased when they are a
        uniformly random set."""
        got = self._arrivals(responders)
        if not got:
            return None
        a = np.zeros(self.n_workers)
        a[got] = self.n_workers / (self.degree * len(got))
        return a

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The ``collect``-th reply."""
        return kth_arrival(np.asarray(arrivals, dtype=float)[:, :, 0], self.collect)

    def weight_moments(self, independent: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance matrix of the partition weights ``a @ B`` over random stragglers.

        Parameters
        ----------
        independent : bool
            Each worker replies independently with probability ``1-p`` (``True``), or the
            replies are a uniformly random set of ``collect`` workers (``False``, the decode).
        """
        if independent:
            mean = self.weight * (1 - self.p) * self.B.sum(axis=0)
            return mean, self.weight ** 2 * self.p * (1 - self.p) * (self.B.T @ self.B)
        return uniform_sample_moments(self.B, self.weight, self.collect)
