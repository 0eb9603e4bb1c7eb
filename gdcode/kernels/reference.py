"""numpy twins of the compiled kernels.

Each function has the signature of its compiled counterpart in ``gdcode.kernels.linear``:
it adds ``sum_i coef_i * grad loss_i(w)`` into the preallocated ``grad`` and returns
``sum_i coef_i * loss_i(w)``. They are the reference the compiled kernels are tested against
and the fallback when the extension is not built.
"""

from __future__ import annotations

import numpy as np


def _log1pexp(z: np.ndarray) -> np.ndarray:
    """``log(1 + exp(z))`` without overflow."""
    return np.logaddexp(0.0, z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def logistic_dense(X, y, coef, w, grad) -> float:
    """Logistic loss ``log(1 + exp(-y x.w))``: accumulate the gradient, return the loss sum."""
    z = -y * (X @ w)
    loss = float(coef @ _log1pexp(z))
    d = -coef * y * _sigmoid(z)
    grad += X.T @ d
    return loss


def least_squares_dense(X, y, coef, w, grad) -> float:
    """Squared loss ``(x.w - y)^2 / 2``: accumulate the gradient, return the loss sum."""
    r = X @ w - y
    loss = 0.5 * float(coef @ (r * r))
    grad += X.T @ (coef * r)
    return loss
