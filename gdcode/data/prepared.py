"""Prepared dataset directories: the format ``gdcode prepare`` writes and ``gdcode run`` reads.

A directory holds ``meta.json`` and one set of ``.npy`` files per split (``train``, ``test``)::

    meta.json                 format, rows, cols, nnz, dtype, task, classes, source, split seed
    features.txt              one column name per line (when the preparer knows them)
    dense:  X_train.npy (rows, cols) float64, y_train.npy (rows,) float64, and the same for test
    csr:    train_indptr.npy (rows + 1,) int64, train_indices.npy (nnz,) int32 or int64,
            train_data.npy (nnz,) float64, y_train.npy (rows,) float64, and the same for test

Feature values may be float32 instead (``meta.json`` ``dtype``; ``gdcode prepare mnist`` writes
them so); a run then computes on float32 rows.

Rows are stored in the order the split left them (shuffled, see ``meta.json``), so any
contiguous partition is a fair sample. A reader of rows ``start:stop`` reads only those rows'
bytes (for CSR: ``indptr[start:stop+1]`` and the ``indices``/``data`` ranges it points to), so a
worker's memory is its share of the data whatever the number of workers or the code's layout.

Opening a directory (:class:`PreparedSource`) checks ``meta.json`` and the ``.npy`` headers
only. :meth:`PreparedSource.validate` (or :func:`validate_prepared`) reads every array once,
in chunks of bounded size, and raises :class:`PreparedDataError` for a damaged directory
before any rank reads it; :class:`PreparedWriter` runs the same check before it publishes a
directory, so ``gdcode prepare`` never leaves one that fails it.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gdcode.data.npyio import NpyAppender, NpyFormatError, NpyRows
from gdcode.data.source import TASKS, DataSource
from gdcode.errors import ConfigError

FORMAT = "gdcode-prepared-dataset"
VERSION = 1
SPLITS = ("train", "test")
STORAGES = ("dense", "csr")
#: dtypes of the feature values and labels a prepared directory may hold
FLOAT_DTYPES = ("float32", "float64")
#: dtypes of ``indptr`` and ``indices`` (those scipy's CSR matrices use without a copy)
INDEX_DTYPES = ("int32", "int64")
#: the memory :meth:`PreparedSource.validate` may use by default
VALIDATE_BYTES = 64 * 2**20
#: the smallest ``max_bytes`` :meth:`PreparedSource.validate` accepts
MIN_VALIDATE_BYTES = 1024


class PreparedDataError(ValueError):
    """A prepared directory whose arrays contradict ``meta.json`` or each other, or hold values
    no run can use. The message names the file, the first bad position and what is wrong."""


def is_prepared_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory with a ``meta.json`` of this format."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def file_names(storage: str, split: str) -> dict[str, str]:
    """The files of one split: role -> file name."""
    if storage == "dense":
        return {"X": f"X_{split}.npy", "y": f"y_{split}.npy"}
    return {"indptr": f"{split}_indptr.npy", "indices": f"{split}_indices.npy",
            "data": f"{split}_data.npy", "y": f"y_{split}.npy"}


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``meta.json`` of a prepared directory.

    Raises
    ------
    ConfigError
        When the directory or its ``meta.json`` is missing or not of this format.
    """
    p = Path(path)
    hint = "write one with `gdcode prepare KIND --out DIR`"
    if not p.exists():
        raise ConfigError(f"dataset directory {p} does not exist; {hint}")
    if not p.is_dir():
        raise ConfigError(f"dataset {p} is not a directory; give a directory written by "
                          "`gdcode prepare` (or synthetic:ROWSxCOLS, sklearn:NAME)")
    try:
        meta = json.loads((p / "meta.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p} has no meta.json, so it is not a prepared dataset; "
                          f"{hint}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {p / 'meta.json'}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{p / 'meta.json'} is not valid JSON ({exc}); prepare the "
                          "dataset again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{p / 'meta.json'} is not a gdcode prepared-dataset file "
                          f"(no \"format\": \"{FORMAT}\"); {hint}")
    if meta.get("version") != VERSION:
        raise ConfigError(f"{p} has format version {meta.get('version')!r}; this gdcode reads "
                          f"version {VERSION}: prepare the dataset again")
    required = ("storage", "rows_train", "rows_test", "cols", "task", "n_classes")
    missing = [k for k in required if k not in meta]
    if missing:
        raise ConfigError(f"{p / 'meta.json'} lacks {', '.join(missing)}; prepare the "
                          "dataset again")
    if meta["storage"] not in STORAGES or meta["task"] not in TASKS:
        raise ConfigError(f"{p / 'meta.json'}: storage {meta['storage']!r} or task "
                          f"{meta['task']!r} "
                          "is not known; prepare the dataset again")
    return meta


class PreparedSource(DataSource):
    """A prepared dataset directory, read by row range (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The directory.

    Attributes
    ----------
    bytes_read : int
        Data bytes read from the files so far (the check that a worker reads only its rows).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.meta = meta = read_meta(self.path)
        self.storage = meta["storage"]
        self.n_train, self.n_test = int(meta["rows_train"]), int(meta["rows_test"])
        self.n_cols = int(meta["cols"])
        self.task, self.n_classes = meta["task"], int(meta["n_classes"])
        kind = meta.get("source", {}).get("kind", "?")
        self.description = f"prepared {self.path.name} ({kind}, {self.storage})"
        if self.n_train < 1:
            raise ConfigError(f"{self.path} has no training rows; prepare it with a smaller "
                              "--test-fraction")
        self._files: dict[str, dict[str, NpyRows]] = {}
        try:
            for split, rows in (("train", self.n_train), ("test", self.n_test)):
                self._files[split] = self._open_split(split, rows)
        except NpyFormatError as exc:
            raise ConfigError(f"{exc} (dataset {self.path})") from None
        for readers in self._files.values():  # the checks above are not a worker's reads
            for r in readers.values():
                r.bytes_read = 0

    def _open_split(self, split: str, rows: int) -> dict[str, NpyRows]:
        names = file_names(self.storage, split)
        readers = {}
        for role, name in names.items():
            f = self.path / name
            if not f.is_file():
                raise NpyFormatError(f"{f} is missing")
            readers[role] = NpyRows(f)

        def expect(role: str, shape: tuple, kinds: str) -> None:
            r = readers[role]
            if r.shape != shape or r.dtype.kind not in kinds:
                raise NpyFormatError(f"{r.path} has shape {r.shape} and dtype {r.dtype}; meta.json "
                                     f"says shape {shape} "
                                     f"({'float' if kinds == 'f' else 'integer'})")

        expect("y", (rows,), "f")
        if self.storage == "dense":
            expect("X", (rows, self.n_cols), "f")
        else:
            expect("indptr", (rows + 1,), "iu")
            nnz = readers["indices"].shape[0] if readers["indices"].shape else -1
            expect("indices", (nnz,), "iu")
            expect("data", (nnz,), "f")
            first, last = readers["indptr"].read(0, 1)[0], readers["indptr"].read(rows, rows + 1)[0]
            if first != 0 or last != nnz:
                raise NpyFormatError(f"{readers['indptr'].path} runs from {first} to {last}, "
                                     f"but the split has {nnz} stored values")
        return readers

    @property
    def bytes_read(self) -> int:
        return sum(r.bytes_read for readers in self._files.values() for r in readers.values())

    def _rows(self, split: str, start: int, stop: int):
        f = self._files[split]
        y = f["y"].read(start, stop)
        if self.storage == "dense":
            return f["X"].read(start, stop), y
        import scipy.sparse as sp

        indptr = f["indptr"].read(start, stop + 1)
        lo, hi = int(indptr[0]), int(indptr[-1])
        indptr -= lo
        indices, data = f["indices"].read(lo, hi), f["data"].read(lo, hi)
        if hi - lo < np.iinfo(np.int32).max and indices.dtype == np.int32:
            # matching index types: scipy keeps the arrays as they are, without a copy
            indptr = indptr.astype(np.int32)
        X = sp.csr_matrix((data, indices, indptr), shape=(stop - start, self.n_cols), copy=False)
        return X, y

    def train_rows(self, start: int, stop: int):
        if not 0 <= start <= stop <= self.n_train:
            raise IndexError(f"training rows {start}:{stop} outside 0:{self.n_train}")
        return self._rows("train", start, stop)

    def test_set(self):
        return self._rows("test", 0, self.n_test)

    def metadata(self) -> dict:
        out = super().metadata()
        keep = ("storage", "nnz_train", "nnz_test", "dtype", "classes", "label_rule", "source",
                "split", "standardized")
        out.update({k: self.meta[k] for k in keep if k in self.meta})
        out["path"] = str(self.path)
        return out

    # ------------------------------------------------------------------------- validation

    def bytes_per_row(self) -> float:
        """Memory one training row takes once read: dense values, or CSR values, indices and pointer."""
        item = np.dtype(self.meta.get("dtype", "float64")).itemsize
        if self.storage == "dense":
            return float(item * self.n_cols + 8)
        nnz = float(self.meta.get("nnz_train", 0) or 0)
        return (item + 8) * nnz / max(self.n_train, 1) + 16.0

    def validate(self, max_bytes: int = VALIDATE_BYTES) -> None:
        """Read every array of the directory once and check everything a run relies on.

        Opening the directory checked ``meta.json`` and the ``.npy`` headers; this reads the
        data too, so that a damaged directory is found before a run starts rather than as a
        traceback on one of its ranks. Checked, split by split:

        - ``meta.json``: counts are whole numbers, ``dtype`` and ``index_dtype`` are known,
          ``n_classes`` (and the length of ``classes``) fits the task;
        - every file: present, not truncated, of the shape ``meta.json`` gives (rows of X
          and of the labels, ``indptr`` of rows + 1 entries, ``indices`` and ``data`` of
          equal length), of a native-endian dtype the reader expects (float32 or float64
          values of ``meta.json``'s ``dtype``; int32 or int64 indices);
        - dense ``X``: every value finite;
        - CSR: ``indptr`` starts at 0, never decreases and ends at the number of stored
          values; every column index is in ``0 .. cols - 1``; every stored value is finite;
        - labels: -1 or +1 (binary), whole numbers ``0 .. n_classes - 1`` (multiclass),
          finite (regression);
        - ``nnz_train`` / ``nnz_test`` of ``meta.json`` equal the stored values (CSR) or the
          non-zero values (dense), and ``features.txt`` has one line per column.

        The arrays are streamed through one buffer of at most ``max_bytes / 4`` bytes at a
        time (:meth:`NpyRows.chunks`, read without a memory map), and the checks of a chunk
        make temporaries smaller than twice that, so the memory used stays below
        ``max_bytes`` whatever the size of the dataset. Nothing is counted in
        :attr:`bytes_read`.

        Parameters
        ----------
        max_bytes : int
            Memory the check may use (at least :data:`MIN_VALIDATE_BYTES`).

        Raises
        ------
        PreparedDataError
            At the first problem: the file, the position (``X[row, column]``,
            ``indptr[i]``, ``indices[k]`` with its row, ``y[row]``) and what is wrong.
        ValueError
            For a ``max_bytes`` below :data:`MIN_VALIDATE_BYTES`.
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int | np.integer) or \
                max_bytes < MIN_VALIDATE_BYTES:
            raise ValueError(f"max_bytes must be a whole number of bytes >= {MIN_VALIDATE_BYTES}, "
                             f"not {max_bytes!r}")
        chunk = int(max_bytes) // 4
        float_dtype = self._check_meta()
        for split, rows in (("train", self.n_train), ("test", self.n_test)):
            try:
                readers = self._open_split(split, rows)
                nnz = self._check_split(split, readers, float_dtype, chunk)
            except NpyFormatError as exc:
                raise PreparedDataError(str(exc)) from None
            recorded = self.meta.get(f"nnz_{split}")
            if recorded is not None and recorded != nnz:
                what = "stored values" if self.storage == "csr" else "non-zero values in X"
                raise PreparedDataError(f"{self.path / 'meta.json'}: nnz_{split} is {recorded} "
                                        f"but the {split} arrays hold {nnz} {what}")
        self._check_features(chunk)

    def _check_meta(self) -> np.dtype:
        """Check the counts, dtypes and classes of ``meta.json``; return the value dtype."""
        meta, where = self.meta, self.path / "meta.json"
        for key in ("rows_train", "rows_test", "cols", "n_classes", "nnz_train", "nnz_test"):
            v = meta.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise PreparedDataError(f"{where}: {key} is {v!r}; it must be a whole number "
                                        ">= 0")
        name = meta.get("dtype") or "float64"
        if name not in FLOAT_DTYPES:
            raise PreparedDataError(f"{where}: dtype is {name!r}; values are stored as "
                                    f"{' or '.join(FLOAT_DTYPES)}")
        index = meta.get("index_dtype")
        if self.storage == "csr" and index is not None and index not in INDEX_DTYPES:
            raise PreparedDataError(f"{where}: index_dtype is {index!r}; indices are stored as "
                                    f"{' or '.join(INDEX_DTYPES)}")
        k, task = self.n_classes, self.task
        want = {"binary": k == 2, "regression": k == 1, "multiclass": k >= 2}[task]
        if not want:
            rule = {"binary": "2", "regression": "1", "multiclass": "2 or more"}[task]
            raise PreparedDataError(f"{where}: n_classes is {k} but a {task} dataset has {rule}")
        classes = meta.get("classes")
        if task != "regression" and isinstance(classes, list) and len(classes) != k:
            raise PreparedDataError(f"{where}: classes lists {len(classes)} classes but "
                                    f"n_classes is {k}")
        return np.dtype(name)

    def _check_split(self, split: str, readers: dict[str, NpyRows], float_dtype: np.dtype,
                     chunk: int) -> int:
        """Check the dtypes and values of one split; return its stored (or non-zero) values."""
        for role, r in readers.items():
            if role == "indices" and self.meta.get("index_dtype"):
                allowed: tuple[str, ...] = (self.meta["index_dtype"],)  # as meta.json says
            elif role in ("indptr", "indices"):
                allowed = INDEX_DTYPES
            elif role == "y":
                allowed = FLOAT_DTYPES
            else:  # X, data: the dtype of meta.json
                allowed = (float_dtype.name,)
            if not (r.dtype.isnative and r.dtype.name in allowed):
                raise PreparedDataError(f"{r.path}: dtype {r.dtype.str} ({r.dtype.name}); the "
                                        f"reader expects native-endian {' or '.join(allowed)}")
        if self.storage == "dense":
            nnz = _check_dense(readers["X"], self.n_cols, chunk)
        else:
            nnz = readers["indices"].shape[0]
            _check_indptr(readers["indptr"], readers["indices"], nnz, chunk)
            _check_indices(readers["indices"], readers["indptr"], self.n_cols, chunk)
            _check_data(readers["data"], readers["indices"], readers["indptr"], chunk)
        _check_labels(readers["y"], self.task, self.n_classes, chunk)
        return nnz

    def _check_features(self, chunk: int) -> None:
        """``features.txt``, when ``meta.json`` names it, has one line per column."""
        name = self.meta.get("features")
        if not name:
            return
        where = self.path / "meta.json"
        if not isinstance(name, str) or Path(name).name != name:
            raise PreparedDataError(f"{where}: features is {name!r}; it must name a file of the "
                                    "directory")
        f = self.path / name
        lines = 0
        try:
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(chunk), b""):
                    lines += block.count(b"\n")
        except OSError as exc:
            raise PreparedDataError(f"{f}: cannot be read ({exc.strerror or exc}); meta.json "
                                    "names it as the column names") from None
        if lines != self.n_cols:
            raise PreparedDataError(f"{f} has {lines} lines but meta.json gives {self.n_cols} "
                                    "columns (one name a line)")


def validate_prepared(path: str | os.PathLike, max_bytes: int = VALIDATE_BYTES) -> None:
    """Open the prepared directory ``path`` and :meth:`~PreparedSource.validate` it.

    Raises
    ------
    PreparedDataError
        For damaged data (see :meth:`PreparedSource.validate`).
    ConfigError
        When ``path`` is not a prepared directory, or its ``meta.json`` or the headers of
        its files are wrong (both are ValueError).
    """
    PreparedSource(path).validate(max_bytes)


def _value(v: Any) -> str:
    """A number of an array as plain text (``nan``, ``-3.0``, ``12``)."""
    return repr(float(v)) if isinstance(v, float | np.floating) else str(int(v))


def _row_of(indptr: NpyRows, k: int) -> int:
    """The row that stored value ``k`` belongs to (binary search, a few items read)."""
    lo, hi = 0, len(indptr) - 2  # the last row whose start is <= k
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(indptr.read(mid, mid + 1)[0]) <= k:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _check_dense(X: NpyRows, cols: int, chunk: int) -> int:
    """Every value of dense ``X`` is finite; return how many are not zero."""
    nnz = 0
    for first, a in X.chunks(chunk):
        ok = np.isfinite(a)
        if not ok.all():
            i = int(np.argmin(ok))
            row, col = divmod(first + i, cols)
            raise PreparedDataError(f"{X.path}: X[{row}, {col}] is {_value(a[i])}; feature "
                                    "values must be finite numbers")
        del ok
        nnz += int(np.count_nonzero(a))
    return nnz


def _check_indptr(indptr: NpyRows, indices: NpyRows, nnz: int, chunk: int) -> None:
    """``indptr`` starts at 0, never decreases and ends at ``nnz``."""
    prev = None
    for first, a in indptr.chunks(chunk):
        if first == 0 and a[0] != 0:
            raise PreparedDataError(f"{indptr.path}: indptr[0] is {_value(a[0])}; the first row "
                                    "must start at stored value 0")
        if prev is not None and a[0] < prev:
            raise PreparedDataError(f"{indptr.path}: indptr[{first}] is {_value(a[0])}, less "
                                    f"than indptr[{first - 1}] = {prev}; row starts must not "
                                    "decrease")
        down = a[1:] < a[:-1]
        if down.any():
            i = int(np.argmax(down)) + 1
            raise PreparedDataError(f"{indptr.path}: indptr[{first + i}] is {_value(a[i])}, less "
                                    f"than indptr[{first + i - 1}] = {_value(a[i - 1])}; row "
                                    "starts must not decrease")
        del down
        prev = int(a[-1])
    if prev != nnz:
        raise PreparedDataError(f"{indptr.path}: indptr ends at {prev}, but {indices.path.name} "
                                f"holds {nnz} stored values; the last row must end at the last "
                                "stored value")


def _check_indices(indices: NpyRows, indptr: NpyRows, cols: int, chunk: int) -> None:
    """Every column index is in ``0 .. cols - 1``."""
    for first, a in indices.chunks(chunk):
        if a.min() >= 0 and a.max() < cols:
            continue
        bad = (a < 0) | (a >= cols)
        i = int(np.argmax(bad))
        k = first + i
        raise PreparedDataError(f"{indices.path}: indices[{k}] (row {_row_of(indptr, k)}) is "
                                f"{_value(a[i])}, outside the columns 0..{cols - 1} of meta.json")


def _check_data(data: NpyRows, indices: NpyRows, indptr: NpyRows, chunk: int) -> None:
    """Every stored value is finite."""
    for first, a in data.chunks(chunk):
        ok = np.isfinite(a)
        if ok.all():
            continue
        i = int(np.argmin(ok))
        k = first + i
        col = int(indices.read(k, k + 1)[0])
        raise PreparedDataError(f"{data.path}: data[{k}] (row {_row_of(indptr, k)}, column "
                                f"{col}) is {_value(a[i])}; feature values must be finite "
                                "numbers")


def _check_labels(y: NpyRows, task: str, n_classes: int, chunk: int) -> None:
    """Labels are -1/+1 (binary), 0..K-1 (multiclass) or finite (regression)."""
    if task == "binary":
        rule = "a binary dataset's labels are -1 and +1"
    elif task == "multiclass":
        rule = f"a multiclass dataset of {n_classes} classes has labels 0..{n_classes - 1}"
    else:
        rule = "regression targets must be finite numbers"
    for first, a in y.chunks(chunk):
        if task == "binary":
            ok = a == 1
            ok |= a == -1
        elif task == "multiclass":
            ok = a >= 0
            ok &= a <= n_classes - 1
            ok &= a == np.floor(a)
        else:
            ok = np.isfinite(a)
        if not ok.all():
            i = int(np.argmin(ok))
            raise PreparedDataError(f"{y.path}: y[{first + i}] is {_value(a[i])}; {rule}")


class PreparedWriter:
    """Write a prepared directory split by split, block by block, then publish it atomically.

    The files go to a hidden temporary directory beside ``out``; :meth:`finish` writes
    ``meta.json``, checks the whole directory with :meth:`PreparedSource.validate` and only
    then renames it into place, so neither an interrupted preparation nor one whose data a
    run could not use (a NaN or infinite value, say from scaling huge values, or labels
    outside the task's classes) leaves a directory behind. :meth:`append` already refuses
    non-finite values, naming their row.

    Parameters
    ----------
    out : Path
        The directory to create.
    storage : {"dense", "csr"}
    n_cols : int
    force : bool
        Replace an existing prepared directory (never any other directory).
    dtype : {"float64", "float32"}
        Of the stored feature values (labels are always float64).
    """

    def __init__(self, out: str | os.PathLike, storage: str, n_cols: int,
                 force: bool = False, dtype: str = "float64") -> None:
        if storage not in STORAGES:
            raise ValueError(storage)
        if np.dtype(dtype).name not in FLOAT_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(FLOAT_DTYPES)}")
        self.dtype = np.dtype(dtype)
        self.out = Path(out)
        self.storage, self.n_cols = storage, int(n_cols)
        check_output_dir(self.out, force)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        self.index_dtype = np.int32 if self.n_cols <= np.iinfo(np.int32).max else np.int64
        self.counts: dict[str, dict[str, int]] = {}
        self._open: dict[str, dict[str, Any]] = {}

    def begin(self, split: str, rows: int, nnz: int | None = None) -> None:
        """Open the files of ``split`` for ``rows`` rows (and ``nnz`` stored values for CSR)."""
        names = file_names(self.storage, split)
        if self.storage == "dense":
            files = {"X": NpyAppender(self.tmp / names["X"], (rows, self.n_cols), self.dtype)}
        else:
            if nnz is None:
                raise ValueError("CSR storage needs the number of stored values up front")
            files = {"indptr": NpyAppender(self.tmp / names["indptr"], (rows + 1,), np.int64),
                     "indices": NpyAppender(self.tmp / names["indices"], (nnz,), self.index_dtype),
                     "data": NpyAppender(self.tmp / names["data"], (nnz,), self.dtype)}
            files["indptr"].append(np.zeros(1, dtype=np.int64))
        files["y"] = NpyAppender(self.tmp / names["y"], (rows,), np.float64)
        self._open[split] = {"files": files, "nnz": 0}
        self.counts[split] = {"rows": rows, "nnz": 0 if nnz is None else nnz}

    def append(self, split: str, X, y: np.ndarray) -> None:
        """Append rows ``X`` (dense array or scipy.sparse) and labels ``y`` to ``split``."""
        import scipy.sparse as sp

        state = self._open[split]
        files = state["files"]
        y = np.asarray(y, dtype=np.float64)
        self._check_finite(split, X, y, files["y"].rows)
        if self.storage == "dense":
            X = X.toarray() if sp.issparse(X) else np.asarray(X)
            files["X"].append(X)
            state["nnz"] += int(np.count_nonzero(X))
        else:
            X = canonical_csr(X)
            if X.shape[1] != self.n_cols:
                raise ValueError(f"rows of {X.shape[1]} columns appended to a dataset of "
                                 f"{self.n_cols}")
            files["indptr"].append(np.asarray(X.indptr[1:], dtype=np.int64) + state["nnz"])
            files["indices"].append(X.indices)
            files["data"].append(X.data)
            state["nnz"] += X.nnz
        files["y"].append(y)

    def _check_finite(self, split: str, X, y: np.ndarray, done: int) -> None:
        """ConfigError naming the first row (of the split) with a NaN or infinite value."""
        import scipy.sparse as sp

        values = X.data if sp.issparse(X) else np.asarray(X)
        if np.all(np.isfinite(values)) and np.all(np.isfinite(y)):
            return
        if not np.all(np.isfinite(y)):
            row, what = int(np.flatnonzero(~np.isfinite(y))[0]), "label"
        elif sp.issparse(X):
            X = sp.csr_matrix(X)
            pos = int(np.flatnonzero(~np.isfinite(X.data))[0])
            row, what = int(np.searchsorted(X.indptr, pos, side="right") - 1), "feature"
        else:
            row, what = int(np.flatnonzero(~np.all(np.isfinite(values), axis=1))[0]), "feature"
        raise ConfigError(f"{self.out} was not written: {split} row {done + row} has a NaN or "
                          f"infinite {what} after preparation (scaling very large values "
                          "overflows); a prepared dataset holds finite numbers only")

    def end(self, split: str) -> None:
        """Close the files of ``split``, checking that every row (and stored value) came."""
        state = self._open.pop(split)
        for f in state["files"].values():
            f.__exit__(None, None, None)
        self.counts[split]["nnz"] = state["nnz"]

    def finish(self, meta: dict[str, Any], feature_names: list[str] | None = None) -> Path:
        """Write ``meta.json`` (plus ``features.txt``), validate, move the directory into place.

        Raises
        ------
        ConfigError
            When the directory would fail :meth:`PreparedSource.validate` (nothing is moved
            into place; :meth:`abort` removes the temporary directory).
        """
        import gdcode

        if self._open:
            raise ValueError(f"splits still open: {sorted(self._open)}")
        for split in SPLITS:
            if split not in self.counts:
                self.begin(split, 0, 0)
                self.end(split)
        full = {"format": FORMAT, "version": VERSION, "storage": self.storage,
                "rows_train": self.counts["train"]["rows"],
                "rows_test": self.counts["test"]["rows"],
                "cols": self.n_cols, "nnz_train": self.counts["train"]["nnz"],
                "nnz_test": self.counts["test"]["nnz"], "dtype": self.dtype.name,
                "index_dtype": np.dtype(self.index_dtype).name if self.storage == "csr" else None}
        full.update(meta)
        full["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        full["gdcode_version"] = gdcode.__version__
        if feature_names is not None:
            if len(feature_names) != self.n_cols:
                raise ValueError(f"{len(feature_names)} feature names for {self.n_cols} columns")
            (self.tmp / "features.txt").write_text("".join(f"{n}\n" for n in feature_names))
            full["features"] = "features.txt"
        (self.tmp / "meta.json").write_text(json.dumps(full, indent=2) + "\n")
        try:
            validate_prepared(self.tmp)
        except ValueError as exc:  # PreparedDataError, or ConfigError from the headers
            text = str(exc).replace(str(self.tmp), str(self.out))
            raise ConfigError(f"{self.out} was not written: {text}") from None
        if self.out.exists():  # allowed by check_output_dir: --force over a prepared directory
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        """Remove the temporary directory (after an error)."""
        for state in self._open.values():
            for f in state["files"].values():
                f.close()
        self._open.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def canonical_csr(X):
    """``X`` as CSR with sorted, unique column indices per row (a copy only when needed)."""
    import scipy.sparse as sp

    X = sp.csr_matrix(X)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse to write over anything but an empty directory, or a prepared one with ``force``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory; choose another --out")
    if not any(out.iterdir()):
        return
    if not is_prepared_dir(out):
        raise ConfigError(f"--out {out} exists and is not a prepared dataset directory; "
                          "choose another --out (nothing was overwritten)")
    if not force:
        raise ConfigError(f"--out {out} already holds a prepared dataset; pass --force to "
                          "replace it "
                          "or choose another --out")


def write_prepared(out: str | os.PathLike, splits: dict[str, tuple], meta: dict[str, Any],
                   feature_names: list[str] | None = None, force: bool = False,
                   dtype: str = "float64") -> Path:
    """Write in-memory splits ``{"train": (X, y), "test": (X, y)}`` as a prepared directory.

    ``X`` is a dense array (dense storage) or a scipy.sparse matrix (CSR storage); its values
    are stored as ``dtype``.
    """
    import scipy.sparse as sp

    X0 = splits["train"][0]
    storage = "csr" if sp.issparse(X0) else "dense"
    writer = PreparedWriter(out, storage, X0.shape[1], force=force, dtype=dtype)
    try:
        for split in SPLITS:
            X, y = splits[split]
            if storage == "csr":
                X = canonical_csr(X)
            nnz = X.nnz if sp.issparse(X) else None
            writer.begin(split, X.shape[0], nnz)
            writer.append(split, X, y)
            writer.end(split)
        return writer.finish(meta, feature_names)
    except BaseException:
        writer.abort()
        raise
