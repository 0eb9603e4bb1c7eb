"""The dataset interface that workers and the coordinator read rows through."""

from __future__ import annotations

import numpy as np

TASKS = ("binary", "regression", "multiclass")


class DataSource:
    """A dataset split into training and held-out rows, read by row range.

    A worker asks only for its own training rows (:meth:`train_rows`), so a source that
    generates or memory-maps rows never materialises the whole set on a worker.

    Attributes
    ----------
    n_train, n_test, n_cols : int
        Training rows, held-out rows and feature columns.
    task : str
        ``binary`` (labels +1/-1), ``regression`` or ``multiclass`` (labels 0..K-1).
    n_classes : int
        K for ``multiclass``, else 2 (binary) or 1 (regression).
    """

    n_train: int
    n_test: int
    n_cols: int
    task: str = "binary"
    n_classes: int = 2
    description: str = ""

    def train_rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Training rows ``start:stop`` as ``(X, y)``."""
        raise NotImplementedError

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """All held-out rows as ``(X, y)``; empty arrays when there are none."""
        raise NotImplementedError

    def train_set(self) -> tuple[np.ndarray, np.ndarray]:
        """All training rows (the coordinator's evaluation copy)."""
        return self.train_rows(0, self.n_train)

    def bytes_per_row(self) -> float:
        """Memory one training row takes once read (features and label): what a memory estimate uses."""
        return 8.0 * (self.n_cols + 1)

    def metadata(self) -> dict:
        """What ``metadata.json`` records about the dataset."""
        return {"rows_train": self.n_train, "rows_test": self.n_test, "cols": self.n_cols,
                "task": self.task, "description": self.description}
