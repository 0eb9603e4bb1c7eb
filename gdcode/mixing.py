"""Gossip averaging: the mixing rules and peer selection of ``--mode gossip``, without MPI.

The runtime (:mod:`gdcode.runtime.gossip`) moves models between ranks; everything that
decides *what* a worker does with a peer's model lives here as pure functions of their
inputs, so that each rule is tested against its closed form for fixed partners.

Mixing rules (``--mixing``):

``pairwise``
    Pull gossip: a worker fetches one peer's model ``x_peer`` with the peer's clock
    ``c_peer`` (samples trained) and last loss, and after its own step sets
    ``x <- f x_peer + (1 - f) x`` with ``f`` from :func:`interpolation_factor`.
``elastic``
    Elastic Gossip (Pramod, 2018): ``x_i <- x_i - alpha sum_j (x_i - x_j)`` over the
    partners ``j`` of a round (:func:`elastic_mix`). The runtime applies the terms one
    exchange at a time (:func:`elastic_apply`), each with the values the pair swapped, so the
    sum of the models is conserved.
``push-sum``
    GoSGD (Blot et al., 2016): each worker holds a model ``x`` and a weight ``w``; a sender
    halves its weight and sends ``(x, w/2)``, a receiver takes the weighted mean
    (:class:`PushSum`). The total weight is conserved.
"""

from __future__ import annotations

import numpy as np

from gdcode.errors import ConfigError

MIXINGS = ("pairwise", "elastic", "push-sum")
INTERPOLATIONS = ("constant", "clock", "loss")
SELECTIONS = ("uniform", "flow")

#: bounds of a peer's score under ``--peer-selection flow``: a timeout halves the score, an
#: answer in time doubles it; the floor keeps a slow peer selectable
SCORE_FLOOR, SCORE_CAP = 1.0 / 16.0, 1.0


def interpolation_factor(kind: str, alpha: float = 0.5, clock: float = 0.0, clock_peer: float = 0.0,
                         loss: float = 0.0, loss_peer: float = 0.0) -> float:
    """The weight ``f`` of the peer's model in pairwise mixing ``x <- f x_peer + (1 - f) x``.

    Parameters
    ----------
    kind : {"constant", "clock", "loss"}
        ``constant``: ``f = alpha``; ``clock``: ``f = c_peer / (c + c_peer)``, so a peer that
        has trained on more samples counts more; ``loss``: ``f = loss / (loss + loss_peer)``,
        so a peer with the lower loss counts more.
    alpha : float
        The constant factor (``--alpha``).
    clock, clock_peer : float
        Samples trained by this worker and by the peer.
    loss, loss_peer : float
        The last minibatch objective of this worker and of the peer.

    Returns
    -------
    float
        ``f`` in [0, 1]; 0.5 when the clocks (or losses) are both zero or not finite.
    """
    if kind == "constant":
        return float(alpha)
    if kind == "clock":
        a, b = float(clock), float(clock_peer)
    elif kind == "loss":
        a, b = float(loss_peer), float(loss)
    else:
        raise ConfigError(f"--interpolation {kind!r} is not one of: {', '.join(INTERPOLATIONS)}")
    # f = b / (a + b) with b the peer's clock, or this worker's loss
    total = a + b
    if not (np.isfinite(total) and total > 0 and a >= 0 and b >= 0):
        return 0.5
    return b / total


def pairwise_mix(x: np.ndarray, x_peer: np.ndarray, f: float) -> np.ndarray:
    """``x <- f x_peer + (1 - f) x`` in place; returns ``x``."""
    x *= 1.0 - f
    x += f * x_peer
    return x


def elastic_mix(x: np.ndarray, partners: list[np.ndarray], alpha: float) -> np.ndarray:
    """One Elastic Gossip round: ``x - alpha sum_j (x - x_j)`` over ``partners`` (a new array)."""
    out = np.array(x, dtype=np.float64)
    for xj in partners:
        out -= alpha * (x - xj)
    return out


def elastic_apply(x: np.ndarray, x_sent: np.ndarray, x_peer: np.ndarray, alpha: float) -> np.ndarray:
    """One exchange's term in place: ``x <- x - alpha (x_sent - x_peer)``; returns ``x``.

    ``x_sent`` is the model this worker gave the peer and ``x_peer`` the one it got back; the
    peer applies ``alpha (x_peer - x_sent)`` with the same two vectors, so the pair's sum is
    unchanged whatever either did in between.
    """
    x -= alpha * (x_sent - x_peer)
    return x


class PushSum:
    """A worker's push-sum state: model ``x`` and weight ``weight`` (GoSGD).

    Parameters
    ----------
    x : numpy.ndarray
        The model; kept (not copied) and updated in place.
    weight : float
        The initial weight (1 on every worker, so the total is the number of workers).
    """

    def __init__(self, x: np.ndarray, weight: float = 1.0) -> None:
        self.x = x
        self.weight = float(weight)

    def send(self) -> tuple[np.ndarray, float]:
        """Halve the weight and return what goes to the peer: ``(copy of x, weight / 2)``."""
        self.weight *= 0.5
        return self.x.copy(), self.weight

    def receive(self, x_in: np.ndarray, weight_in: float) -> None:
        """Merge a peer's message: ``x <- (w x + w_in x_in) / (w + w_in)``, ``w <- w + w_in``."""
        total = self.weight + weight_in
        self.x *= self.weight / total
        self.x += (weight_in / total) * x_in
        self.weight = total


def consensus(models: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    """The average model: plain mean, or ``sum_i w_i x_i / sum_i w_i`` for push-sum weights."""
    stack = np.asarray(models, dtype=np.float64)
    if weights is None:
        return stack.mean(axis=0)
    w = np.asarray(weights, dtype=np.float64)
    return (w[:, None] * stack).sum(axis=0) / w.sum()


class PeerSelector:
    """Chooses the peer a worker gossips with; never itself.

    Parameters
    ----------
    n_workers : int
        Workers W (0-based ids 0..W-1).
    me : int
        This worker's id.
    kind : {"uniform", "flow"}
        ``uniform``: every other worker equally likely. ``flow``: probability proportional to
        a score that doubles when the peer answers in time and halves on a timeout, kept in
        ``[SCORE_FLOOR, SCORE_CAP]``: slow peers are picked less, never excluded.
    rng : numpy.random.Generator
        The worker's seeded stream.
    """

    def __init__(self, n_workers: int, me: int, kind: str, rng: np.random.Generator) -> None:
        if kind not in SELECTIONS:
            raise ConfigError(f"--peer-selection {kind!r} is not one of: {', '.join(SELECTIONS)}")
        if n_workers < 2:
            raise ConfigError("gossip needs at least 2 workers (--workers 2 or more)")
        if not 0 <= me < n_workers:
            raise ValueError(f"worker {me} is not in 0..{n_workers - 1}")
        self.n_workers, self.me, self.kind, self.rng = n_workers, me, kind, rng
        self.peers = np.array([j for j in range(n_workers) if j != me])
        self.scores = np.full(n_workers, SCORE_CAP)
        self.scores[me] = 0.0

    def probabilities(self) -> np.ndarray:
        """The probability of picking each worker (0 for this one)."""
        if self.kind == "uniform":
            p = np.ones(self.n_workers)
            p[self.me] = 0.0
        else:
            p = self.scores.copy()
        return p / p.sum()

    def pick(self) -> int:
        """A peer id (never ``me``)."""
        if self.kind == "uniform":
            return int(self.peers[self.rng.integers(self.peers.size)])
        return int(self.rng.choice(self.n_workers, p=self.probabilities()))

    def success(self, peer: int) -> None:
        """The peer answered in time."""
        self.scores[peer] = min(SCORE_CAP, 2.0 * self.scores[peer])

    def timeout(self, peer: int) -> None:
        """The peer did not answer within ``--peer-timeout``."""
        self.scores[peer] = max(SCORE_FLOOR, 0.5 * self.scores[peer])
