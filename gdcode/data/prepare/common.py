"""What every preparer shares: labels, the split, standardisation, one-hot encoding, raw files.

A reader turns a raw file into a :class:`Table` (features and raw labels); :func:`finish`
maps the labels for the task, splits the rows with the seed, standardises if asked and writes
the prepared directory.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from gdcode.errors import ConfigError
from gdcode.kernels.reference import issparse

#: what --task accepts
TASKS = ("binary", "multiclass", "regression")


@dataclasses.dataclass
class Table:
    """A parsed raw dataset.

    Attributes
    ----------
    X : numpy.ndarray or scipy.sparse.csr_matrix
        Features, float64.
    labels : numpy.ndarray
        Raw labels: numbers (float64) or text.
    origin : str
        The raw file (or dataset name) for messages and ``meta.json``.
    feature_names : list of str or None
    extra : dict
        What the reader found out about the file (e.g. ``zero_based``), recorded in the
        ``source`` of ``meta.json``.
    """

    X: Any
    labels: np.ndarray
    origin: str
    feature_names: list[str] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Labels:
    """Labels mapped for a task: ``y`` float64 plus how they were mapped."""

    y: np.ndarray
    task: str
    n_classes: int
    classes: list
    rule: str


# ----------------------------------------------------------------------------- raw files


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a raw text file (plain or gzip-compressed) for reading, UTF-8.

    Raises
    ------
    ConfigError
        When the file cannot be opened, naming it and the reason.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
        return p.open("r", encoding="utf-8", newline="")
    except IsADirectoryError:
        raise ConfigError(f"--raw {p} is a directory; give the raw data file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read --raw {p}: {exc.strerror or exc}") from None


def json_value(v: Any) -> Any:
    """A label as JSON: integral numbers as int, other numbers as float, text as str."""
    if isinstance(v, (str, np.str_)):
        return str(v)
    f = float(v)
    return int(f) if f.is_integer() else f


def numeric_labels(labels: np.ndarray) -> np.ndarray | None:
    """``labels`` as float64 when every one is a number, else None."""
    if labels.dtype.kind in "iufb":
        return labels.astype(np.float64)
    try:
        return np.array([float(v) for v in labels], dtype=np.float64)
    except ValueError:
        return None


# ----------------------------------------------------------------------------- labels


def map_labels(labels: np.ndarray, task: str, positive: str | None, origin: str) -> Labels:
    """Map raw labels for ``task``.

    - ``binary``: +1/-1. With ``positive``, that label is +1 and every other -1 (one class
      against the rest). Without it there must be exactly two labels; the larger one (numeric
      order, or text order for text labels) is +1.
    - ``multiclass``: the sorted distinct labels become 0..K-1.
    - ``regression``: the labels must be numbers; they are kept.

    Raises
    ------
    ConfigError
        For more than two classes under ``binary`` without ``positive``, a ``positive`` that is
        not a label, one class only, or non-numeric regression targets.
    """
    if task not in TASKS:
        raise ConfigError(f"--task {task!r} is not one of: {', '.join(TASKS)}")
    if labels.size == 0:
        raise ConfigError(f"{origin} has no rows")
    num = numeric_labels(labels)
    values = num if num is not None else labels.astype(str)
    if task == "regression":
        if num is None:
            bad = next(v for v in labels if not _is_number(v))
            raise ConfigError(f"{origin}: the label {bad!r} is not a number; a regression target "
                              "must be numeric (or use --task binary/multiclass)")
        if not np.all(np.isfinite(num)):
            row = int(np.flatnonzero(~np.isfinite(num))[0])
            raise ConfigError(f"{origin}: the label of data row {row + 1} is {num[row]}; "
                              "targets must be finite")
        return Labels(num, "regression", 1, [], "target kept as given")
    classes, codes = np.unique(values, return_inverse=True)
    shown = ", ".join(str(json_value(c)) for c in classes[:10])
    shown += ", ..." if classes.size > 10 else ""
    if task == "multiclass":
        if classes.size < 2:
            raise ConfigError(f"{origin}: the label has one value ({shown}); a classifier needs "
                              "two or more")
        return Labels(codes.astype(np.float64), "multiclass", int(classes.size),
                      [json_value(c) for c in classes], "sorted distinct labels -> 0..K-1")
    if positive is not None:
        pos: float | str
        if num is not None:
            try:
                pos = float(positive)
            except ValueError:
                raise ConfigError(f"--positive {positive!r} is not one of the labels of {origin} "
                                  f"({shown})") from None
        else:
            pos = positive
        hit = values == pos
        if not hit.any():
            raise ConfigError(f"--positive {positive!r} is not one of the labels of {origin} "
                              f"({shown})")
        if hit.all():
            raise ConfigError(f"every label of {origin} is {positive!r}; a binary model needs "
                              "two classes")
        y = np.where(hit, 1.0, -1.0)
        rest = [json_value(c) for c in classes if c != pos]
        return Labels(y, "binary", 2, [rest, json_value(pos)],
                      f"{json_value(pos)!r} -> +1, every other label -> -1")
    if classes.size > 2:
        raise ConfigError(f"{origin}: the label has {classes.size} classes ({shown}); a binary "
                          "model needs two: give --positive LABEL (that class against the rest) or "
                          "--task multiclass")
    if classes.size < 2:
        raise ConfigError(f"{origin}: every label is {shown}; a binary model needs two classes")
    y = np.where(codes == 1, 1.0, -1.0)
    return Labels(y, "binary", 2, [json_value(classes[0]), json_value(classes[1])],
                  f"{json_value(classes[1])!r} -> +1, {json_value(classes[0])!r} -> -1; the "
                  "larger label is +1")


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- split, scaling


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split: ``(train, test)`` row indices, train in shuffled order.

    ``round(n * test_fraction)`` rows are held out. The same ``(n, test_fraction, seed)``
    always gives the same split.
    """
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"--test-fraction {test_fraction} must be in [0, 1)")
    n_test = int(round(n * test_fraction))
    if n - n_test < 1:
        raise ConfigError(f"{n} rows with --test-fraction {test_fraction} leave no training rows")
    perm = np.random.default_rng([seed, 0x5B117]).permutation(n)
    return perm[n_test:], perm[:n_test]


def standardize(X_train, X_test) -> tuple[Any, Any, str]:
    """Scale columns with the training rows' statistics.

    Dense: subtract the mean and divide by the standard deviation. Sparse: divide by the
    standard deviation only, so that zeros stay zeros. Constant columns are left unscaled.

    Returns
    -------
    X_train, X_test, how : the scaled copies and ``"center-scale"`` or ``"scale"``
    """
    if issparse(X_train):
        import scipy.sparse as sp

        n = max(X_train.shape[0], 1)
        mean = np.asarray(X_train.sum(axis=0)).ravel() / n
        sq = np.asarray(X_train.multiply(X_train).sum(axis=0)).ravel() / n
        sd = np.sqrt(np.maximum(sq - mean * mean, 0.0))
        sd[sd == 0] = 1.0
        scale = sp.diags(1.0 / sd)
        return (X_train @ scale).tocsr(), (X_test @ scale).tocsr(), "scale"
    mean = X_train.mean(axis=0)
    sd = X_train.std(axis=0)
    sd[sd == 0] = 1.0
    return (X_train - mean) / sd, (X_test - mean) / sd, "center-scale"


# ----------------------------------------------------------------------------- encodings


def one_hot(columns: list[np.ndarray], names: list[str],
            formats: list | None = None) -> tuple[Any, list[str]]:
    """One-hot encode categorical columns into a CSR matrix with one 1 per row per column.

    Categories are each column's distinct values, in sorted order, so the encoding depends
    only on the data, not on row order. ``formats[j]``, when given, turns a category of
    column j into the text of its feature name.

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (rows, total categories)
    feature_names : ``"name=value"`` per output column
    """
    import scipy.sparse as sp

    n = len(columns[0]) if columns else 0
    codes = np.empty((n, len(columns)), dtype=np.int64)
    feature_names: list[str] = []
    offset = 0
    for j, (col, name) in enumerate(zip(columns, names, strict=True)):
        cats, inv = np.unique(np.asarray(col), return_inverse=True)
        codes[:, j] = inv.ravel() + offset
        offset += cats.size
        fmt = (formats[j] if formats else None) or _label
        feature_names.extend(f"{name}={fmt(c)}" for c in cats)
    indptr = np.arange(0, n * len(columns) + 1, len(columns), dtype=np.int64)
    X = sp.csr_matrix((np.ones(codes.size), codes.ravel(), indptr), shape=(n, offset))
    return X, feature_names


def _label(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin numbers (0..) of ``values`` by quantiles: at most ``bins`` bins, ties merge bins."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


# ----------------------------------------------------------------------------- finishing


def finish(table: Table, *, kind: str, out: str | os.PathLike, task: str, positive: str | None,
           test_fraction: float, seed: int, standardize_features: bool, force: bool,
           source: dict[str, Any], labels: Labels | None = None) -> tuple[Any, dict]:
    """Map labels, split, standardise and write ``table`` as a prepared directory.

    Parameters
    ----------
    labels : Labels, optional
        Labels already mapped by the preparer (then ``task``/``positive`` are not used).

    Returns
    -------
    path, meta : the directory written and its ``meta.json`` content
    """
    from gdcode.data.prepared import write_prepared

    lab = labels if labels is not None else map_labels(table.labels, task, positive, table.origin)
    splits, meta = split_table(table, lab, test_fraction, seed, standardize_features)
    meta["source"] = {"kind": kind, **source}
    path = write_prepared(out, splits, meta, table.feature_names, force=force)
    return path, meta


def split_table(table: Table, lab: Labels, test_fraction: float, seed: int,
                standardize_features: bool) -> tuple[dict[str, tuple], dict[str, Any]]:
    """The seeded split of ``table`` (standardised if asked) and the meta entries describing it."""
    X = table.X.tocsr() if issparse(table.X) else np.asarray(table.X, dtype=np.float64)
    if X.shape[0] != lab.y.shape[0]:
        raise ValueError(f"{X.shape[0]} rows but {lab.y.shape[0]} labels")
    check_finite(X, table.origin)
    train, test = split_indices(X.shape[0], test_fraction, seed)
    Xtr, Xte = X[train], X[test]
    how = None
    if standardize_features:
        Xtr, Xte, how = standardize(Xtr, Xte)
    meta = {"task": lab.task, "n_classes": lab.n_classes, "classes": lab.classes,
            "label_rule": lab.rule, "standardized": how,
            "split": {"seed": seed, "test_fraction": test_fraction,
                      "rule": "seeded permutation; the first round(n*f) rows held out, "
                              "training rows kept in permuted order"}}
    return {"train": (Xtr, lab.y[train]), "test": (Xte, lab.y[test])}, meta


def check_finite(X, origin: str) -> None:
    """ConfigError naming the first row with a NaN or infinite feature."""
    sparse = issparse(X)
    vals = X.data if sparse else X
    if np.all(np.isfinite(vals)):
        return
    if sparse:
        pos = int(np.flatnonzero(~np.isfinite(X.data))[0])
        row = int(np.searchsorted(X.indptr, pos, side="right") - 1)
    else:
        row = int(np.flatnonzero(~np.all(np.isfinite(X), axis=1))[0])
    raise ConfigError(f"{origin}: data row {row + 1} has a NaN or infinite feature; "
                      "fill or drop missing values first")


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a raw file (recorded in ``meta.json``)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
