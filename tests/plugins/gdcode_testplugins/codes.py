"""``pairs``: workers in pairs that hold the same two partitions (exact, one straggler per pair)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode.codes import GradientCode, coverage_time


class PairsCode(GradientCode):
    """Pairs: W/2 pairs of workers, both workers of a pair holding the pair's two partitions.

    Construction: W even; the workers are paired (in order, or by a seeded permutation with
    ``shuffle``) and pair ``p`` holds partitions ``2p`` and ``2p + 1``; each worker sends their
    plain sum. Load 2/W. Decode: weight 1 on the first reply of each pair, as soon as every
    pair has replied. Tolerates S <= 1 straggler (any one worker).

    Reference: the fractional repetition code of Tandon et al. with S = 1, arXiv:1612.03301.
    """

    exact = True
    exact_by_construction = True

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0, shuffle: bool = False) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        if self.n_workers % 2 or self.n_stragglers > 1:
            raise ValueError(f"pairs needs an even W and S <= 1, got W = {n_workers}, S = {n_stragglers}")
        order = np.random.default_rng(self.seed).permutation(self.n_workers) if shuffle else np.arange(self.n_workers)
        self.pair_of = np.empty(self.n_workers, dtype=int)
        self.pair_of[order] = np.arange(self.n_workers) // 2
        self.B = np.zeros((self.n_workers, self.n_workers))
        for w, p in enumerate(self.pair_of):
            self.B[w, 2 * p:2 * p + 2] = 1.0

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        first: dict[int, int] = {}
        for r in self._arrivals(responders):
            first.setdefault(int(self.pair_of[r]), r)
            if len(first) == self.n_workers // 2:
                a = np.zeros(self.n_workers)
                a[list(first.values())] = 1.0
                return a
        return None

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The first time every pair has replied."""
        return coverage_time(np.asarray(arrivals, dtype=float)[:, :, 0], self.B)
