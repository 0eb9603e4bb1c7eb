"""Prepared dataset directories: the format ``gdcode prepare`` writes and ``gdcode run`` reads.

A directory holds ``meta.json`` and one set of ``.npy`` files per split (``train``, ``test``)::

    meta.json                 format, rows, cols, nnz, dtype, task, classes, source, split seed
    features.txt              one column name per line (when the preparer knows them)
    dense:  X_train.npy (rows, cols) float64, y_train.npy (rows,) float64, and the same for test
    csr:    train_indptr.npy (rows + 1,) int64, train_indices.npy (nnz,) int32 or int64,
            train_data.npy (nnz,) float64, y_train.npy (rows,) float64, and the same for test

Rows are stored in the order the split left them (shuffled, see ``meta.json``), so any
contiguous partition is a fair sample. A reader of rows ``start:stop`` reads only those rows'
bytes (for CSR: ``indptr[start:stop+1]`` and the ``indices``/``data`` ranges it points to), so a
worker's memory is its share of the data whatever the number of workers or the code's layout.
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


class PreparedWriter:
    """Write a prepared directory split by split, block by block, then publish it atomically.

    The files go to a hidden temporary directory beside ``out``; :meth:`finish` writes
    ``meta.json`` and renames the directory into place, so an interrupted preparation never
    leaves a directory that looks complete.

    Parameters
    ----------
    out : Path
        The directory to create.
    storage : {"dense", "csr"}
    n_cols : int
    force : bool
        Replace an existing prepared directory (never any other directory).
    """

    def __init__(self, out: str | os.PathLike, storage: str, n_cols: int,
                 force: bool = False) -> None:
        if storage not in STORAGES:
            raise ValueError(storage)
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
            files = {"X": NpyAppender(self.tmp / names["X"], (rows, self.n_cols), np.float64)}
        else:
            if nnz is None:
                raise ValueError("CSR storage needs the number of stored values up front")
            files = {"indptr": NpyAppender(self.tmp / names["indptr"], (rows + 1,), np.int64),
                     "indices": NpyAppender(self.tmp / names["indices"], (nnz,), self.index_dtype),
                     "data": NpyAppender(self.tmp / names["data"], (nnz,), np.float64)}
            files["indptr"].append(np.zeros(1, dtype=np.int64))
        files["y"] = NpyAppender(self.tmp / names["y"], (rows,), np.float64)
        self._open[split] = {"files": files, "nnz": 0}
        self.counts[split] = {"rows": rows, "nnz": 0 if nnz is None else nnz}

    def append(self, split: str, X, y: np.ndarray) -> None:
        """Append rows ``X`` (dense array or scipy.sparse) and labels ``y`` to ``split``."""
        import scipy.sparse as sp

        state = self._open[split]
        files = state["files"]
        if self.storage == "dense":
            X = X.toarray() if sp.issparse(X) else np.asarray(X)
            files["X"].append(X)
            state["nnz"] += int(np.count_nonzero(X))
        else:
            X = canonical_csr(X)
            files["indptr"].append(np.asarray(X.indptr[1:], dtype=np.int64) + state["nnz"])
            files["indices"].append(X.indices)
            files["data"].append(X.data)
            state["nnz"] += X.nnz
        files["y"].append(np.asarray(y, dtype=np.float64))

    def end(self, split: str) -> None:
        """Close the files of ``split``, checking that every row (and stored value) came."""
        state = self._open.pop(split)
        for f in state["files"].values():
            f.__exit__(None, None, None)
        self.counts[split]["nnz"] = state["nnz"]

    def finish(self, meta: dict[str, Any], feature_names: list[str] | None = None) -> Path:
        """Write ``meta.json`` (plus ``features.txt``) and move the directory into place."""
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
                "nnz_test": self.counts["test"]["nnz"], "dtype": "float64",
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
                   feature_names: list[str] | None = None, force: bool = False) -> Path:
    """Write in-memory splits ``{"train": (X, y), "test": (X, y)}`` as a prepared directory.

    ``X`` is a dense array (dense storage) or a scipy.sparse matrix (CSR storage).
    """
    import scipy.sparse as sp

    X0 = splits["train"][0]
    storage = "csr" if sp.issparse(X0) else "dense"
    writer = PreparedWriter(out, storage, X0.shape[1], force=force)
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
