"""Objectives (DESIGN section 3): loss and gradient of a block of rows, through the kernels.

Every model has ``f(w) = (1/n) sum_i loss_i(w) + (lambda/2) ||w||^2``. A worker computes
*sums* of per-row gradients over its rows, weighted per row by its code coefficients
(:meth:`Model.loss_grad_sum`); the coordinator divides the decoded sum by n and adds
``lambda * w`` (:meth:`Model.full_gradient` does the same serially).
"""

from __future__ import annotations

import numpy as np

from gdcode import kernels
from gdcode.errors import ConfigError


class Model:
    """A linear model's objective.

    Attributes
    ----------
    name : str
        Registry name (``--model``).
    task : str
        The dataset task it needs: ``binary`` or ``regression``.
    """

    name = ""
    task = "binary"
    kernel = ""

    def __init__(self, compiled: bool | None = None) -> None:
        self._kernel = kernels.get(self.kernel, compiled=compiled)
        self._reference = kernels.get(self.kernel, compiled=False)

    def n_params(self, n_cols: int, n_classes: int = 2) -> int:
        """Length of the parameter vector."""
        return n_cols

    def loss_grad_sum(self, X: np.ndarray, y: np.ndarray, coef: np.ndarray, w: np.ndarray,
                      grad: np.ndarray) -> float:
        """Add ``sum_i coef_i * grad loss_i(w)`` to ``grad`` (in place); return ``sum_i coef_i loss_i(w)``."""
        if X.shape[0] == 0:
            return 0.0
        if not isinstance(X, np.ndarray):  # scipy.sparse rows: the numpy twin handles them
            return float(self._reference(X, y, coef, w, grad))
        return float(self._kernel(X, y, coef, w, grad))

    def objective(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float) -> float:
        """``f(w)`` on the rows ``X, y``: mean loss plus ``(l2/2) ||w||^2``."""
        grad = np.zeros_like(w)
        loss = self.loss_grad_sum(X, y, np.ones(X.shape[0]), w, grad)
        return loss / X.shape[0] + 0.5 * l2 * float(w @ w)

    def full_gradient(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float) -> np.ndarray:
        """``grad f(w)`` on the rows ``X, y``."""
        grad = np.zeros_like(w)
        self.loss_grad_sum(X, y, np.ones(X.shape[0]), w, grad)
        return grad / X.shape[0] + l2 * w

    def test_metrics(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
        """Held-out metrics of ``w`` (no regularisation in the loss)."""
        raise NotImplementedError


class Logistic(Model):
    """``logistic``: ``log(1 + exp(-y x.w))`` with labels +1/-1."""

    name, task, kernel = "logistic", "binary", "logistic_dense"

    def test_metrics(self, X, y, w):
        if X.shape[0] == 0:
            return {}
        margin = X @ w
        loss = float(np.mean(np.logaddexp(0.0, -y * margin)))
        acc = float(np.mean(np.where(margin >= 0, 1.0, -1.0) == y))
        out = {"test_loss": loss, "test_accuracy": acc}
        auc = binary_auc(y > 0, margin)
        if auc is not None:
            out["test_auc"] = auc
        return out


class LeastSquares(Model):
    """``least-squares``: ``(x.w - y)^2 / 2``, so ``f`` is ``(1/(2n)) sum (x.w - y)^2 + (lambda/2)||w||^2``."""

    name, task, kernel = "least-squares", "regression", "least_squares_dense"

    def test_metrics(self, X, y, w):
        if X.shape[0] == 0:
            return {}
        r = X @ w - y
        return {"test_loss": float(0.5 * np.mean(r * r)), "test_rmse": float(np.sqrt(np.mean(r * r)))}


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None with one class only."""
    from scipy.stats import rankdata

    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


MODELS: dict[str, type[Model]] = {cls.name: cls for cls in (Logistic, LeastSquares)}


def names() -> list[str]:
    """The registered model names."""
    return sorted(MODELS)


def get(name: str, compiled: bool | None = None) -> Model:
    """The model ``name``; ConfigError listing the known models otherwise."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ConfigError(f"--model {name!r} is not a known model; known: {', '.join(names())}") from None
    return cls(compiled=compiled)
