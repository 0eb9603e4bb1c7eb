"""Straggler baselines that are not codes: stale-gradient reuse and K-batch synchronous SGD.

Both give worker ``i`` partition ``i`` (``B = I``) and need more of the coordinator than a
decode's weights, which it reads from their attributes:

* ``stale`` (:attr:`GradientCode.keeps_stale`): the coordinator keeps every partition's latest
  gradient sum, and each step uses the fresh replies plus the stored ones for the others;
* ``kbatch`` (:attr:`GradientCode.repeats`): workers keep computing minibatch gradients at the
  current model, one after another, until the coordinator has K of them in total; it averages
  them and steps, so fast workers contribute more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode.codes.base import GradientCode, check_collect, kth_arrival
from gdcode.codes.registry import CODES


@CODES.register("stale")
class StaleGradients(GradientCode):
    """Stale-gradient reuse (SAG/DSAG style): fresh replies plus every partition's latest stored gradient.

    Construction: the identity, ``B = I`` (load 1/W).

    Decode: after ``collect`` replies (default W-S), weight 1 on each; the coordinator adds,
    for every other partition, the gradient sum it last received for it (computed on an older
    model; zero until one has come), and records each partition's staleness (iterations since
    its stored gradient was fresh) in ``metrics.jsonl``. A late reply refreshes the store when
    it is newer than what is there. With ``collect = W`` every gradient is fresh: uncoded GD.

    References: Roux, Schmidt, Bach, "A Stochastic Gradient Method with an Exponential Convergence
    Rate for Finite Training Sets", NeurIPS 2012 (SAG); Severinson, Rosnes, El Rouayheb, Amat,
    "DSAG: A mixed synchronous-asynchronous iterative method for straggler-resilient learning",
    IEEE Trans. Commun. 2023, arXiv:2111.13877.

    Parameters
    ----------
    collect : int, optional
        Fresh replies to wait for (1 <= collect <= W; default W - S).
    """

    exact = False
    keeps_stale = True
    decodes_any_set = True

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0, collect: int | None = None) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.B = np.eye(self.n_workers)
        self.collect = check_collect(collect, self.n_workers, self.n_stragglers)

    def facts(self) -> dict:
        return {"collect": self.collect}

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        got = self._arrivals(responders)
        if len(got) < self.collect:
            return None
        return self.decode_now(got[:self.collect])

    def decode_now(self, responders: Sequence[int]) -> np.ndarray | None:
        got = self._arrivals(responders)
        if not got:
            return None
        a = np.zeros(self.n_workers)
        a[got] = 1.0
        return a

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The ``collect``-th reply."""
        return kth_arrival(np.asarray(arrivals, dtype=float)[:, :, 0], self.collect)


@CODES.register("kbatch")
class KBatch(GradientCode):
    """K-batch synchronous SGD (Rennala-style): the first K minibatch gradients, from any workers.

    Construction: the identity, ``B = I``; each worker samples minibatches (``--batch-size``)
    of its partition.

    Decode: every worker computes a minibatch gradient at the current model, sends it, and
    computes another (a new minibatch) as long as no newer model has come; the coordinator
    takes the first ``k`` gradients in total (default W), whichever workers they come from,
    and steps with their mean. A worker's first minibatch of an iteration is the one coded
    mode's minibatches give its partition, so with ``k = W`` and every worker contributing once
    this is uncoded minibatch SGD.

    Reference: Tyurin, Richtárik, "Optimal Time Complexities of Parallel Stochastic
    Optimization Methods Under a Fixed Computation Model", NeurIPS 2023, arXiv:2305.12387 (Rennala SGD).

    Parameters
    ----------
    k : int, optional
        Gradients per step (1 <= k; default W).
    """

    exact = False
    repeats = True

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0, k: int | None = None) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.B = np.eye(self.n_workers)
        k = self.n_workers if k is None else k
        if int(k) != k or k < 1:
            raise ValueError(f"k = {k} gradients per step must be a positive integer")
        self.k = int(k)

    @property
    def straggler_tolerance(self) -> int:
        return self.n_workers - 1

    def facts(self) -> dict:
        return {"k": self.k}

    def decode(self, responders: Sequence) -> np.ndarray | None:
        """Weight 1 on every reply once ``k`` have come (repeats from one worker count)."""
        if len(responders) < self.k:
            return None
        return np.bincount(np.asarray(responders[:self.k], dtype=int), minlength=self.n_workers).astype(float)

    def repeat_table(self, arrivals: np.ndarray) -> np.ndarray:
        """Each worker's first ``k`` gradients' arrivals, shape ``(draws, W, k)``.

        ``arrivals`` of shape ``(draws, W, m)``: with ``m >= k`` the arrival of each worker's
        successive gradients (the simulator's replay of a run, each repeat with its own pause);
        with one column, a worker's j-th is taken to arrive at j times its first (each repeat as
        long as the first: the bulk draws' approximation).
        """
        arrivals = np.asarray(arrivals, dtype=float)
        if arrivals.shape[2] >= self.k:
            return arrivals[:, :, :self.k]
        return arrivals[:, :, :1] * np.arange(1, self.k + 1)

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The k-th of every worker's gradients (:meth:`repeat_table`)."""
        table = self.repeat_table(arrivals)
        return kth_arrival(table.reshape(table.shape[0], -1), self.k)

    def responders(self, arrivals: np.ndarray) -> list[int]:
        """One draw's first ``k`` gradients in arrival order, as the workers that sent them
        (repeats included): what :meth:`decode` takes. ``arrivals`` of shape ``(W, m)``."""
        table = self.repeat_table(np.expand_dims(arrivals, 0))[0]
        order = np.argsort(table, axis=None, kind="stable")[:self.k]
        return [int(i) // self.k for i in order]
