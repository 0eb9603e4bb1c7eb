"""Cyclic repetition codes: Tandon et al.'s random construction and a deterministic cyclic MDS one.

Both give worker ``i`` the partitions ``i, i+1, ..., i+S`` (mod W), load (S+1)/W, and decode
by least squares, ``a_F = argmin ||a B_F - 1||`` over the first W-S replies ``F``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode.codes.base import GradientCode, harmonic, kth_arrival
from gdcode.codes.registry import CODES


def circulant_rows(first_row: np.ndarray, n: int) -> np.ndarray:
    """The ``n x n`` matrix whose row ``i`` is ``first_row`` (length <= n) shifted right by ``i``."""
    B = np.zeros((n, n))
    cols = np.arange(len(first_row))
    for i in range(n):
        B[i, (i + cols) % n] = first_row
    return B


def tandon_cyclic_matrix(n_workers: int, n_stragglers: int, rng: np.random.Generator) -> np.ndarray:
    """Tandon et al.'s cyclic-repetition ``B``: rows in the null space of a random ``H`` with ``H 1 = 0``."""
    W, S = n_workers, n_stragglers
    Ht = rng.standard_normal((S, W - 1))
    H = np.hstack([Ht, -Ht.sum(axis=1, keepdims=True)])
    B = np.zeros((W, W))
    for i in range(W):
        support = (i + np.arange(S + 1)) % W
        B[i, i] = 1.0
        if S:
            B[i, support[1:]] = np.linalg.solve(H[:, support[1:]], -H[:, i])
    return B


@CODES.register("cyclic")
class CyclicRepetition(GradientCode):
    """Cyclic repetition code (Tandon et al.'s random construction): worker i holds partitions i..i+S.

    Construction: draw ``H~`` (S x (W-1), i.i.d. standard normal, from ``seed``) and set
    ``H = [H~, -H~ 1]`` so that ``H 1 = 0``. Row ``i`` of ``B`` is supported on partitions
    ``i..i+S`` (mod W), has ``B[i, i] = 1``, and its other S entries solve
    ``H[:, others] x = -H[:, i]``: every row lies in the (W-S)-dimensional null space of ``H``,
    which contains the all-ones vector, and with probability 1 any W-S rows span it.
    Load (S+1)/W.

    Decode: after W-S distinct replies, least squares ``a = argmin ||a B_F - 1||`` on them.
    Numerically fragile as W grows (decode weights of 1e3-1e6): run ``gdcode codes cyclic``
    to see the worst residual and condition number, and prefer ``cyclic-mds``.

    Reference: Tandon, Lei, Dimakis, Karampatziakis, "Gradient Coding: Avoiding Stragglers in
    Distributed Learning", ICML 2017, arXiv:1612.03301 (Algorithm 2, cyclic repetition).
    """

    exact = True

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.B = tandon_cyclic_matrix(self.n_workers, self.n_stragglers,
                                      np.random.default_rng(self.seed))

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        got = self._arrivals(responders)
        need = self.n_workers - self.n_stragglers
        if len(got) < need:
            return None
        return self.lstsq_weights(got[:need])

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The (W-S)-th reply."""
        return kth_arrival(np.asarray(arrivals, dtype=float)[:, :, 0], self.n_workers - self.n_stragglers)

    def exponential_order_mean(self, shift: float, mean: float) -> float:
        """``shift + mean (H_W - H_S)``: the (W-S)-th of W exponentials."""
        return shift + mean * (harmonic(self.n_workers) - harmonic(self.n_stragglers))


def cyclic_mds_design(n_workers: int, n_stragglers: int) -> int:
    """The stragglers the real cyclic MDS construction is built for: S, or S+1 when W-S is even."""
    S = n_stragglers
    return S if S == 0 or (n_workers - S) % 2 == 1 else S + 1


def cyclic_mds_generator(n_workers: int, n_design: int) -> np.ndarray:
    """Coefficients ``g_0..g_s`` of the real generator polynomial, scaled to sum 1.

    ``g(x) = prod_{j in Z} (x - w^j)`` with ``w = exp(2 pi i / W)`` and ``Z`` the ``s``
    consecutive exponents centred on ``W/2`` (needs ``W - s`` odd). ``Z`` is closed under
    ``j -> W - j``, so ``g`` is a product of real quadratics ``x^2 - 2 cos(2 pi j/W) x + 1``
    (and ``x + 1`` when ``W/2`` is in ``Z``), and ``0`` is not in ``Z``, so ``g(1) != 0``.
    """
    W, s = n_workers, n_design
    if s and (W - s) % 2 == 0:
        raise ValueError(f"the real cyclic MDS construction needs W - s odd (W = {W}, s = {s})")
    lo = (W - s + 1) // 2
    exps = np.arange(lo, lo + s)
    g = np.array([1.0])
    for j in exps[exps < W - exps]:
        g = np.convolve(g, [1.0, -2.0 * np.cos(2.0 * np.pi * j / W), 1.0])
    if np.any(2 * exps == W):
        g = np.convolve(g, [1.0, 1.0])
    return g[::-1] / g.sum()


@CODES.register("cyclic-mds")
class CyclicMDS(GradientCode):
    """Cyclic MDS gradient code: cyclic shifts of a weight-(S+1) codeword, deterministic.

    Construction: the real cyclic code of length W whose zeros are ``w^j`` (``w`` a primitive
    W-th root of unity) for the S consecutive exponents ``j`` centred on W/2. By the BCH bound
    it is an MDS ``[W, W-S]`` code; it contains the all-ones vector (``1`` is not a zero) and
    its generator polynomial ``g`` has real coefficients and weight exactly S+1. Row ``i`` of
    ``B`` is ``g`` shifted by ``i`` (scaled so that each row sums to 1): worker i holds
    partitions i..i+S (mod W), load (S+1)/W. Any W-S rows span the code, hence the all-ones
    vector. A real consecutive zero set that avoids ``j = 0`` and is closed under ``j -> W-j``
    exists only when W-S is odd; when W-S is even (and S > 0) the code is built for S+1
    stragglers (``design_stragglers``), so it holds S+2 partitions per worker and decodes
    from W-S-1 replies. No randomness: the seed is unused.

    Decode: after ``W - design_stragglers`` distinct replies, least squares
    ``a = argmin ||a B_F - 1||`` on them.

    Numerics: far better conditioned than ``cyclic`` for small and moderate W (at W=30, S=5
    the worst condition number is 2.4e4 against 2.1e8, the float32 error 4e-5 against 4e-2);
    its worst case is a burst of consecutive stragglers. Measured with
    ``gdcode.codes.diagnose``'s pattern set (every straggler set when there are at most 10^4,
    else the W bursts plus 10^4 seeded ones; seed 0): the worst residual ``max|a.B - 1|``
    stays below 1e-9 for every S at every W <= 30 (9.0e-10 at W=30, S=15; 1.5e-9 at W=31),
    and first exceeds 1e-6, so that :func:`gdcode.codes.check_usable` refuses it, at W=43
    (S=20; 7.5e-7 at W=42 over every S). With few stragglers it stays accurate much further (5.6e-10 at W=100, S=5), but
    with many, bursts make it worse than ``cyclic`` (7e-5 against 5e-9 at W=100, S=10).

    Reference: Raviv, Tamo, Tandon, Dimakis, "Gradient Coding from Cyclic MDS Codes and
    Expander Graphs", ICML 2018, arXiv:1707.03858 (section 3).
    """

    exact = True

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        self.design_stragglers = cyclic_mds_design(self.n_workers, self.n_stragglers)
        self.generator = cyclic_mds_generator(self.n_workers, self.design_stragglers)
        self.B = circulant_rows(self.generator, self.n_workers)

    def facts(self) -> dict:
        return {"design_stragglers": self.design_stragglers}

    def decode(self, responders: Sequence[int]) -> np.ndarray | None:
        got = self._arrivals(responders)
        need = self.n_workers - self.design_stragglers
        if len(got) < need:
            return None
        return self.lstsq_weights(got[:need])

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The (W - design_stragglers)-th reply."""
        return kth_arrival(np.asarray(arrivals, dtype=float)[:, :, 0], self.n_workers - self.design_stragglers)

    def exponential_order_mean(self, shift: float, mean: float) -> float:
        """``shift + mean (H_W - H_s)`` with ``s = design_stragglers``."""
        return shift + mean * (harmonic(self.n_workers) - harmonic(self.design_stragglers))
