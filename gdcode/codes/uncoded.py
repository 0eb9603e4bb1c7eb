"""Uncoded GD and ignore-stragglers: the identity assignment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode.codes.base import GradientCode, harmonic, kth_arrival
from gdcode.codes.registry import CODES


@CODES.register("uncoded")
class Uncoded(GradientCode):
    """Uncoded gradient descent: worker i holds partition i and the coordinator waits for all W.

    Construction: the identity, ``B = I`` (load 1/W, no redundancy).

    Decode: once all W workers have replied, weight 1 on each. Exact, but it tolerates no
    straggler whatever S is (``straggler_tolerance`` is 0): S is accepted only so that every
    scheme takes the same arguments.

    Reference: the baseline of every gradient-coding paper, e.g. Tandon, Lei, Dimakis,
    Karampatziakis, "Gradient Coding", ICML 2017, arXiv:1612.03301.
    """

    exact = True
    exact_by_construction = True

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.B = np.eye(self.n_workers)

    @property
    def straggler_tolerance(self) -> int:
        return 0

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        got = self._arrivals(responders)
        if len(got) < self.n_workers:
            return None
        return np.ones(self.n_workers)

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The last reply."""
        return np.asarray(arrivals, dtype=float)[:, :, 0].max(axis=1)

    def exponential_order_mean(self, shift: float, mean: float) -> float:
        """``shift + mean H_W``: the largest of W exponentials."""
        return shift + mean * harmonic(self.n_workers)


@CODES.register("ignore")
class IgnoreStragglers(GradientCode):
    """Ignore stragglers: use the first W-S replies and drop the rest.

    Construction: the identity, ``B = I`` (load 1/W).

    Decode: at the first W-S replies, weight ``n / (rows received)`` on each of them, so that
    the decoded sum divided by n is the mean gradient of the rows received. Not exact: the
    stragglers' partitions are missing (``exact`` is False, and the diagnostics show a
    residual of 1).

    Reference: Tandon et al.'s "avoidstragg" baseline (ICML 2017, arXiv:1612.03301); Chen,
    Pan, Monga, Bengio, Jozefowicz, "Revisiting Distributed Synchronous SGD",
    arXiv:1604.00981, with b = S backup workers.

    The rescaling uses the rows of each partition, :meth:`bind_partition_sizes` (equal
    partitions until they are bound).
    """

    exact = False

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.B = np.eye(self.n_workers)

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        got = self._arrivals(responders)
        need = self.n_workers - self.n_stragglers
        if len(got) < need:
            return None
        used = got[:need]
        sizes = self.partition_sizes
        a = np.zeros(self.n_workers)
        a[used] = sizes.sum() / sizes[used].sum()
        return a

    decodes_any_set = True

    def decode_now(self, responders: Sequence[int]) -> np.ndarray | None:
        """Every responder, rescaled to the mean gradient of the rows received."""
        got = self._arrivals(responders)
        if not got:
            return None
        sizes = self.partition_sizes
        a = np.zeros(self.n_workers)
        a[got] = sizes.sum() / sizes[got].sum()
        return a

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The (W-S)-th reply."""
        return kth_arrival(np.asarray(arrivals, dtype=float)[:, :, 0], self.n_workers - self.n_stragglers)

    def exponential_order_mean(self, shift: float, mean: float) -> float:
        """``shift + mean (H_W - H_S)``: the (W-S)-th of W exponentials."""
        return shift + mean * (harmonic(self.n_workers) - harmonic(self.n_stragglers))
