"""The gradient-code interface (DESIGN section 7).

Worker ``i`` sends ``y_i = sum_j B[i, j] g_j``, with ``g_j`` the gradient sum of partition ``j``;
the coordinator forms ``sum_i a_i y_i`` with the weights ``a = code.decode(responders)``.

Multi-message codes (``n_messages > 1``, the partial schemes) split ``B`` into
``message_matrices``: for message ``k`` worker ``i`` sends ``sum_j M_k[i, j] g_j``, their
``decode`` takes ``(worker, message)`` pairs and returns weights of shape
``(n_messages, n_workers)``; the gradient sum is ``sum_k sum_i a[k, i] y_{i,k}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class GradientCode:
    """Base class of every code: an encoding matrix and a decoder.

    Subclasses set :attr:`B` (shape ``(n_workers, n_partitions)``, float64) and
    :attr:`exact`, and implement :meth:`decode`. ``decode`` must be consistent on prefixes:
    once it returns weights for some arrival sequence, a longer sequence with the same start
    returns the same weights (the extra arrivals are ignored).

    Attributes
    ----------
    n_workers : int
        W, the number of workers.
    n_stragglers : int
        S, the stragglers the code is built for.
    exact : bool
        ``True`` when a decode returns weights with ``a @ B == 1`` (the exact gradient sum)
        for every set of ``W - S`` responders.
    B : numpy.ndarray
        The encoding matrix.
    """

    name: str = ""
    exact: bool = True
    #: number of messages each worker sends per iteration (2 for the partial schemes)
    n_messages: int = 1
    #: True when every decode puts weight 1 on rows with disjoint supports that cover every
    #: partition once, so ``a.B = 1`` holds exactly in floating point (no numerical check needed)
    exact_by_construction: bool = False

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0) -> None:
        check_workers_stragglers(n_workers, n_stragglers)
        self.n_workers = int(n_workers)
        self.n_stragglers = int(n_stragglers)
        self.seed = int(seed)
        self.B = np.eye(self.n_workers)
        #: the keyword options it was built with (set by :func:`gdcode.codes.build`)
        self.options: dict = {}

    @property
    def n_partitions(self) -> int:
        return int(self.B.shape[1])

    @property
    def straggler_tolerance(self) -> int:
        """Stragglers every decode survives: S, except for codes that wait for everyone (0)."""
        return self.n_stragglers

    @property
    def message_matrices(self) -> list[np.ndarray]:
        """One ``(n_workers, n_partitions)`` matrix per message; ``[B]`` for one message."""
        return [self.B]

    def load(self) -> np.ndarray:
        """Fraction of the partitions each worker holds, shape ``(n_workers,)``."""
        return np.count_nonzero(self.B, axis=1) / self.n_partitions

    def partitions_of(self, worker: int) -> np.ndarray:
        """Indices of the partitions worker ``worker`` (0-based) holds."""
        return np.flatnonzero(self.B[worker])

    def decode(self, responders: Sequence) -> np.ndarray | None:
        """Decoding weights from the workers that replied, in arrival order.

        Parameters
        ----------
        responders : sequence of int
            0-based worker indices, in the order their replies arrived (repeats are
            ignored). Multi-message codes take ``(worker, message)`` pairs instead.

        Returns
        -------
        numpy.ndarray or None
            Weights ``a`` of length ``n_workers`` (zero off the responders), or ``None`` while
            the code cannot decode yet. Multi-message codes return shape
            ``(n_messages, n_workers)``.
        """
        raise NotImplementedError

    def combined(self, weights: np.ndarray) -> np.ndarray:
        """The weight each partition gets in the decoded sum: ``sum_k a[k] @ M_k``.

        Equal to ``a @ B`` for a one-message code; all ones for an exact decode.
        """
        w = np.asarray(weights, dtype=float).reshape(self.n_messages, self.n_workers)
        return sum(w[k] @ m for k, m in enumerate(self.message_matrices))

    def residual(self, weights: np.ndarray) -> float:
        """``max_j |(a.B)_j - 1|``: 0 for an exact decode (up to rounding)."""
        return float(np.max(np.abs(self.combined(weights) - 1.0)))

    def facts(self) -> dict:
        """Construction facts worth reporting beside the diagnostics (none by default)."""
        return {}

    def _arrivals(self, responders: Sequence[int]) -> list[int]:
        """The responders as checked worker indices without repeats, first arrival kept."""
        got = unique_in_order(responders)
        for r in got:
            if not 0 <= r < self.n_workers:
                raise ValueError(f"responder {r} is not a worker index 0..{self.n_workers - 1}")
        return got

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_workers={self.n_workers}, n_stragglers={self.n_stragglers})"


def check_workers_stragglers(n_workers: int, n_stragglers: int) -> None:
    """Raise ValueError unless ``W >= 1`` and ``0 <= S < W``."""
    if int(n_workers) != n_workers or n_workers < 1:
        raise ValueError(f"the number of workers W = {n_workers} must be a positive integer")
    if int(n_stragglers) != n_stragglers or not 0 <= n_stragglers < n_workers:
        raise ValueError(f"the number of stragglers S = {n_stragglers} must satisfy 0 <= S < W = {n_workers}")


def check_collect(collect: int | None, n_workers: int, n_stragglers: int) -> int:
    """The number of replies an approximate code waits for: ``collect`` or ``W - S``."""
    if collect is None:
        return n_workers - n_stragglers
    if int(collect) != collect or not 1 <= collect <= n_workers:
        raise ValueError(f"collect = {collect} replies must be an integer between 1 and W = {n_workers}")
    return int(collect)


def unique_in_order(responders: Sequence[int]) -> list[int]:
    """The responders without repeats, first arrival kept."""
    seen: set[int] = set()
    out = []
    for r in responders:
        if r not in seen:
            seen.add(r)
            out.append(int(r))
    return out


def lstsq_weights(B: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """Least-squares weights on ``rows``: ``argmin_a ||a @ B[rows] - 1||``, zero elsewhere.

    Solved by ``numpy.linalg.lstsq`` (SVD, numpy's default cut-off for small singular
    values), so a rank-deficient set of rows gets the minimum-norm weights.
    """
    a = np.zeros(B.shape[0])
    rows = list(rows)
    if rows:
        a[rows] = np.linalg.lstsq(B[rows].T, np.ones(B.shape[1]), rcond=None)[0]
    return a


def uniform_sample_moments(B: np.ndarray, weight: float, collect: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``w = a @ B`` when ``a`` is ``weight`` on a uniformly random set of
    ``collect`` of the ``W`` rows and 0 elsewhere (sampling without replacement).

    ``E w = weight q 1^T B`` and ``Cov w = weight^2 q(1-q) W/(W-1) B^T (I - J/W) B`` with
    ``q = collect/W``.
    """
    W = B.shape[0]
    q = collect / W
    mean = weight * q * B.sum(axis=0)
    if W == 1:
        return mean, np.zeros((B.shape[1], B.shape[1]))
    centred = B - B.mean(axis=0)
    return mean, weight * weight * q * (1 - q) * W / (W - 1) * (centred.T @ centred)


def first_per_group(arrivals: Sequence[int], group_of: np.ndarray, n_groups: int) -> dict[int, int]:
    """The first worker of each group to arrive, as ``{group: worker}``, in arrival order."""
    first: dict[int, int] = {}
    for r in arrivals:
        g = int(group_of[r])
        if g not in first:
            first[g] = r
            if len(first) == n_groups:
                break
    return first
