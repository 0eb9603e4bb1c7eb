"""``clipped-gd``: gradient descent with the gradient's norm clipped."""

from __future__ import annotations

import numpy as np

from gdcode.optim import Optimizer, Schedule


class ClippedGD(Optimizer):
    """Clipped gradient descent: ``w <- w - eta_t g min(1, max_norm / ||g||)``.

    Parameters
    ----------
    max_norm : float
        The largest step direction norm (> 0, default 1).
    """

    def __init__(self, w0: np.ndarray, schedule: Schedule, max_norm: float = 1.0) -> None:
        super().__init__(w0, schedule)
        if not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}")
        self.max_norm = float(max_norm)

    def step(self, grad):
        self.t += 1
        norm = float(np.linalg.norm(grad))
        scale = min(1.0, self.max_norm / norm) if norm > 0 else 1.0
        self.params -= self.schedule(self.t) * scale * grad
