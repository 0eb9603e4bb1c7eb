"""Discrete-event simulation of a code under a delay model (no MPI).

The core is :func:`decode_time`: given when each worker's messages would arrive, the time at
which the code first decodes -- what the MPI coordinator does, replayed on paper. The engine
benchmark uses it for each scheme's ideal time; ``gdcode simulate`` builds on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdcode import codes


def decode_time(code: codes.GradientCode, arrivals: np.ndarray) -> tuple[float, list]:
    """When ``code`` first decodes, and the responders it decoded from.

    Parameters
    ----------
    code : GradientCode
        The code (single- or multi-message).
    arrivals : numpy.ndarray
        Arrival time of each worker's message: shape ``(n_workers,)`` for a single-message
        code, ``(n_workers, n_messages)`` otherwise; ``inf`` for a message that never comes.

    Returns
    -------
    time : float
        Arrival time of the reply that made the decode possible (``inf`` if it never does).
    responders : list
        The responders in arrival order up to that reply.
    """
    arrivals = np.asarray(arrivals, dtype=float)
    multi = getattr(code, "n_messages", 1) > 1
    if not multi:
        arrivals = arrivals.reshape(-1, 1)
    W, M = arrivals.shape
    order = np.argsort(arrivals, axis=None, kind="stable")
    responders: list = []
    for flat in order:
        w, k = divmod(int(flat), M)
        when = arrivals[w, k]
        if not np.isfinite(when):
            break
        responders.append((w, k) if multi else w)
        if code.decode(responders) is not None:
            return float(when), responders
    return float("inf"), responders


def message_arrivals(compute: np.ndarray, pause: np.ndarray, share: Sequence[float] | None = None) -> np.ndarray:
    """Arrival times of each worker's messages, sent in order, message ``k`` after its share of
    compute and pause (the engine's worker loop): shape ``(n_workers, n_messages)``."""
    compute = np.asarray(compute, dtype=float)
    pause = np.asarray(pause, dtype=float)
    share = np.array([1.0] if share is None else share, dtype=float)
    return np.cumsum((compute[:, None] + pause[:, None]) * share[None, :], axis=1)
