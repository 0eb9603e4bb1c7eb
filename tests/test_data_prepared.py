"""Prepared dataset directories: format, row-range reads, partitions, specs and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gdcode import cli
from gdcode.data import (
    open_dataset,
    parse_dataset_spec,
    partition_bounds,
    stack_rows,
    worker_rows,
)
from gdcode.data.npyio import NpyFormatError, NpyRows
from gdcode.data.prepare import PrepareOptions, prepare
from gdcode.data.prepared import PreparedSource, write_prepared
from gdcode.errors import ConfigError


def _synthetic(tmp_path: Path, name: str = "s", **kw) -> Path:
    opts = PrepareOptions(out=str(tmp_path / name), **kw)
    path, _ = prepare("synthetic", opts)
    return path


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def test_dense_synthetic_directory_equals_the_synthetic_spec(tmp_path):
    path = _synthetic(tmp_path, rows=3000, cols=7, seed=5, test_fraction=0.25)
    prepared = open_dataset(str(path))
    spec = open_dataset("synthetic:3000x7", seed=5, test_fraction=0.25)
    assert (prepared.n_train, prepared.n_test, prepared.n_cols) == (2250, 750, 7)
    for lo, hi in [(0, 2250), (1000, 1100), (2249, 2250)]:
        Xa, ya = prepared.train_rows(lo, hi)
        Xb, yb = spec.train_rows(lo, hi)
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(prepared.test_set()[0], spec.test_set()[0])
    np.testing.assert_array_equal(prepared.test_set()[1], spec.test_set()[1])


def test_sparse_synthetic_rows_are_reproducible_and_well_formed(tmp_path):
    a = _synthetic(tmp_path, "a", rows=2500, cols=300, sparse=True, nnz_per_row=9, seed=2)
    b = _synthetic(tmp_path, "b", rows=2500, cols=300, sparse=True, density=0.03, seed=2)
    c = _synthetic(tmp_path, "c", rows=2500, cols=300, sparse=True, nnz_per_row=9, seed=3)
    meta = json.loads((a / "meta.json").read_text())
    assert meta["storage"] == "csr" and meta["nnz_train"] == 2000 * 9 and meta["nnz_test"] == 500 * 9
    for name in ("train_indptr.npy", "train_indices.npy", "train_data.npy", "y_train.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes()  # 0.03 * 300 = 9 per row
    assert (a / "train_data.npy").read_bytes() != (c / "train_data.npy").read_bytes()
    X, y = PreparedSource(a).train_rows(0, 2000)
    assert np.all(np.diff(X.indptr) == 9)
    assert X.has_canonical_format and X.indices.max() < 300
    assert set(np.unique(y)) == {-1.0, 1.0}


@pytest.mark.parametrize("sparse", [False, True])
def test_partitions_round_trip_for_any_worker_count_and_layout(tmp_path, sparse):
    kw = {"sparse": True, "nnz_per_row": 4} if sparse else {}
    path = _synthetic(tmp_path, rows=1203, cols=40, test_fraction=0.0, **kw)
    src = PreparedSource(path)
    X_all, y_all = src.train_rows(0, src.n_train)
    assert src.n_test == 0 and src.test_set()[0].shape == (0, 40)
    rng = np.random.default_rng(0)
    for n_parts in (1, 2, 3, 4, 7, 12):
        bounds = partition_bounds(src.n_train, n_parts)
        # every partition read on its own, then stacked, is the whole set
        X, y = stack_rows([src.train_rows(int(lo), int(hi)) for lo, hi in zip(bounds[:-1],
                                                                             bounds[1:], strict=True)])
        np.testing.assert_array_equal(_dense(X), _dense(X_all))
        np.testing.assert_array_equal(y, y_all)
        # a code's row of B: the rows of its partitions, in partition order
        coef = rng.integers(0, 3, size=n_parts) * 0.5
        coef[rng.integers(0, n_parts)] = 1.0
        ranges, row_coef = worker_rows(bounds, coef)
        Xw, yw = stack_rows([src.train_rows(lo, hi) for lo, hi in ranges])
        want = np.concatenate([np.arange(lo, hi) for lo, hi in ranges])
        np.testing.assert_array_equal(_dense(Xw), _dense(X_all)[want])
        np.testing.assert_array_equal(yw, y_all[want])
        assert row_coef.size == want.size
        assert sp.issparse(Xw) == sparse


@pytest.mark.parametrize("sparse", [False, True])
def test_a_worker_reads_only_its_rows(tmp_path, sparse):
    kw = {"sparse": True, "nnz_per_row": 5} if sparse else {}
    path = _synthetic(tmp_path, rows=4096, cols=64, test_fraction=0.0, **kw)
    src = PreparedSource(path)
    assert src.bytes_read == 0  # opening reads headers only
    lo, hi = 1000, 1500
    X, _ = src.train_rows(lo, hi)
    rows = hi - lo
    if sparse:
        want = (rows + 1) * 8 + rows * 5 * (4 + 8) + rows * 8  # indptr, indices+data, y
    else:
        want = rows * 64 * 8 + rows * 8
    assert src.bytes_read == want
    full_size = sum(f.stat().st_size for f in path.glob("*train*.npy"))
    assert src.bytes_read < 0.15 * full_size


def test_sparse_rows_are_not_copied_by_scipy_or_stack_rows(tmp_path):
    path = _synthetic(tmp_path, rows=3000, cols=100, sparse=True, nnz_per_row=3, test_fraction=0.0)
    X, y = PreparedSource(path).train_rows(10, 900)
    assert X.indices.dtype == np.int32 and X.indptr.dtype == np.int32
    X2, y2 = stack_rows([(X, y)])
    assert np.shares_memory(X2.data, X.data) and np.shares_memory(X2.indices, X.indices)


def test_stack_rows_of_several_csr_blocks_matches_vstack():
    rng = np.random.default_rng(1)
    blocks = [(sp.random(n, 9, density=0.3, format="csr", random_state=rng), rng.normal(size=n))
              for n in (5, 0, 7, 3)]
    X, y = stack_rows(blocks)
    np.testing.assert_array_equal(X.toarray(), sp.vstack([b[0] for b in blocks]).toarray())
    np.testing.assert_array_equal(y, np.concatenate([b[1] for b in blocks]))
    # a block that is a row slice of a bigger matrix (indptr not starting at 0)
    big = sp.random(20, 9, density=0.4, format="csr", random_state=rng)
    X, _ = stack_rows([(big[3:8], np.zeros(5)), (big[10:12], np.zeros(2))])
    np.testing.assert_array_equal(X.toarray(), big.toarray()[np.r_[3:8, 10:12]])


def test_write_prepared_round_trip_dense_and_csr(tmp_path):
    rng = np.random.default_rng(4)
    Xd = rng.normal(size=(30, 6))
    y = np.where(rng.random(30) < 0.5, 1.0, -1.0)
    meta = {"task": "binary", "n_classes": 2}
    for name, X in (("dense", Xd), ("csr", sp.csr_matrix(np.where(Xd > 0.5, Xd, 0.0)))):
        write_prepared(tmp_path / name, {"train": (X[:20], y[:20]), "test": (X[20:], y[20:])}, meta)
        src = open_dataset(str(tmp_path / name))
        assert src.metadata()["storage"] == name
        np.testing.assert_array_equal(_dense(src.train_rows(0, 20)[0]), _dense(X[:20]))
        np.testing.assert_array_equal(_dense(src.test_set()[0]), _dense(X[20:]))
        np.testing.assert_array_equal(src.test_set()[1], y[20:])


# ----------------------------------------------------------------------------- bad directories


def _broken(tmp_path: Path) -> Path:
    return _synthetic(tmp_path, "broken", rows=200, cols=5, sparse=True, nnz_per_row=2)


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "meta.json").unlink(), "has no meta.json"),
    (lambda p: (p / "meta.json").write_text("{not json"), "is not valid JSON"),
    (lambda p: (p / "meta.json").write_text('{"format": "other"}'), "not a gdcode prepared"),
    (lambda p: (p / "train_data.npy").unlink(), "train_data.npy is missing"),
    (lambda p: (p / "y_test.npy").write_bytes((p / "y_test.npy").read_bytes()[:-8]), "truncated"),
    (lambda p: np.save(p / "y_train.npy", np.zeros(3)), "meta.json says shape"),
    (lambda p: (p / "train_indices.npy").write_bytes(b"garbage"), "is not a .npy file"),
])
def test_a_damaged_directory_is_a_clear_config_error(tmp_path, damage, message, capsys):
    path = _broken(tmp_path)
    damage(path)
    with pytest.raises(ConfigError, match=message):
        parse_dataset_spec(str(path))
    assert cli.main(["run", "--dataset", str(path), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message.split()[0] in err


def test_missing_directory_and_unknown_specs(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no such directory exists; use synthetic:ROWSxCOLS, "
                                          "sklearn:NAME or the directory of a prepared dataset"):
        parse_dataset_spec(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="is not a directory"):
        (tmp_path / "file").write_text("x")
        parse_dataset_spec(str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="not a known dataset"):
        parse_dataset_spec("imagenet:full")
    with pytest.raises(ConfigError, match="choose one of: breast_cancer"):
        parse_dataset_spec("sklearn:mnist")
    with pytest.raises(ConfigError, match="synthetic:ROWSxCOLS"):
        parse_dataset_spec("synthetic:12")
    assert parse_dataset_spec("synthetic:10x3") == ("synthetic", {"rows": 10, "cols": 3})
    assert parse_dataset_spec("sklearn:iris") == ("sklearn", {"name": "iris"})
    assert cli.main(["run", "--dataset", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_npy_rows_reader(tmp_path):
    a = np.arange(60, dtype=np.float64).reshape(20, 3)
    np.save(tmp_path / "a.npy", a)
    r = NpyRows(tmp_path / "a.npy")
    np.testing.assert_array_equal(r.read(4, 9), a[4:9])
    assert r.read(5, 5).shape == (0, 3) and r.bytes_read == 5 * 3 * 8
    with pytest.raises(IndexError):
        r.read(10, 21)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    with pytest.raises(NpyFormatError, match="Fortran"):
        NpyRows(tmp_path / "f.npy")
    with pytest.raises(NpyFormatError, match="cannot read"):
        NpyRows(tmp_path / "none.npy")
