"""A gdcode model written with autograd: a one-hidden-layer network for binary labels.

Only the per-row loss is written (``row_losses``, in ``autograd.numpy``); autograd derives the
gradient of the coefficient-weighted sum, which is what a gdcode worker sends. Run it with::

    PYTHONPATH=DIR gdcode run --model autograd_model:TanhNet --model-options hidden=16 ...

where DIR holds this file (``pip install autograd`` first). tests/test_autograd_model.py
runs this file.
"""

from __future__ import annotations

import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad

from gdcode.models import Model


class TanhNet(Model):
    """``s(x) = w2 . tanh(W1 x + b1) + b2``, loss ``log(1 + exp(-y s(x)))``, labels +1/-1.

    The parameter vector is ``W1`` (``hidden`` x columns, row-major), ``b1``, ``w2``, ``b2``.

    Parameters
    ----------
    hidden : int
        Width of the hidden layer (default 8).
    """

    task = "binary"
    sparse_steps = False  # the parameters mix the columns: hogwild takes full steps on CSR rows

    def __init__(self, hidden: int = 8) -> None:
        if int(hidden) < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.hidden = int(hidden)
        self._value_and_grad = value_and_grad(self._weighted_loss)

    def n_params(self, n_cols: int, n_classes: int = 2) -> int:
        return (n_cols + 2) * self.hidden + 1

    def n_classes(self, n_params: int, n_cols: int) -> int:
        if n_params != self.n_params(n_cols):
            raise ValueError(f"TanhNet on {n_cols} columns has {self.n_params(n_cols)} parameters, not {n_params}")
        return 1

    def initial_point(self, n_cols: int, n_classes: int, seed: int) -> np.ndarray:
        """Glorot-scaled weights, zero biases, from the run's seed."""
        rng = np.random.default_rng([seed, 0xA6])
        h = self.hidden
        W1 = rng.normal(0.0, np.sqrt(2.0 / (n_cols + h)), (h, n_cols))
        w2 = rng.normal(0.0, np.sqrt(2.0 / (h + 1)), h)
        return np.concatenate([W1.ravel(), np.zeros(h), w2, np.zeros(1)])

    def _unpack(self, w, n_cols: int):
        h = self.hidden
        W1 = anp.reshape(w[:h * n_cols], (h, n_cols))
        b1 = w[h * n_cols:h * (n_cols + 1)]
        w2 = w[h * (n_cols + 1):h * (n_cols + 2)]
        return W1, b1, w2, w[-1]

    def scores(self, X, w):
        W1, b1, w2, b2 = self._unpack(w, X.shape[1])
        return anp.dot(anp.tanh(anp.dot(X, W1.T) + b1), w2) + b2

    def row_losses(self, w, X, y):
        return anp.logaddexp(0.0, -y * self.scores(X, w))

    def _weighted_loss(self, w, X, y, coef):
        return anp.dot(coef, self.row_losses(w, X, y))

    def loss_grad_sum(self, X, y, coef, w, grad):
        keep = np.flatnonzero(coef)  # rows with coefficient 0 count for nothing
        if keep.size == 0:
            return 0.0
        X = X[keep]
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X, dtype=np.float64)
        loss, g = self._value_and_grad(np.asarray(w, dtype=np.float64), X, y[keep], coef[keep])
        grad += g
        return float(loss)

    def test_metrics(self, X, y, w):
        if X.shape[0] == 0:
            return {}
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X, dtype=np.float64)
        s = self.scores(X, w)
        return {"test_loss": float(np.mean(self.row_losses(w, X, y))),
                "test_accuracy": float(np.mean(np.where(s >= 0, 1.0, -1.0) == y))}
