"""``huber``: Huber regression in plain numpy (no kernels)."""

from __future__ import annotations

import numpy as np

from gdcode.models import Model


class HuberRegression(Model):
    """Huber regression: ``r^2 / 2`` for ``|r| <= delta``, else ``delta (|r| - delta / 2)``, ``r = x.w - y``.

    Parameters
    ----------
    delta : float
        Where the loss turns from quadratic to linear (> 0, default 1).
    """

    task = "regression"

    def __init__(self, delta: float = 1.0) -> None:
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        self.delta = float(delta)

    def loss_grad_sum(self, X, y, coef, w, grad):
        if X.shape[0] == 0:
            return 0.0
        r = np.asarray(X @ w, dtype=np.float64) - y
        small = np.abs(r) <= self.delta
        loss = np.where(small, 0.5 * r * r, self.delta * (np.abs(r) - 0.5 * self.delta))
        psi = np.where(small, r, self.delta * np.sign(r))
        grad += np.asarray(X.T @ (coef * psi), dtype=np.float64).ravel()
        return float(coef @ loss)

    def test_metrics(self, X, y, w):
        if X.shape[0] == 0:
            return {}
        loss = self.loss_grad_sum(X, y, np.ones(X.shape[0]), w, np.zeros(np.shape(w)))
        r = np.asarray(X @ w) - y
        return {"test_loss": loss / X.shape[0], "test_rmse": float(np.sqrt(np.mean(r * r)))}
