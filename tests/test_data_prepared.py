"""Prepared dataset directories: format, row-range reads, partitions, specs and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
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
from gdcode.data.prepared import (
    PreparedDataError,
    PreparedSource,
    PreparedWriter,
    validate_prepared,
    write_prepared,
)
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


# ----------------------------------------------------------------------------- validate()

SMALL = 1024  # the smallest budget: 256-byte chunks, so every array spans many chunks


def _poke(path: Path, index, value) -> None:
    """Write one value into a .npy file in place (its dtype and shape unchanged)."""
    a = np.load(path, mmap_mode="r+")
    a[index] = value
    a.flush()
    del a


def _csr(tmp_path: Path) -> Path:
    # 200 rows, 160 of them training: train_indptr has 161 int64 entries (6 chunks of 32),
    # train_indices 320 int32 (5 chunks of 64), train_data 320 float64 (10 chunks)
    return _synthetic(tmp_path, "csr", rows=200, cols=5, sparse=True, nnz_per_row=2)


def _dense_dir(tmp_path: Path) -> Path:
    return _synthetic(tmp_path, "dense", rows=120, cols=6)


def _sklearn(tmp_path: Path, name: str) -> Path:
    path, _ = prepare("sklearn", PrepareOptions(out=str(tmp_path / name), name=name))
    return path


def _meta(path: Path, **changes) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("make", [_csr, _dense_dir, lambda p: _sklearn(p, "digits"),
                                  lambda p: _sklearn(p, "diabetes"),
                                  lambda p: _synthetic(p, "all", rows=50, cols=3,
                                                       test_fraction=0.0)],
                         ids=["csr", "dense", "multiclass", "regression", "no-test-rows"])
@pytest.mark.parametrize("max_bytes", [SMALL, 64 * 2**20])
def test_a_good_directory_validates(tmp_path, make, max_bytes):
    src = PreparedSource(make(tmp_path))
    assert src.validate(max_bytes) is None
    assert src.bytes_read == 0  # the check is not a worker's reads
    validate_prepared(src.path, max_bytes=max_bytes)


# each case: (make, damage, file named in the message, what the message says)
DAMAGES = {
    "column index too large": (
        _csr, lambda p: _poke(p / "train_indices.npy", 101, 5),
        "train_indices.npy", "indices[101] (row 50) is 5, outside the columns 0..4"),
    "negative column index": (
        _csr, lambda p: _poke(p / "test_indices.npy", 0, -3),
        "test_indices.npy", "indices[0] (row 0) is -3, outside the columns 0..4"),
    "indptr decreasing": (
        _csr, lambda p: _poke(p / "train_indptr.npy", 77, 3),
        "train_indptr.npy", "indptr[77] is 3, less than indptr[76] = 152"),
    "indptr decreasing across a chunk edge": (
        _csr, lambda p: _poke(p / "train_indptr.npy", 32, 0),
        "train_indptr.npy", "indptr[32] is 0, less than indptr[31] = 62"),
    "indptr not starting at 0": (
        _csr, lambda p: _poke(p / "train_indptr.npy", 0, 1),
        "train_indptr.npy", "runs from 1 to 320"),
    "indptr not ending at nnz": (
        _csr, lambda p: _poke(p / "train_indptr.npy", -1, 319),
        "train_indptr.npy", "but the split has 320 stored values"),
    "NaN stored value": (
        _csr, lambda p: _poke(p / "train_data.npy", 65, np.nan),
        "train_data.npy", "data[65] (row 32, column "),
    "infinite dense value": (
        _dense_dir, lambda p: _poke(p / "X_train.npy", (40, 5), np.inf),
        "X_train.npy", "X[40, 5] is inf; feature values must be finite"),
    "NaN dense value in the test rows": (
        _dense_dir, lambda p: _poke(p / "X_test.npy", (3, 0), np.nan),
        "X_test.npy", "X[3, 0] is nan"),
    "binary label 0": (
        _csr, lambda p: _poke(p / "y_train.npy", 33, 0.0),
        "y_train.npy", "y[33] is 0.0; a binary dataset's labels are -1 and +1"),
    "binary label NaN": (
        _dense_dir, lambda p: _poke(p / "y_test.npy", 5, np.nan),
        "y_test.npy", "y[5] is nan"),
    "multiclass label beyond the classes": (
        lambda p: _sklearn(p, "digits"), lambda p: _poke(p / "y_train.npy", 100, 10.0),
        "y_train.npy", "y[100] is 10.0; a multiclass dataset of 10 classes has labels 0..9"),
    "multiclass label not whole": (
        lambda p: _sklearn(p, "digits"), lambda p: _poke(p / "y_test.npy", 2, 2.5),
        "y_test.npy", "y[2] is 2.5"),
    "regression target infinite": (
        lambda p: _sklearn(p, "diabetes"), lambda p: _poke(p / "y_train.npy", 7, -np.inf),
        "y_train.npy", "y[7] is -inf; regression targets must be finite"),
    "fewer labels than rows": (
        _dense_dir, lambda p: np.save(p / "y_train.npy", np.ones(95)),
        "y_train.npy", "meta.json says shape (96,)"),
    "indices of another dtype": (
        _csr, lambda p: np.save(p / "train_indices.npy",
                                np.load(p / "train_indices.npy").astype(np.uint32)),
        "train_indices.npy", "the reader expects native-endian int32"),
    "values of another dtype": (
        _dense_dir, lambda p: np.save(p / "X_train.npy",
                                      np.load(p / "X_train.npy").astype(np.float32)),
        "X_train.npy", "dtype <f4 (float32); the reader expects native-endian float64"),
    "big-endian labels": (
        _dense_dir, lambda p: np.save(p / "y_test.npy", np.load(p / "y_test.npy").astype(">f8")),
        "y_test.npy", "dtype >f8 (float64); the reader expects native-endian float32 or float64"),
    "nnz of meta.json (csr)": (
        _csr, lambda p: _meta(p, nnz_train=321),
        "meta.json", "nnz_train is 321 but the train arrays hold 320 stored values"),
    "nnz of meta.json (dense)": (
        _dense_dir, lambda p: _meta(p, nnz_test=1),
        "meta.json", "nnz_test is 1 but the test arrays hold 144 non-zero values in X"),
    "n_classes of a binary set": (
        _csr, lambda p: _meta(p, n_classes=3),
        "meta.json", "n_classes is 3 but a binary dataset has 2"),
    "classes and n_classes disagree": (
        lambda p: _sklearn(p, "digits"), lambda p: _meta(p, classes=[0, 1, 2]),
        "meta.json", "classes lists 3 classes but n_classes is 10"),
    "a count that is not whole": (
        _csr, lambda p: _meta(p, nnz_test=2.5),
        "meta.json", "nnz_test is 2.5; it must be a whole number"),
    "unknown value dtype": (
        _dense_dir, lambda p: _meta(p, dtype="float16"),
        "meta.json", "dtype is 'float16'"),
    "features.txt short": (
        lambda p: _sklearn(p, "digits"),
        lambda p: (p / "features.txt").write_text("a\nb\n"),
        "features.txt", "has 2 lines but meta.json gives 64 columns"),
}


@pytest.mark.parametrize("case", list(DAMAGES))
@pytest.mark.parametrize("max_bytes", [SMALL, 64 * 2**20])
def test_a_damaged_directory_fails_validation(tmp_path, case, max_bytes):
    make, damage, name, says = DAMAGES[case]
    path = make(tmp_path)
    PreparedSource(path).validate(max_bytes)  # good before
    damage(path)
    with pytest.raises(ValueError) as info:  # from opening (headers) or from validate()
        validate_prepared(path, max_bytes=max_bytes)
    message = str(info.value)
    assert str(path / name) in message and says in message, message
    assert "--" not in message  # library terms: no command-line flags


def test_validate_raises_prepared_data_error_and_checks_its_budget(tmp_path):
    path = _csr(tmp_path)
    src = PreparedSource(path)
    _poke(path / "train_indices.npy", 3, 99)
    with pytest.raises(PreparedDataError, match=r"indices\[3\] \(row 1\) is 99"):
        src.validate()
    for bad in (0, 1023, 2.0**20, True):
        with pytest.raises(ValueError, match="max_bytes must be a whole number"):
            src.validate(bad)


@pytest.mark.parametrize("sparse", [False, True])
def test_validate_reads_every_byte_in_chunks_within_the_budget(tmp_path, monkeypatch, sparse):
    kw = {"sparse": True, "nnz_per_row": 7} if sparse else {}
    path = _synthetic(tmp_path, rows=3000, cols=50, **kw)
    seen: dict[str, list[int]] = {}
    chunks = NpyRows.chunks

    def spy(self, max_bytes):
        for first, chunk in chunks(self, max_bytes):
            seen.setdefault(self.path.name, []).append(chunk.nbytes)
            yield first, chunk

    monkeypatch.setattr(NpyRows, "chunks", spy)
    budget = 16 * 1024
    PreparedSource(path).validate(budget)
    data_bytes = {f.name: f.stat().st_size - NpyRows(f).offset for f in path.glob("*.npy")}
    assert {n: sum(sizes) for n, sizes in seen.items()} == data_bytes  # every byte, once
    assert max(max(sizes) for sizes in seen.values()) <= budget // 4
    assert max(len(sizes) for sizes in seen.values()) > 10


def _write_big(path: Path, sparse: bool, mib: int) -> int:
    """A prepared directory of about ``mib`` MiB of training rows, written block by block."""
    rng = np.random.default_rng(0)
    rows_per_block, cols = 8192, 256
    blocks = mib * 2**20 // (rows_per_block * cols * 8)
    y = np.where(np.arange(rows_per_block) % 2 == 0, 1.0, -1.0)
    writer = PreparedWriter(path, "csr" if sparse else "dense", cols * 32 if sparse else cols)
    if sparse:  # the same bytes as dense: 8 bytes of value + 4 of index per stored value, 2/3
        k = cols * 2 // 3
        block = sp.csr_matrix((rng.normal(size=rows_per_block * k),
                               np.tile(np.arange(0, 32 * k, 32, dtype=np.int32), rows_per_block),
                               np.arange(0, rows_per_block * k + 1, k)),
                              shape=(rows_per_block, cols * 32))
        writer.begin("train", rows_per_block * blocks, block.nnz * blocks)
    else:
        block = rng.normal(size=(rows_per_block, cols))
        writer.begin("train", rows_per_block * blocks)
    for _ in range(blocks):
        writer.append("train", block, y)
    writer.end("train")
    writer.finish({"task": "binary", "n_classes": 2, "classes": [-1, 1]})
    return sum(f.stat().st_size for f in path.glob("*.npy"))


# Peak resident memory of the process, VmHWM of /proc/self/status. Not ru_maxrss: Linux carries
# that over fork and exec from the parent, here pytest after writing the dataset, so that a
# child's own peak below the parent's would not show at all.
MEASURE = """\
import sys
import numpy as np
from gdcode.data.npyio import NpyRows
from gdcode.data.prepared import PreparedSource

def peak():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))

src = PreparedSource(sys.argv[1])
before = peak()
src.validate(int(sys.argv[2]))
after = peak()
biggest = max(src.path.glob("*.npy"), key=lambda f: f.stat().st_size)
whole = NpyRows(biggest).read_all()  # the control: reading one array whole does show
print(before, after, peak(), whole.nbytes)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_validate_memory_stays_bounded_on_a_large_dataset(tmp_path, sparse):
    budget = 16 * 2**20
    size = _write_big(tmp_path / "big", sparse, mib=256)
    assert size > 15 * budget
    res = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "big"), str(budget)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    before, after, control, whole = map(int, res.stdout.split())
    assert after - before <= budget, f"validate() grew the peak by {(after - before) / 2**20} MiB"
    assert control - after >= 0.9 * whole  # the measurement does see a whole array read


# ----------------------------------------------------------------------------- prepare refuses


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") or p.name == "out")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_prepare_refuses_values_that_overflow_when_scaled(tmp_path, capsys):
    """Finite raw values whose squares overflow: scaling the sparse columns gives NaN."""
    X = sp.csr_matrix(np.array([[1e200, 0.0], [3e200, 1.0], [0.0, 2.0], [2e200, 0.0]] * 5))
    raw = tmp_path / "raw.npz"
    np.savez(raw, data=X.data, indices=X.indices, indptr=X.indptr, shape=X.shape,
             y=np.array([0, 1] * 10))
    out = tmp_path / "out"
    assert cli.main(["prepare", "npz", "--raw", str(raw), "--out", str(out)]) == 0
    validate_prepared(out)  # unscaled, the values are finite and the directory is good
    code = cli.main(["prepare", "npz", "--raw", str(raw), "--out", str(out), "--force",
                     "--standardize"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{out} was not written: train row" in err and "NaN or infinite feature" in err
    validate_prepared(out)  # the old directory is still there, untouched
    assert _leftovers(tmp_path) == ["out"]


@pytest.mark.parametrize("sparse", [False, True])
def test_the_writer_refuses_non_finite_values(tmp_path, sparse):
    X = np.ones((6, 3))
    X[4, 1] = np.nan
    X = sp.csr_matrix(X) if sparse else X
    y = np.array([1.0, -1.0] * 3)
    meta = {"task": "binary", "n_classes": 2}
    with pytest.raises(ConfigError, match=r"was not written: train row 4 has a NaN or infinite "
                                          "feature"):
        write_prepared(tmp_path / "out", {"train": (X, y), "test": (X[:0], y[:0])}, meta)
    y[2] = np.inf
    with pytest.raises(ConfigError, match="train row 2 has a NaN or infinite label"):
        write_prepared(tmp_path / "out", {"train": (np.ones((6, 3)), y),
                                          "test": (np.ones((0, 3)), y[:0])}, meta)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("task, n_classes, labels, says", [
    ("binary", 2, [1.0, 0.0, -1.0, 1.0], "y[1] is 0.0; a binary dataset's labels are -1 and +1"),
    ("multiclass", 3, [0.0, 1.0, 3.0, 2.0], "y[2] is 3.0; a multiclass dataset of 3 classes"),
    ("multiclass", 3, [0.0, 0.5, 1.0, 2.0], "y[1] is 0.5"),
])
def test_the_writer_refuses_labels_outside_the_classes(tmp_path, task, n_classes, labels, says):
    X, y = np.ones((4, 2)), np.array(labels)
    with pytest.raises(ConfigError) as info:
        write_prepared(tmp_path / "out", {"train": (X, y), "test": (X[:0], y[:0])},
                       {"task": task, "n_classes": n_classes})
    assert f"{tmp_path / 'out'} was not written: {tmp_path / 'out' / 'y_train.npy'}: {says}" in \
        str(info.value)
    assert _leftovers(tmp_path) == []
