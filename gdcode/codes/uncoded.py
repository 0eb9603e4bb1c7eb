"""Uncoded GD and ignore-stragglers: the identity assignment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode.codes.base import GradientCode, unique_in_order
from gdcode.codes.registry import register


@register("uncoded")
class Uncoded(GradientCode):
    """Uncoded gradient descent: worker i holds partition i and the coordinator waits for all W.

    Exact. Load 1/W. The baseline of every gradient-coding paper (Tandon et al., ICML 2017).
    """

    exact = True

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.B = np.eye(self.n_workers)

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        got = unique_in_order(responders)
        if len(got) < self.n_workers:
            return None
        return np.ones(self.n_workers)


@register("ignore")
class IgnoreStragglers(GradientCode):
    """Ignore stragglers: use the first W-S replies and drop the rest.

    Not exact: the decoded sum covers only the rows received, rescaled so that dividing by
    n gives the mean gradient of those rows (Tandon et al.'s "avoidstragg"; Chen et al.,
    "Revisiting distributed synchronous SGD", 2016, with b = S backup workers).

    Parameters
    ----------
    partition_sizes : sequence of int, optional
        Rows in each partition; the rescaling uses them (equal partitions by default).
    """

    exact = False

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0,
                 partition_sizes: Sequence[int] | None = None) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.B = np.eye(self.n_workers)
        sizes = np.ones(self.n_workers) if partition_sizes is None else np.asarray(partition_sizes, float)
        if sizes.shape != (self.n_workers,) or np.any(sizes <= 0):
            raise ValueError(f"partition_sizes must be {self.n_workers} positive numbers")
        self.partition_sizes = sizes

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        got = unique_in_order(responders)
        need = self.n_workers - self.n_stragglers
        if len(got) < need:
            return None
        used = got[:need]
        a = np.zeros(self.n_workers)
        a[used] = self.partition_sizes.sum() / self.partition_sizes[used].sum()
        return a
