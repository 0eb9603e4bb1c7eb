"""Batched coupon's collector: one random batch per worker, decode once every batch has arrived."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode.codes.base import GradientCode, coverage_time
from gdcode.codes.registry import CODES


@CODES.register("bcc")
class BatchedCouponCollector(GradientCode):
    """Batched coupon's collector: the data are cut into b batches and each worker holds one, at random.

    Construction: ``batches`` b partitions; a seeded random permutation of the workers is
    dealt round-robin over the batches, so each worker holds one batch (load 1/b) and each
    batch is held by floor(W/b) or ceil(W/b) workers. (The paper draws each worker's batch
    independently; dealing a permutation keeps that randomness but never leaves a batch
    unassigned, which would make the code unable to decode.) No coefficients: each worker
    sends its batch's gradient sum.

    Decode: as soon as every batch has arrived at least once, weight 1 on the first arrival
    of each batch (the coupon collector's stopping time). The decoded sum is then complete.
    ``exact`` is True when every batch has at least S+1 workers (always so with the default
    b = floor(W/(S+1))): then any W-S replies cover every batch. With more batches the code
    waits for coverage, which S stragglers can delay up to the last reply.

    Reference: Li, Kalan, Avestimehr, Soltanolkotabi, "Near-Optimal Straggler Mitigation for
    Distributed Gradient Methods", IPDPS workshops 2018, arXiv:1710.09990.

    Parameters
    ----------
    batches : int, optional
        b, with 1 <= b <= W (default ``floor(W/(S+1))``).
    """

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0,
                 batches: int | None = None) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        W = self.n_workers
        b = W // (self.n_stragglers + 1) if batches is None else batches
        if int(b) != b or not 1 <= b <= W:
            raise ValueError(f"batches b = {batches} must be an integer with 1 <= b <= W = {W}")
        self.n_batches = int(b)
        order = np.random.default_rng(self.seed).permutation(W)
        self.batch_of = np.empty(W, dtype=int)
        self.batch_of[order] = np.arange(W) % self.n_batches
        self.B = np.zeros((W, self.n_batches))
        self.B[np.arange(W), self.batch_of] = 1.0
        self.exact = bool(W // self.n_batches >= self.n_stragglers + 1)
        self.exact_by_construction = self.exact

    def facts(self) -> dict:
        return {"batches": self.n_batches,
                "workers_per_batch": np.bincount(self.batch_of, minlength=self.n_batches).tolist()}

    decodes_any_set = True

    def decode_now(self, responders: Sequence[int]) -> np.ndarray | None:
        """The first responder of every batch that has one (the missing batches drop out)."""
        first: dict[int, int] = {}
        for r in self._arrivals(responders):
            first.setdefault(int(self.batch_of[r]), r)
        if not first:
            return None
        a = np.zeros(self.n_workers)
        a[list(first.values())] = 1.0
        return a

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        first: dict[int, int] = {}
        for r in self._arrivals(responders):
            first.setdefault(int(self.batch_of[r]), r)
            if len(first) == self.n_batches:
                a = np.zeros(self.n_workers)
                a[list(first.values())] = 1.0
                return a
        return None

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The first time every batch has arrived."""
        return coverage_time(np.asarray(arrivals, dtype=float)[:, :, 0], self.B)
