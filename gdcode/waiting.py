"""Adaptive waiting: how long the coordinator waits for replies, set each iteration from the arrivals seen.

``--wait fixed`` is the code's own stopping rule (``ignore``: the first W-S replies). ``--wait
quantile:Q`` sets each iteration's deadline to the Q-quantile of the recent arrival times (seconds
from an iteration's start to a reply), ``--wait mad:K`` to their median plus K times their median
absolute deviation; the coordinator then decodes with the replies that came by the deadline (at
least ``--min-replies``; all W end the wait early), through the code's
:meth:`~gdcode.codes.GradientCode.decode_now`.

The arrivals are right-censored: a worker cancelled at the decode took longer than the
iteration lasted, and leaving it out would pull the deadline down iteration after iteration.
So the distribution is the Kaplan-Meier estimate over a window of recent iterations, each
worker either arriving (its arrival) or censored (at the iteration's decode time). While fewer
than two iterations are known the code's own rule decides.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WaitRule:
    """A parsed ``--wait`` spec: ``kind`` is ``fixed``, ``quantile`` or ``mad``."""

    kind: str
    value: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> WaitRule:
        """``fixed``, ``quantile:Q`` (0 < Q <= 1) or ``mad:K`` (K >= 0).

        Raises
        ------
        ValueError
            Naming the forms.
        """
        kind, sep, text = str(spec).partition(":")
        if kind == "fixed" and not sep:
            return cls("fixed")
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if kind == "quantile" and 0 < value <= 1:
            return cls("quantile", value)
        if kind == "mad" and 0 <= value < float("inf"):
            return cls("mad", value)
        raise ValueError(f"wait {spec!r}: write fixed, quantile:Q with 0 < Q <= 1, or mad:K with K >= 0")

    @property
    def adaptive(self) -> bool:
        return self.kind != "fixed"


def km_survival(values: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate of ``P(T > t)``: the distinct event times and the survival after each."""
    order = np.lexsort((~observed, values))  # at equal times, events before censorings
    v, e = values[order], observed[order]
    at_risk = v.size - np.arange(v.size)
    factors = np.where(e, 1.0 - 1.0 / at_risk, 1.0)
    survival = np.cumprod(factors)
    return v[e], survival[e]


def km_quantile(values: np.ndarray, observed: np.ndarray, q: float) -> float:
    """The smallest event time ``t`` with ``P(T <= t) >= q``, or the largest event time when the
    censoring leaves the distribution short of ``q``."""
    times, survival = km_survival(values, observed)
    if times.size == 0:
        return float(np.max(values))
    reached = np.flatnonzero(1.0 - survival >= q - 1e-12)
    return float(times[reached[0]] if reached.size else times[-1])


class AdaptiveDeadline:
    """The deadline of each iteration, from a window of recent iterations' arrivals.

    Parameters
    ----------
    rule : WaitRule
        The ``--wait`` rule (not ``fixed``).
    window : int
        Iterations remembered.
    """

    def __init__(self, rule: WaitRule, window: int = 50) -> None:
        self.rule = rule
        self._iterations: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=window)

    def observe(self, arrivals: np.ndarray, cut: float) -> None:
        """One finished iteration: each reply's arrival (seconds; ``inf`` for none), and when it was
        decoded (replies that never came are censored there)."""
        a = np.asarray(arrivals, dtype=float)
        seen = np.isfinite(a)
        self._iterations.append((np.where(seen, a, cut), seen))

    def deadline(self) -> float | None:
        """Seconds from an iteration's start to stop waiting, or None while too little is known."""
        if len(self._iterations) < 2:
            return None
        values = np.concatenate([v for v, _ in self._iterations])
        observed = np.concatenate([o for _, o in self._iterations])
        if not observed.any():
            return None
        if self.rule.kind == "quantile":
            return km_quantile(values, observed, self.rule.value)
        median = km_quantile(values, observed, 0.5)
        seen = values[observed]
        mad = float(np.median(np.abs(seen - np.median(seen))))
        return median + self.rule.value * mad
