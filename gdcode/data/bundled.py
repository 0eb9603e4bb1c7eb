"""``sklearn:NAME``: the small datasets that ship inside scikit-learn, loaded in-process.

======================  ==========  =====  ====  ==========================================
NAME                    task        rows   cols  labels
======================  ==========  =====  ====  ==========================================
``breast_cancer``       binary      569    30    benign (1) -> +1, malignant (0) -> -1
``diabetes``            regression  442    10    disease progression, kept as given
``digits``              multiclass  1797   64    digit 0..9
``wine``                multiclass  178    13    cultivar 0..2
``iris``                multiclass  150    4     species 0..2
======================  ==========  =====  ====  ==========================================

Rows are split by the seed (:func:`gdcode.data.prepare.common.split_indices`) and the
features standardised with the training rows' mean and standard deviation (their raw scales
differ by orders of magnitude). ``gdcode prepare sklearn --name NAME`` writes the same rows,
standardised the same way, to a directory (``--no-standardize`` keeps the raw features).

Importing scikit-learn costs a process seconds (2.5 s on a 2 GHz VM; scipy.stats comes with
it), and every rank of a run loads the set. So the first load on a machine keeps the raw table in the cache
directory (:func:`gdcode.cachedir.cache_dir`, ``bundled-<NAME>-<digest>.npz``), keyed by the
installed scikit-learn (its path, and the size and modification time of its ``__init__.py``,
found without importing it); later loads, the ranks' after the launcher's, read that file with
numpy alone. A cache that cannot be written or read is passed over: the set is then loaded
through scikit-learn, as it always can be.

Binary rule: when a binary model asks for a multiclass set, the lower half of the classes
(labels ``0 .. K//2 - 1``) is +1 and the rest -1: digits 0-4 against 5-9, iris setosa against
the other two, wine cultivar 0 against 1 and 2.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np

from gdcode.cachedir import cache_dir, write_atomic
from gdcode.data.prepare.common import Labels, Table, map_labels, split_table
from gdcode.data.source import DataSource
from gdcode.errors import ConfigError

#: NAME -> (scikit-learn loader, natural task)
BUNDLED: dict[str, tuple[str, str]] = {
    "breast_cancer": ("load_breast_cancer", "binary"),
    "diabetes": ("load_diabetes", "regression"),
    "digits": ("load_digits", "multiclass"),
    "wine": ("load_wine", "multiclass"),
    "iris": ("load_iris", "multiclass"),
}


def names() -> list[str]:
    """The bundled dataset names."""
    return list(BUNDLED)


def check_name(name: str) -> str:
    """``name`` if it is bundled, else ConfigError listing the names."""
    if name not in BUNDLED:
        raise ConfigError(f"sklearn:{name} is not a bundled dataset; choose one of: "
                          f"{', '.join(BUNDLED)}")
    return name


def load_table(name: str) -> tuple[Table, str]:
    """The raw dataset ``name`` as a :class:`Table`, and its natural task (from the cache when
    this scikit-learn's copy is there, module docstring)."""
    loader, task = BUNDLED[check_name(name)]
    path = cache_path(name)
    arrays = _read_cached(path) if path is not None else None
    if arrays is None:
        arrays = _from_sklearn(loader)
        if path is not None:
            _write_cached(path, arrays)
    X, labels, features = arrays
    table = Table(X=X, labels=labels, origin=f"sklearn:{name}", feature_names=[str(f) for f in features])
    return table, task


def cache_path(name: str) -> Path | None:
    """The cache file of set ``name`` for the installed scikit-learn, or None without one."""
    try:
        spec = importlib.util.find_spec("sklearn")
        origin = spec.origin if spec is not None else None
        st = os.stat(origin) if origin else None
    except (ImportError, ValueError, OSError):
        return None
    if st is None:
        return None
    key = f"{origin}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return cache_dir() / f"bundled-{name}-{hashlib.sha256(key).hexdigest()[:16]}.npz"


def _from_sklearn(loader: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)()
    X = np.asarray(bunch.data, dtype=np.float64)
    features = getattr(bunch, "feature_names", None)
    if features is None:
        features = [f"f{j}" for j in range(X.shape[1])]
    return X, np.asarray(bunch.target), np.asarray([str(f) for f in features])


def _read_cached(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["X"], f["labels"], f["features"]
    except (OSError, ValueError, KeyError):
        return None


def _write_cached(path: Path, arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Keep the raw table (atomically: ranks loading at once see a whole file); a cache that
    cannot be written is passed over."""
    X, labels, features = arrays
    try:
        write_atomic(path, lambda out: np.savez(out, X=X, labels=labels, features=features))
    except OSError:
        pass


def labels_for(table: Table, natural: str, task: str | None, positive: str | None = None) -> Labels:
    """Map the labels of a bundled set for ``task`` (default: its natural task).

    A multiclass set asked for as ``binary`` without ``positive`` follows the binary rule of
    the module docstring.
    """
    task = task or natural
    if natural == "multiclass" and task == "binary" and positive is None:
        classes = np.unique(table.labels)
        k = classes.size
        low = table.labels < classes[k // 2]
        return Labels(np.where(low, 1.0, -1.0), "binary", 2,
                      [[int(c) for c in classes[k // 2:]], [int(c) for c in classes[:k // 2]]],
                      f"classes 0..{k // 2 - 1} -> +1, {k // 2}..{k - 1} -> -1 (lower half of "
                      "the classes)")
    if natural == "regression" and task != "regression":
        raise ConfigError(f"{table.origin} is a regression dataset; it has no classes for a "
                          f"{task} model")
    return map_labels(table.labels, task, positive, table.origin)


class ArraySource(DataSource):
    """A dataset held in memory, already split (used for bundled sets)."""

    def __init__(self, train: tuple, test: tuple, task: str, n_classes: int, description: str,
                 extra: dict | None = None) -> None:
        self._train, self._test = train, test
        self.n_train, self.n_test = train[0].shape[0], test[0].shape[0]
        self.n_cols = train[0].shape[1]
        self.task, self.n_classes = task, n_classes
        self.description = description
        self._extra = extra or {}

    def train_rows(self, start: int, stop: int):
        if not 0 <= start <= stop <= self.n_train:
            raise IndexError(f"training rows {start}:{stop} outside 0:{self.n_train}")
        return self._train[0][start:stop], self._train[1][start:stop]

    def test_set(self):
        return self._test

    def metadata(self) -> dict:
        out = super().metadata()
        out.update(self._extra)
        return out


def open_bundled(name: str, seed: int = 0, test_fraction: float = 0.2,
                 task: str | None = None) -> ArraySource:
    """``sklearn:NAME`` split by ``seed`` and ``test_fraction``, standardised.

    Parameters
    ----------
    task : str, optional
        The task of the model that will train on it; ``binary`` on a multiclass set applies
        the binary rule (module docstring). Default: the set's natural task.
    """
    table, natural = load_table(name)
    lab = labels_for(table, natural, task)
    splits, meta = split_table(table, lab, test_fraction, seed, standardize_features=True)
    desc = f"sklearn:{name} ({lab.task}, standardised, split seed {seed})"
    return ArraySource(splits["train"], splits["test"], lab.task, lab.n_classes, desc,
                       extra={"classes": meta["classes"], "label_rule": meta["label_rule"],
                              "split": meta["split"], "standardized": meta["standardized"]})
