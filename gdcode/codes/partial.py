"""Tandon et al.'s partial schemes: a private uncoded message, then a coded one (two messages)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode.codes.base import GradientCode
from gdcode.codes.cyclic import CyclicRepetition
from gdcode.codes.registry import CODES
from gdcode.codes.repetition import FractionalRepetition


class _Partial(GradientCode):
    """Shared layout and decoder of the partial schemes (the coded part is ``inner``)."""

    exact = True
    n_messages = 2
    inner_class: type = GradientCode

    def __init__(self, n_workers: int, n_stragglers: int = 0, seed: int = 0,
                 pieces: int | None = None) -> None:
        super().__init__(n_workers, n_stragglers, seed)
        W, S = self.n_workers, self.n_stragglers
        P = 2 * (S + 1) if pieces is None else pieces
        if int(P) != P or P < S + 2:
            raise ValueError(f"pieces P = {pieces} must be an integer >= S+2 = {S + 2} "
                             f"(each worker holds P-S-1 >= 1 private pieces and S+1 coded ones)")
        self.pieces = int(P)
        self.n_private = self.pieces - S - 1
        self.inner = self.inner_class(W, S, seed)
        n_private_total = W * self.n_private
        n_parts = n_private_total + W
        private = np.zeros((W, n_parts))
        for i in range(W):
            private[i, i * self.n_private:(i + 1) * self.n_private] = 1.0
        coded = np.zeros((W, n_parts))
        coded[:, n_private_total:] = self.inner.B
        self._messages = [private, coded]
        self.B = private + coded

    @property
    def message_matrices(self) -> list[np.ndarray]:
        return self._messages

    def facts(self) -> dict:
        return {"pieces": self.pieces, "private_pieces": self.n_private,
                "slowdown_tolerated": self.slowdown_tolerated()}

    def slowdown_tolerated(self) -> float:
        """How many times slower a partial straggler may be: ``P / (P - S - 1)`` (Tandon's print-out)."""
        return self.pieces / self.n_private

    def decode(self, responders: Sequence[tuple[int, int]]) -> np.ndarray | None:
        private: set[int] = set()
        coded: list[int] = []
        seen: set[tuple[int, int]] = set()
        for item in responders:
            worker, message = (int(x) for x in item)
            if not 0 <= worker < self.n_workers or message not in (0, 1):
                raise ValueError(f"({worker}, {message}) is not a (worker 0..{self.n_workers - 1}, "
                                 "message 0 or 1) pair")
            if (worker, message) in seen:
                continue
            seen.add((worker, message))
            if message == 0:
                private.add(worker)
            else:
                coded.append(worker)
        if len(private) < self.n_workers:
            return None
        inner = self.inner.decode(coded)
        if inner is None:
            return None
        return np.vstack([np.ones(self.n_workers), inner])

    def decode_times(self, arrivals: np.ndarray) -> np.ndarray:
        """The later of the last private message and the inner code's decode time on the coded ones."""
        a = np.asarray(arrivals, dtype=float)
        return np.maximum(a[:, :, 0].max(axis=1), self.inner.decode_times(a[:, :, 1:2]))


@CODES.register("partial-frc")
class PartialFRC(_Partial):
    """Partial fractional repetition: P-S-1 private uncoded pieces per worker, sent first, then an frc-coded part.

    Construction: the data are cut into W(P-S) equal pieces. Worker i holds P-S-1 private
    pieces (``i(P-S-1) .. (i+1)(P-S-1)-1``), held by nobody else, and S+1 of the last W
    pieces laid out as ``frc`` (needs S+1 dividing W). It sends two messages per iteration:
    message 0 is the plain sum of its private pieces, message 1 its ``frc`` coded sum.
    ``message_matrices = [private, coded]`` and ``B`` is their sum; load P/(W(P-S)).
    ``pieces`` P defaults to 2(S+1) (as many private as coded pieces), so a partial
    straggler may be up to P/(P-S-1) = 2 times slower and still be waited for only for its
    first message.

    Decode: ``decode`` takes ``(worker, message)`` pairs in arrival order and returns weights
    of shape (2, W): it needs the private message of every worker (weight 1 each) and a
    decodable coded set (one coded reply per frc group, weight 1).

    Reference: Tandon, Lei, Dimakis, Karampatziakis, "Gradient Coding", ICML 2017,
    arXiv:1612.03301, section 5 ("partial stragglers"), and their code's partial schemes.
    """

    inner_class = FractionalRepetition
    exact_by_construction = True


@CODES.register("partial-cyclic")
class PartialCyclic(_Partial):
    """Partial cyclic repetition: P-S-1 private uncoded pieces per worker, sent first, then a cyclic-coded part.

    Construction: as ``partial-frc``, with the coded part laid out as Tandon's ``cyclic``
    code on the last W pieces (random ``H`` from ``seed``; any W, S): worker i's coded
    pieces are ``W(P-S-1) + (i .. i+S mod W)``. Two messages per iteration, message 0 the
    plain sum of the private pieces, message 1 the cyclic-coded sum; load P/(W(P-S));
    ``pieces`` P defaults to 2(S+1).

    Decode: ``(worker, message)`` pairs in arrival order; weights of shape (2, W) once every
    private message and W-S coded messages have arrived (least squares on the coded ones).

    Reference: Tandon, Lei, Dimakis, Karampatziakis, "Gradient Coding", ICML 2017,
    arXiv:1612.03301, section 5 ("partial stragglers"), and their code's partial schemes.
    """

    inner_class = CyclicRepetition
