"""Fractional repetition: exact (``frc``) and approximate (``approx``, ErasureHead)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode.codes.base import GradientCode, check_collect, coverage_time, harmonic, kth_arrival
from gdcode.codes.registry import CODES


def frc_matrix(n_workers: int, n_stragglers: int) -> np.ndarray:
    """The fractional-repetition matrix: ``W/(S+1)`` diagonal blocks of ones, each ``(S+1) x (S+1)``.

    Raises
    ------
    ValueError
        Unless ``S + 1`` divides ``W``.
    """
    size = n_stragglers + 1
    if n_workers % size:
        raise ValueError(f"fractional repetition needs S+1 to divide W: S+1 = {size} does not divide "
                         f"W = {n_workers}; choose S with S+1 dividing W, or use cyclic-mds")
    return np.kron(np.eye(n_workers // size), np.ones((size, size)))


@CODES.register("frc")
class FractionalRepetition(GradientCode):
    """Fractional repetition code: groups of S+1 workers hold the same S+1 partitions.

    Construction: needs S+1 dividing W. Workers ``g(S+1) .. g(S+1)+S`` form group ``g`` and
    all hold partitions ``g(S+1) .. g(S+1)+S``; each sends the plain sum of their gradients
    (``B`` is block diagonal with blocks of ones). Load (S+1)/W, weights 0/1, so no numerical
    error at all.

    Decode: as soon as every group has replied once, weight 1 on the first reply of each group.
    Any W-S replies cover every group (a group is lost only if all its S+1 workers straggle),
    and often fewer suffice, so it decodes early.

    Reference: Tandon, Lei, Dimakis, Karampatziakis, "Gradient Coding: Avoiding Stragglers in
    Distributed Learning", ICML 2017, arXiv:1612.03301 (section 3.1).
    """

    exact = True
    exact_by_construction = True

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.B = frc_matrix(self.n_workers, self.n_stragglers)
        self.group_size = self.n_stragglers + 1
        self.n_groups = self.n_workers // self.group_size
        self.group_of = np.arange(self.n_workers) // self.group_size

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        first: dict[int, int] = {}
        for r in self._arrivals(responders):
            first.setdefault(int(self.group_of[r]), r)
            if len(first) == self.n_groups:
                a = np.zeros(self.n_workers)
                a[list(first.values())] = 1.0
                return a
        return None

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The first time every group has replied."""
        return coverage_time(np.asarray(arrivals, dtype=float)[:, :, 0], self.B)

    def exponential_order_mean(self, shift: float, mean: float) -> float:
        """``shift + mean H_{W/(S+1)} / (S+1)``: the slowest of W/(S+1) group minima."""
        g = self.n_stragglers + 1
        return shift + mean * harmonic(self.n_workers // g) / g


@CODES.register("approx")
class ErasureHead(GradientCode):
    """ErasureHead: approximate gradient coding on the fractional-repetition layout.

    Construction: the ``frc`` layout (needs S+1 dividing W): W/(S+1) groups of S+1 workers,
    each group holding the same S+1 partitions and sending their plain sum.

    Decode: after ``collect`` replies (default W-S) or as soon as every group has replied,
    whichever comes first, sum one reply per covered group (weight 1 on the first reply of
    each covered group). The partitions of uncovered groups are missing, so the estimate is
    biased (its mean is a shrunken gradient), as in the paper. With ``rescale=True`` the
    weights are multiplied by (number of groups)/(covered groups), which makes the estimate
    unbiased when the set of responders is uniformly random. Not exact: ``exact`` is False,
    although with ``collect >= W - S`` every decode is in fact complete.

    Reference: Wang, Charles, Papailiopoulos, "ErasureHead: Distributed Gradient Descent
    without Delays Using Approximate Gradient Coding", arXiv:1901.09671 (2019).

    Parameters
    ----------
    collect : int, optional
        Replies to wait for at most (1 <= collect <= W; default W - S).
    rescale : bool
        Scale by the inverse covered fraction (default False, as in the paper).
    """

    exact = False

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0,
                 collect: int | None = None, rescale: bool = False) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.B = frc_matrix(self.n_workers, self.n_stragglers)
        self.collect = check_collect(collect, self.n_workers, self.n_stragglers)
        if not isinstance(rescale, (bool, np.bool_)):
            raise ValueError(f"rescale = {rescale!r} must be true or false")
        self.rescale = bool(rescale)
        self.group_size = self.n_stragglers + 1
        self.n_groups = self.n_workers // self.group_size
        self.group_of = np.arange(self.n_workers) // self.group_size

    def facts(self) -> dict:
        return {"groups": self.n_groups, "collect": self.collect, "rescale": self.rescale}

    decodes_any_set = True

    def decode_now(self, responders: Sequence[int]) -> np.ndarray | None:
        """The first responder of every group that has one (rescaled with ``rescale``)."""
        first: dict[int, int] = {}
        for r in self._arrivals(responders):
            first.setdefault(int(self.group_of[r]), r)
        if not first:
            return None
        a = np.zeros(self.n_workers)
        a[list(first.values())] = self.n_groups / len(first) if self.rescale else 1.0
        return a

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        first: dict[int, int] = {}
        for count, r in enumerate(self._arrivals(responders), start=1):
            first.setdefault(int(self.group_of[r]), r)
            if count == self.collect or len(first) == self.n_groups:
                a = np.zeros(self.n_workers)
                a[list(first.values())] = self.n_groups / len(first) if self.rescale else 1.0
                return a
        return None

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The earlier of the ``collect``-th reply and the time every group has replied."""
        a = np.asarray(arrivals, dtype=float)[:, :, 0]
        return np.minimum(kth_arrival(a, self.collect), coverage_time(a, self.B))
