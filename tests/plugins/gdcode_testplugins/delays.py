"""``uniform:LOW,HIGH``: a pause drawn uniformly between LOW and HIGH seconds."""

from __future__ import annotations

import math

from gdcode.delays import DelayModel


class Uniform(DelayModel):
    """``uniform:LOW,HIGH``: a pause uniform on [LOW, HIGH] seconds.

    Its ARGS are read by the default ``from_args`` (two floats) and it draws in bulk with the
    default ``sample_bulk`` (exact replay of ``draw``).
    """

    def __init__(self, low: float, high: float, *, seed: int = 0, scale_with_load: bool = False) -> None:
        super().__init__(seed=seed, scale_with_load=scale_with_load)
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
            raise ValueError(f"uniform delay: 0 <= LOW <= HIGH is required, got LOW = {low:g}, HIGH = {high:g}")
        self.low, self.high = low, high

    def sample(self, rng, worker, iteration, compute):
        return float(rng.uniform(self.low, self.high))
