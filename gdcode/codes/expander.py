"""Approximate gradient coding from a seeded random d-regular graph (normalised adjacency)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from gdcode.codes.base import GradientCode, check_collect, kth_arrival, uniform_sample_moments
from gdcode.codes.registry import CODES

DECODERS = ("lstsq", "fixed")


def random_regular_graph(n: int, d: int, rng: np.random.Generator, max_tries: int = 200) -> np.ndarray:
    """Adjacency matrix (bool, ``n x n``) of a random simple ``d``-regular graph on ``n`` vertices.

    Pairs the ``n d`` half-edges at random, keeps the pairs that make a new edge between two
    different vertices and pairs the rest again (the Steger-Wormald scheme); a draw that
    gets stuck is restarted.

    Raises
    ------
    ValueError
        Unless ``1 <= d < n`` and ``n d`` is even.
    """
    if int(d) != d or not 1 <= d < n:
        raise ValueError(f"degree d = {d} must be an integer with 1 <= d < W = {n}")
    if (n * d) % 2:
        raise ValueError(f"a d-regular graph on W vertices needs W*d even (W = {n}, d = {d}); "
                         "choose an even degree")
    for _ in range(max_tries):
        A = np.zeros((n, n), dtype=bool)
        stubs = np.repeat(np.arange(n), d)
        while stubs.size:
            rng.shuffle(stubs)
            left = []
            for u, v in zip(stubs[0::2], stubs[1::2], strict=True):
                if u != v and not A[u, v]:
                    A[u, v] = A[v, u] = True
                else:
                    left += [u, v]
            stubs = np.array(left, dtype=int)
            if stubs.size and not any(u != v and not A[u, v]
                                      for u, v in itertools.combinations(np.unique(stubs), 2)):
                break  # stuck: no new edge can be made from what is left
        if not stubs.size:
            return A
    raise ValueError(f"could not draw a simple {d}-regular graph on {n} vertices")  # pragma: no cover


@CODES.register("expander")
class ExpanderCode(GradientCode):
    """Expander code: approximate gradient coding with the normalised adjacency of a random d-regular graph.

    Construction: a simple d-regular graph on the W workers, drawn from ``seed`` (random
    d-regular graphs are expanders with high probability); ``B = A / d``, so worker i holds
    the d partitions of its neighbours and sends their average. Load d/W, with d usually
    much smaller than S+1. ``lambda2`` is the graph's second largest absolute eigenvalue.

    Decode (stopping rule): after ``collect`` distinct replies (default W-S), from the first
    ``collect`` of them ``F``. ``decoder="lstsq"`` (default) takes the optimal weights
    ``argmin_a ||a B_F - 1||``; ``decoder="fixed"`` takes ``a_i = W/collect`` on ``F``,
    which is unbiased when ``F`` is a uniformly random set. Not exact. For every ``F``,
    ``||a B - 1||^2`` is at most ``(lambda2/d)^2 W s/(W - s)`` with ``s = W - collect``
    (the expander-mixing bound, :meth:`error_bound`), least squares doing at least as well
    as the fixed weights.

    References: Raviv, Tamo, Tandon, Dimakis, "Gradient Coding from Cyclic MDS Codes and
    Expander Graphs", ICML 2018, arXiv:1707.03858 (section 4); Charles, Papailiopoulos,
    Ellenberg, "Approximate Gradient Coding via Sparse Random Graphs", arXiv:1711.06771.

    Parameters
    ----------
    degree : int, optional
        d, with ``1 <= d < W`` and ``W d`` even (default ``min(4, W - 1)``).
    collect : int, optional
        Replies to decode from (default W - S).
    decoder : {"lstsq", "fixed"}
        Optimal least-squares weights or the fixed ``W/collect`` weights.
    """

    exact = False

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0,
                 degree: int | None = None, collect: int | None = None,
                 decoder: str = "lstsq") -> None:
        super().__init__(n_workers, n_stragglers, seed)
        W = self.n_workers
        if W < 2:
            raise ValueError("an expander code needs at least W = 2 workers")
        d = min(4, W - 1) if degree is None else degree
        if decoder not in DECODERS:
            raise ValueError(f"decoder {decoder!r} is not one of: {', '.join(DECODERS)}")
        self.decoder = decoder
        self.collect = check_collect(collect, W, self.n_stragglers)
        self.adjacency = random_regular_graph(W, d, np.random.default_rng(self.seed))
        self.degree = int(d)
        self.B = self.adjacency / self.degree
        eig = np.sort(np.abs(np.linalg.eigvalsh(self.adjacency.astype(float))))
        self.lambda2 = float(eig[-2]) if W > 1 else 0.0

    def facts(self) -> dict:
        return {"degree": self.degree, "lambda2": self.lambda2, "collect": self.collect,
                "decoder": self.decoder, "error_bound": self.error_bound()}

    def error_bound(self) -> float:
        """Bound on ``||a B - 1||_2^2`` for any decode: ``(lambda2/d)^2 W s/(W - s)``, ``s = W - collect``."""
        s = self.n_workers - self.collect
        return (self.lambda2 / self.degree) ** 2 * self.n_workers * s / (self.n_workers - s)

    def weight_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (all ones) and covariance of ``a @ B`` under the fixed decoder, when the replies
        are a uniformly random set of ``collect`` workers.

        Raises
        ------
        ValueError
            For the least-squares decoder, whose moments have no closed form.
        """
        if self.decoder != "fixed":
            raise ValueError("closed-form moments exist for decoder='fixed' only")
        return uniform_sample_moments(self.B, self.n_workers / self.collect, self.collect)

    decodes_any_set = True

    def decode_now(self, responders: Sequence[int]) -> np.ndarray | None:
        """Every responder, with the code's decoder (``fixed``: weight W/k for k of them)."""
        got = self._arrivals(responders)
        if not got:
            return None
        if self.decoder == "fixed":
            a = np.zeros(self.n_workers)
            a[got] = self.n_workers / len(got)
            return a
        return self.lstsq_weights(got)

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        got = self._arrivals(responders)
        if len(got) < self.collect:
            return None
        used = got[:self.collect]
        if self.decoder == "fixed":
            a = np.zeros(self.n_workers)
            a[used] = self.n_workers / self.collect
            return a
        return self.lstsq_weights(used)

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The ``collect``-th reply."""
        return kth_arrival(np.asarray(arrivals, dtype=float)[:, :, 0], self.collect)
