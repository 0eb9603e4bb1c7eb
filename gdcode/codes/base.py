"""The gradient-code interface (DESIGN section 7).

Worker ``i`` sends ``y_i = sum_j B[i, j] g_j``, with ``g_j`` the gradient sum of partition ``j``;
the coordinator forms ``sum_i a_i y_i`` with the weights ``a = code.decode(responders)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class GradientCode:
    """Base class of every code: an encoding matrix and a decoder.

    Subclasses set :attr:`B` (shape ``(n_workers, n_partitions)``, float64) and
    :attr:`exact`, and implement :meth:`decode`.

    Attributes
    ----------
    n_workers : int
        W, the number of workers.
    n_stragglers : int
        S, the stragglers the code is built for.
    exact : bool
        ``True`` when a decode returns weights with ``a @ B == 1`` (the exact gradient sum).
    B : numpy.ndarray
        The encoding matrix.
    """

    name: str = ""
    exact: bool = True
    #: number of messages each worker sends per iteration (2 for the partial schemes)
    n_messages: int = 1

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0) -> None:
        check_workers_stragglers(n_workers, n_stragglers)
        self.n_workers = int(n_workers)
        self.n_stragglers = int(n_stragglers)
        self.seed = int(seed)
        self.B = np.eye(self.n_workers)

    @property
    def n_partitions(self) -> int:
        return int(self.B.shape[1])

    def load(self) -> np.ndarray:
        """Fraction of the partitions each worker holds, shape ``(n_workers,)``."""
        return np.count_nonzero(self.B, axis=1) / self.n_partitions

    def partitions_of(self, worker: int) -> np.ndarray:
        """Indices of the partitions worker ``worker`` (0-based) holds."""
        return np.flatnonzero(self.B[worker])

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        """Decoding weights from the workers that replied, in arrival order.

        Parameters
        ----------
        responders : sequence of int
            0-based worker indices, in the order their replies arrived.

        Returns
        -------
        numpy.ndarray or None
            Weights ``a`` of length ``n_workers`` (zero off the responders), or ``None`` while
            the code cannot decode yet.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_workers={self.n_workers}, n_stragglers={self.n_stragglers})"


def check_workers_stragglers(n_workers: int, n_stragglers: int) -> None:
    """Raise ValueError unless ``W >= 1`` and ``0 <= S < W``."""
    if int(n_workers) != n_workers or n_workers < 1:
        raise ValueError(f"the number of workers W = {n_workers} must be a positive integer")
    if int(n_stragglers) != n_stragglers or not 0 <= n_stragglers < n_workers:
        raise ValueError(f"the number of stragglers S = {n_stragglers} must satisfy 0 <= S < W = {n_workers}")


def unique_in_order(responders: Sequence[int]) -> list[int]:
    """The responders without repeats, first arrival kept."""
    seen: set[int] = set()
    out = []
    for r in responders:
        if r not in seen:
            seen.add(r)
            out.append(int(r))
    return out
