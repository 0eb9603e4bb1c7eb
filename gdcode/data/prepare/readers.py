"""Readers of the generic raw formats: delimited text (CSV), svmlight/libsvm text, ``.npz``.

Each returns a :class:`~gdcode.data.prepare.common.Table` or raises
:class:`~gdcode.errors.ConfigError` naming the file, the line and the problem. The common
case goes through a fast parser (``numpy.loadtxt``, scikit-learn's svmlight reader); when it
fails, a line-by-line scan finds the offending line and says what is wrong with it.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gdcode.data.prepare.common import Table, open_text
from gdcode.errors import ConfigError

_CHUNK = 65536


# ----------------------------------------------------------------------------- CSV


def read_csv(path: str | os.PathLike, label: str | int | None, *, header: bool = True,
             drop: Iterable[str] = (), label_numeric: bool = False, delimiter: str = ",",
             option: str = "--label") -> Table:
    """Read a delimited text file with one label column and numeric feature columns.

    Parameters
    ----------
    path : str or Path
        The file (plain or gzip-compressed).
    label : str or int
        The label column: a header name, or a 0-based position when ``header`` is False.
    header : bool
        Whether line 1 names the columns.
    drop : iterable of str
        Columns to leave out (they need not be numeric).
    label_numeric : bool
        Require numeric labels (regression targets).

    Raises
    ------
    ConfigError
        Empty file, missing label column, ragged lines, non-numeric or missing values: naming
        the file, line and column.
    """
    p = Path(path)
    names = _header(p, header, delimiter)
    if label is None:
        raise ConfigError(f"{option} COLUMN is required; {p} has the columns: {', '.join(names)}")
    if header:
        if label not in names:
            raise ConfigError(f"{p} has no label column {label!r} ({option}); line 1 names: "
                              f"{', '.join(names)}")
        label_col = names.index(label)
    else:
        label_col = int(label) % len(names) if -len(names) <= int(label) < len(names) else -1
        if label_col < 0:
            raise ConfigError(f"{p} has {len(names)} columns; the label column {label} is not "
                              "one of them")
    drop = list(drop)
    unknown = [d for d in drop if d not in names]
    if unknown:
        raise ConfigError(f"--drop {', '.join(unknown)}: {p} has no such column "
                          f"(columns: {', '.join(names)})")
    features = [j for j, n in enumerate(names) if j != label_col and n not in drop]
    if not features:
        raise ConfigError(f"{p} has no feature columns besides the label {names[label_col]!r}")

    table = _csv_fast(p, names, header, label_col, features, delimiter)
    if table is None:
        table = _csv_scan(p, names, header, label_col, features, delimiter, label_numeric)
    return table


def _header(p: Path, header: bool, delimiter: str) -> list[str]:
    with open_text(p) as fh:
        try:
            for first in csv.reader(fh, delimiter=delimiter):
                if first:
                    break
                if header:
                    raise ConfigError(f"{p} line 1 is empty; the first line must name the columns")
            else:
                raise ConfigError(f"{p} is empty: no header and no data lines")
        except UnicodeDecodeError:
            raise ConfigError(f"{p} is not UTF-8 text (line 1); give a text file") from None
        except csv.Error as exc:
            raise ConfigError(f"{p} line 1: {exc}") from None
    if not header:
        return [f"column {j}" for j in range(len(first))]
    names = [n.strip() for n in first]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{p} line 1 names the column(s) {', '.join(dupes)} more than once")
    return names


def _csv_fast(p: Path, names, header, label_col, features, delimiter) -> Table | None:
    """All-numeric files through numpy's C parser; None when anything is unusual."""
    import warnings

    try:
        with open_text(p) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below
            arr = np.loadtxt(fh, delimiter=delimiter, comments=None, ndmin=2, quotechar='"',
                             skiprows=1 if header else 0, dtype=np.float64)
    except (ValueError, UnicodeDecodeError):
        return None
    if arr.shape[0] == 0 or arr.shape[1] != len(names) or not np.all(np.isfinite(arr)):
        return None
    return Table(X=np.ascontiguousarray(arr[:, features]), labels=arr[:, label_col].copy(),
                 origin=str(p), feature_names=[names[j] for j in features])


def _csv_scan(p, names, header, label_col, features, delimiter, label_numeric) -> Table:
    """Line by line: the first problem raises a ConfigError naming its line."""
    chunks, rows, labels = [], [], []
    line = 1
    with open_text(p) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            if header:
                next(reader)
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(names):
                    raise ConfigError(f"{p} line {line}: {len(row)} fields, but "
                                      f"{'the header has' if header else 'line 1 has'} "
                                      f"{len(names)} (a ragged line)")
                rows.append([_number(p, line, names[j], row[j]) for j in features])
                lab = row[label_col].strip()
                if not lab:
                    raise ConfigError(f"{p} line {line}: the label {names[label_col]!r} is empty")
                if label_numeric:
                    _number(p, line, names[label_col], lab)
                labels.append(lab)
                if len(rows) == _CHUNK:
                    chunks.append(np.array(rows, dtype=np.float64))
                    rows = []
        except UnicodeDecodeError:
            raise ConfigError(f"{p} is not UTF-8 text (after line {line})") from None
        except csv.Error as exc:
            raise ConfigError(f"{p} line {reader.line_num}: {exc}") from None
    if rows:
        chunks.append(np.array(rows, dtype=np.float64))
    if not chunks:
        raise ConfigError(f"{p} has {'a header but ' if header else ''}no data lines")
    return Table(X=np.concatenate(chunks), labels=np.array(labels), origin=str(p),
                 feature_names=[names[j] for j in features])


def _finite(text: str, where: str) -> float:
    """``float(text)``; ConfigError "WHERE is not a (finite) number" otherwise."""
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{where} is not a number") from None
    if not math.isfinite(v):
        raise ConfigError(f"{where} is not a finite number")
    return v


def _number(p, line: int, column: str, text: str) -> float:
    t = text.strip()
    if not t:
        raise ConfigError(f"{p} line {line}, column {column!r}: empty field (a missing value); "
                          "fill it, or leave the column out with --drop")
    return _finite(t, f"{p} line {line}, column {column!r}: {text!r}")


# ----------------------------------------------------------------------------- svmlight


#: what ``--zero-based`` accepts: ``auto`` (detect, as scikit-learn does), ``yes``, ``no``
ZERO_BASED = ("auto", "yes", "no")


def zero_based_mode(value: bool | str) -> bool | str:
    """``--zero-based`` as ``True``, ``False`` or ``"auto"`` (also from yes/no/true/false text)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0"):
        return False
    raise ConfigError(f"--zero-based {value!r}: give one of {', '.join(ZERO_BASED)}")


def read_svmlight(path: str | os.PathLike, zero_based: bool | str = "auto") -> Table:
    """Read a svmlight/libsvm text file: ``LABEL [qid:N] INDEX:VALUE ...`` per line.

    Parameters
    ----------
    path : str or Path
        The file (plain or gzip-compressed).
    zero_based : bool or "auto"
        Whether the indices start at 0. ``"auto"`` (the default, scikit-learn's rule): the
        file is zero-based when some line has index 0, else one-based (libsvm's convention);
        a zero-based file whose first column is empty everywhere therefore reads as
        one-based, shifted by one column.

    Returns
    -------
    Table
        Features as CSR (indices increasing along a line; blank lines and ``#`` comments
        skipped); ``extra["zero_based"]`` says how the indices were read.

    Raises
    ------
    ConfigError
        Naming the file and line of the first malformed entry.
    """
    from sklearn.datasets import load_svmlight_file

    mode = zero_based_mode(zero_based)
    p = Path(path)
    fh = open_text(p)  # checks that the file opens; the fast reader wants bytes
    raw = fh.buffer if hasattr(fh, "buffer") else None
    try:  # read the indices as written; the shift is decided below
        X, y = load_svmlight_file(raw, dtype=np.float64, zero_based=True)
    except (ValueError, UnicodeDecodeError) as exc:
        fh.close()
        _svmlight_scan(p, mode)  # raises with the line when it can tell
        raise ConfigError(f"{p}: not a valid svmlight file ({exc})") from None
    finally:
        fh.close()
    if X.shape[0] == 0:
        raise ConfigError(f"{p} has no data lines (empty, or comments only)")
    if not np.all(np.isfinite(X.data)) or not np.all(np.isfinite(y)):
        _svmlight_scan(p, mode)
    X = X.tocsr()
    has_zero = bool(X.indices.size) and int(X.indices.min()) == 0
    if mode is False and has_zero:
        _svmlight_scan(p, mode)  # names the line with index 0
    is_zero_based = has_zero if mode == "auto" else bool(mode)
    if not is_zero_based:  # one-based: column j of the file is column j - 1
        X = X[:, 1:]
    X.sort_indices()
    first = 0 if is_zero_based else 1
    return Table(X=X, labels=np.asarray(y, dtype=np.float64), origin=str(p),
                 feature_names=[f"f{j + first}" for j in range(X.shape[1])],
                 extra={"zero_based": is_zero_based})


def _svmlight_scan(p: Path, zero_based: bool | str) -> None:
    first = 1 if zero_based is False else 0
    with open_text(p) as fh:
        line = 0
        try:
            for line, text in enumerate(fh, start=1):
                body = text.split("#", 1)[0].split()
                if not body:
                    continue
                label, *pairs = body
                _svm_float(p, line, label, "label")
                if pairs and pairs[0].startswith("qid:"):
                    pairs = pairs[1:]
                last = first - 1
                for tok in pairs:
                    idx_text, sep, val_text = tok.partition(":")
                    if not sep:
                        raise ConfigError(f"{p} line {line}: {tok!r} is not INDEX:VALUE")
                    try:
                        idx = int(idx_text)
                    except ValueError:
                        raise ConfigError(f"{p} line {line}: index {idx_text!r} in {tok!r} is "
                                          "not an integer") from None
                    if idx < first:
                        hint = "" if first == 0 else ("; --zero-based no reads indices from 1 (leave "
                                                      "it out to detect a 0-based file)")
                        raise ConfigError(f"{p} line {line}: index {idx} is below {first}{hint}")
                    if idx <= last:
                        raise ConfigError(f"{p} line {line}: index {idx} after index {last}; "
                                          "indices "
                                          "must increase along a line (sorted, no repeats)")
                    last = idx
                    _svm_float(p, line, val_text, f"value of index {idx}")
        except UnicodeDecodeError:
            raise ConfigError(f"{p} is not UTF-8 text (after line {line})") from None


def _svm_float(p, line: int, text: str, what: str) -> float:
    return _finite(text, f"{p} line {line}: the {what} {text!r}")


# ----------------------------------------------------------------------------- npz


def read_npz(path: str | os.PathLike) -> Table:
    """Read a ``.npz`` archive: dense ``X`` and ``y``, or CSR ``data``, ``indices``, ``indptr``,
    ``shape`` and ``y`` (the layout of ``scipy.sparse.save_npz`` plus a ``y`` array).

    Raises
    ------
    ConfigError
        Unreadable or not an archive of arrays, missing arrays, inconsistent shapes,
        non-numeric or non-finite features.
    """
    import zipfile

    import scipy.sparse as sp

    p = Path(path)
    try:
        with p.open("rb") as fh:
            magic = fh.read(6)
    except IsADirectoryError:
        raise ConfigError(f"--raw {p} is a directory; give the .npz file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read --raw {p}: {exc.strerror or exc}") from None
    if magic[:4] != b"PK\x03\x04" and magic != b"\x93NUMPY":
        raise ConfigError(f"{p} is not a .npz archive (not a zip file of .npy arrays); write one "
                          "with np.savez(FILE, X=X, y=y)")
    try:
        archive = np.load(p, allow_pickle=False)
    except IsADirectoryError:
        raise ConfigError(f"--raw {p} is a directory; give the .npz file") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or not p.exists():
            raise ConfigError(f"cannot read --raw {p}: {exc.strerror or exc}") from None
        raise ConfigError(f"{p} is not a .npz archive of arrays ({exc})") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{p} is not a .npz archive of arrays ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ConfigError(f"{p} is a single .npy array; give a .npz archive with arrays X and y "
                          "(np.savez(FILE, X=X, y=y))")
    with archive:
        keys = sorted(archive.files)

        def get(name: str) -> np.ndarray:
            try:
                return archive[name]
            except ValueError as exc:
                raise ConfigError(f"{p}: array {name!r} cannot be read without pickle ({exc}); "
                                  "store plain numeric or text arrays") from None
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ConfigError(f"{p}: array {name!r} is damaged ({exc})") from None

        if "y" not in keys:
            raise ConfigError(f"{p} has no array 'y' of labels (arrays: "
                              f"{', '.join(keys) or 'none'}); "
                              "save it with np.savez(FILE, X=X, y=y)")
        y = get("y")
        if "X" in keys:
            X = get("X")
            if X.ndim != 2:
                raise ConfigError(f"{p}: array 'X' has shape {X.shape}; it must be 2-D (rows, "
                                  "columns)")
            if X.dtype.kind not in "iufb":
                raise ConfigError(f"{p}: array 'X' has dtype {X.dtype}; features must be numeric")
            X = X.astype(np.float64)
            n = X.shape[0]
        elif {"data", "indices", "indptr", "shape"} <= set(keys):
            data, indices, indptr, shape = get("data"), get("indices"), get("indptr"), get("shape")
            fmt = str(get("format")) if "format" in keys else "csr"
            if fmt not in ("csr", "b'csr'"):
                raise ConfigError(f"{p} holds a {fmt} matrix; save a CSR matrix (X.tocsr())")
            if (data.dtype.kind not in "iufb" or indices.dtype.kind not in "iu"
                    or indptr.dtype.kind not in "iu"):
                raise ConfigError(f"{p}: 'data' must be numeric and 'indices', 'indptr' integers")
            if shape.shape != (2,):
                raise ConfigError(f"{p}: 'shape' is {shape.tolist()}; it must be (rows, columns)")
            n, d = int(shape[0]), int(shape[1])
            if (indptr.ndim != 1 or indptr.size != n + 1 or indptr[0] != 0
                    or np.any(np.diff(indptr) < 0) or indptr[-1] != data.size
                    or data.size != indices.size):
                raise ConfigError(f"{p}: 'indptr' (length {indptr.size}) does not describe {n} "
                                  "rows "
                                  f"of {data.size} stored values; save a valid CSR matrix")
            if indices.size and (indices.min() < 0 or indices.max() >= d):
                raise ConfigError(f"{p}: a column index in 'indices' is outside 0..{d - 1}")
            X = sp.csr_matrix((data.astype(np.float64), indices, indptr), shape=(n, d))
            X.sum_duplicates()
        else:
            raise ConfigError(f"{p} has neither 'X' (dense) nor 'data', 'indices', 'indptr', "
                              "'shape' "
                              f"(CSR) (arrays: {', '.join(keys)})")
    if y.ndim != 1 or y.shape[0] != n:
        raise ConfigError(f"{p}: 'y' has shape {y.shape} but the features have {n} rows")
    if n == 0:
        raise ConfigError(f"{p} has no rows")
    if y.dtype.kind not in "iufbUS":
        raise ConfigError(f"{p}: 'y' has dtype {y.dtype}; labels must be numbers or text")
    if y.dtype.kind == "S":
        y = y.astype(str)
    return Table(X=X, labels=y, origin=str(p), feature_names=None)
