"""``gdcode prepare``: each preparer on its fixture, every loader on malformed input."""

from __future__ import annotations

import csv
import json
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from gdcode import cli
from gdcode.data import open_dataset
from gdcode.data.prepare import PrepareOptions, download, prepare
from gdcode.data.prepared import PreparedSource
from gdcode.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"


def _rows(path: Path, skip_header: bool = True) -> list[list[str]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[1:] if skip_header else rows


def _all(src: PreparedSource):
    X, y = src.train_rows(0, src.n_train)
    Xt, yt = src.test_set()
    return sp.vstack([X, Xt]).toarray() if sp.issparse(X) else np.vstack([X, Xt]), np.r_[y, yt]


def _prepare(kind: str, tmp_path: Path, dirname: str = "out", **kw) -> PreparedSource:
    path, _ = prepare(kind, PrepareOptions(out=str(tmp_path / dirname), **kw))
    return PreparedSource(path)


def _exit_code(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------- the papers' sets


def test_amazon_one_hot_of_columns_and_pairs(tmp_path):
    raw = FIXTURES / "amazon_train.csv"
    rows = _rows(raw)
    src = _prepare("amazon", tmp_path, raw=str(raw))
    assert (src.n_train, src.n_test) == (32, 8) and src.task == "binary"
    assert src.storage == "csr"
    values = np.array(rows, dtype=np.int64)  # ACTION, then the nine columns
    n_single = sum(np.unique(values[:, j]).size for j in range(1, 10))
    pairs = [(a, b) for a in range(1, 10) for b in range(a + 1, 10)
             if {a, b} not in ({3, 4}, {6, 8})]  # (ROLLUP_1, ROLLUP_2), (TITLE, FAMILY) left out
    n_pairs = sum(np.unique(values[:, [a, b]], axis=0).shape[0] for a, b in pairs)
    assert len(pairs) == 34 and src.n_cols == n_single + n_pairs
    X, y = _all(src)
    assert set(np.unique(X)) == {0.0, 1.0} and np.all(X.sum(axis=1) == 9 + 34)
    names = (src.path / "features.txt").read_text().split()
    assert len(names) == src.n_cols and "RESOURCE*MGR_ID=" in names[n_single]
    # the labels follow ACTION (1 -> +1) through the split, row by row
    by_resource_col = {n: j for j, n in enumerate(names)}
    for x, label in zip(X, y, strict=True):
        res = next(n for n in names[:n_single] if n.startswith("RESOURCE=") and x[by_resource_col[n]])
        matching = [r for r in rows if f"RESOURCE={r[1]}" == res]
        assert {1.0 if r[0] == "1" else -1.0 for r in matching} >= {label}
    assert np.sum(y == 1) == sum(r[0] == "1" for r in rows)


def test_covtype_classes_one_and_two_binned_one_hot(tmp_path):
    raw = FIXTURES / "covtype.data"
    rows = np.array(_rows(raw, skip_header=False), dtype=np.int64)
    kept = rows[(rows[:, 54] == 1) | (rows[:, 54] == 2)]
    src = _prepare("covtype", tmp_path, raw=str(raw), test_fraction=0.25)
    assert src.n_train + src.n_test == kept.shape[0]
    assert src.n_test == round(kept.shape[0] * 0.25)
    n_numeric = sum(np.unique(kept[:, j]).size for j in range(10))
    assert src.n_cols == n_numeric + 44
    X, y = _all(src)
    assert np.all(X.sum(axis=1) == 10 + 2)  # one bin per numeric column, one area, one soil
    assert np.sum(y == 1) == np.sum(kept[:, 54] == 2) and np.sum(y == -1) == np.sum(kept[:, 54] == 1)
    meta = json.loads((src.path / "meta.json").read_text())
    assert meta["classes"] == [1, 2] and meta["source"]["bins"] == 0
    binned = _prepare("covtype", tmp_path, "binned", raw=str(raw), bins=3)
    assert binned.n_cols <= 10 * 3 + 44 and binned.n_cols < src.n_cols
    assert np.all(_all(binned)[0].sum(axis=1) == 12)


def test_kc_house_least_squares_target_and_one_hot(tmp_path):
    raw = FIXTURES / "kc_house_data.csv"
    rows = _rows(raw)
    src = _prepare("kc_house", tmp_path, raw=str(raw), test_fraction=0.2, seed=7)
    assert src.task == "regression" and (src.n_train, src.n_test) == (24, 6)
    cats = [3, 4, 7, 8, 9, 10, 11, 14, 15, 16]  # bedrooms ... zipcode columns of the raw file
    n_cat = sum(len({float(r[j]) for r in rows}) for j in cats)
    assert src.n_cols == n_cat + 8
    X, y = _all(src)
    prices = sorted(float(r[2]) / 1e6 for r in rows)
    np.testing.assert_allclose(np.sort(y), prices)
    assert np.all((X[:, :n_cat] != 0).sum(axis=1) == len(cats))
    names = (src.path / "features.txt").read_text().split()
    zips = [n for n in names if n.startswith("zipcode=")]
    assert sorted(zips) == sorted(f"zipcode={z}" for z in {r[16] for r in rows})
    np.testing.assert_allclose(X[:, n_cat:].mean(axis=0), 0.0, atol=1e-12)  # all rows' scaling
    every = _prepare("kc_house", tmp_path, "all", raw=str(raw), one_hot_all=True)
    assert np.all(_all(every)[0].sum(axis=1) == 18)


def test_split_is_reproducible_from_the_seed(tmp_path):
    raw = str(FIXTURES / "kc_house_data.csv")
    a = _prepare("kc_house", tmp_path, "a", raw=raw, seed=3)
    b = _prepare("kc_house", tmp_path, "b", raw=raw, seed=3)
    c = _prepare("kc_house", tmp_path, "c", raw=raw, seed=4)
    for name in ("y_train.npy", "y_test.npy", "train_data.npy", "train_indices.npy"):
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes()
    assert not np.array_equal(a.train_rows(0, a.n_train)[1], c.train_rows(0, c.n_train)[1])
    meta = json.loads((a.path / "meta.json").read_text())
    assert meta["split"]["seed"] == 3 and meta["source"]["sha256"]


def test_paper_raw_files_that_are_wrong(tmp_path, capsys):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("ACTION,RESOURCE,MGR_ID\n1,2,3\n")
    code, err = _exit_code(["prepare", "amazon", "--raw", str(wrong), "--out", str(tmp_path / "o")],
                           capsys)
    assert code == 2 and "lacks the column(s) ROLE_ROLLUP_1" in err
    short = tmp_path / "covtype.data"
    short.write_text("1,2,3\n")
    code, err = _exit_code(["prepare", "covtype", "--raw", str(short)], capsys)
    assert code == 2 and "covtype.data has 55" in err
    bad_class = tmp_path / "cov9.data"
    line = (FIXTURES / "covtype.data").read_text().splitlines()[0]
    bad_class.write_text(line + "\n" + line[: line.rindex(",")] + ",9\n")
    code, err = _exit_code(["prepare", "covtype", "--raw", str(bad_class)], capsys)
    assert code == 2 and "data row 2: class" in err and "1..7" in err
    code, err = _exit_code(["prepare", "kc_house"], capsys)
    assert code == 2 and "needs --raw FILE (or --download)" in err
    assert not (Path("prepared") / "kc_house").exists()


# ----------------------------------------------------------------------------- generic kinds


def test_csv_labels_positive_multiclass_and_standardize(tmp_path):
    raw = FIXTURES / "small.csv"
    rows = _rows(raw)
    src = _prepare("csv", tmp_path, "a", raw=str(raw), label="outcome", drop=["id"])
    X, y = _all(src)
    assert src.n_cols == 3 and src.task == "binary"
    want = {(round(float(r[1]), 5), 1.0 if r[4] == "yes" else -1.0) for r in rows}
    assert {(round(x[0], 5), v) for x, v in zip(X, y, strict=True)} == want
    flipped = _prepare("csv", tmp_path, "b", raw=str(raw), label="outcome", drop=["id"],
                       positive="no")
    np.testing.assert_array_equal(_all(flipped)[1], -y)
    multi = _prepare("csv", tmp_path, "c", raw=str(raw), label="outcome", task="multiclass")
    assert multi.n_cols == 4 and multi.n_classes == 2 and set(_all(multi)[1]) == {0.0, 1.0}
    whole = _prepare("csv", tmp_path, "d", raw=str(raw), label="outcome", test_fraction=0.0,
                     standardize=True)
    Xw, _ = whole.train_rows(0, whole.n_train)
    assert whole.n_test == 0 and whole.n_train == len(rows)
    np.testing.assert_allclose(Xw.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Xw.std(axis=0), 1.0)


def test_more_than_two_classes_under_a_binary_model(tmp_path, capsys):
    raw = tmp_path / "three.csv"
    raw.write_text("a,b,kind\n1,2,x\n3,4,y\n5,6,z\n7,8,x\n")
    code, err = _exit_code(["prepare", "csv", "--raw", str(raw), "--label", "kind",
                            "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "3 classes (x, y, z)" in err and "--positive LABEL" in err
    assert not (tmp_path / "o").exists()
    src = _prepare("csv", tmp_path, "ovr", raw=str(raw), label="kind", positive="x",
                   test_fraction=0.0)
    np.testing.assert_array_equal(np.sort(_all(src)[1]), [-1, -1, 1, 1])
    code, err = _exit_code(["prepare", "csv", "--raw", str(raw), "--label", "kind",
                            "--positive", "w", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--positive 'w' is not one of the labels" in err


def test_svmlight_matches_scikit_learn_dump(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(3)
    X = sp.random(50, 12, density=0.25, format="csr", random_state=rng)
    y = np.where(rng.random(50) < 0.4, 1, -1)
    dump_svmlight_file(X, y, str(tmp_path / "d.svm"), zero_based=False)
    src = _prepare("svmlight", tmp_path, raw=str(tmp_path / "d.svm"), test_fraction=0.0, seed=1)
    Xp, yp = src.train_rows(0, 50)
    order = np.random.default_rng([1, 0x5B117]).permutation(50)  # the documented split
    np.testing.assert_allclose(Xp.toarray(), X.toarray()[order][:, : Xp.shape[1]])
    np.testing.assert_array_equal(yp, y[order])
    scaled = _prepare("svmlight", tmp_path, "sc", raw=str(tmp_path / "d.svm"), test_fraction=0.0,
                      standardize=True)
    Xs = scaled.train_rows(0, 50)[0]
    assert sp.issparse(Xs) and Xs.nnz == X.nnz  # scaled, not centred: zeros stay zeros
    np.testing.assert_allclose(Xs.toarray().std(axis=0), 1.0)
    assert json.loads((scaled.path / "meta.json").read_text())["standardized"] == "scale"
    fixture = _prepare("svmlight", tmp_path, "fx", raw=str(FIXTURES / "small.svm"))
    assert fixture.n_cols == 8 and fixture.n_train + fixture.n_test == 24
    dump_svmlight_file(X, y, str(tmp_path / "z.svm"), zero_based=True)
    zero = _prepare("svmlight", tmp_path, "z", raw=str(tmp_path / "z.svm"), zero_based=True,
                    test_fraction=0.0, seed=1)
    np.testing.assert_allclose(zero.train_rows(0, 50)[0].toarray(), X.toarray()[order][:, :zero.n_cols])


def test_npz_dense_csr_and_text_labels(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 4))
    np.savez(tmp_path / "d.npz", X=X, y=np.array(["cat", "dog"] * 10))
    dense = _prepare("npz", tmp_path, "d", raw=str(tmp_path / "d.npz"), positive="cat",
                     test_fraction=0.0)
    assert dense.storage == "dense" and dense.n_cols == 4
    Xs = sp.csr_matrix(np.where(X > 0, X, 0))
    np.savez(tmp_path / "s.npz", data=Xs.data, indices=Xs.indices, indptr=Xs.indptr,
             shape=np.array(Xs.shape), format="csr", y=np.arange(20) % 3, allow_pickle=False)
    sparse = _prepare("npz", tmp_path, "s", raw=str(tmp_path / "s.npz"), task="multiclass",
                      test_fraction=0.0)
    assert sparse.storage == "csr" and sparse.n_classes == 3
    order = np.random.default_rng([0, 0x5B117]).permutation(20)
    np.testing.assert_array_equal(sparse.train_rows(0, 20)[0].toarray(), Xs.toarray()[order])


def test_bundled_sets_in_process_equal_their_prepared_directories(tmp_path):
    for name, task in (("wine", "multiclass"), ("diabetes", "regression"),
                       ("breast_cancer", "binary")):
        src = _prepare("sklearn", tmp_path, name, name=name, standardize=True, seed=9)
        live = open_dataset(f"sklearn:{name}", seed=9, test_fraction=0.2)
        assert src.task == live.task == task
        np.testing.assert_array_equal(src.train_rows(0, src.n_train)[0],
                                      live.train_rows(0, live.n_train)[0])
        np.testing.assert_array_equal(src.test_set()[1], live.test_set()[1])
    digits = open_dataset("sklearn:digits", seed=0, test_fraction=0.0)
    assert digits.task == "multiclass" and digits.n_classes == 10 and digits.n_train == 1797
    binary = open_dataset("sklearn:digits", seed=0, test_fraction=0.0, task="binary")
    assert binary.task == "binary"
    np.testing.assert_array_equal(binary.train_rows(0, 1797)[1],
                                  np.where(digits.train_rows(0, 1797)[1] < 5, 1.0, -1.0))
    iris = _prepare("sklearn", tmp_path, "iris", name="iris", task="binary", test_fraction=0.0)
    assert np.sum(iris.train_rows(0, 150)[1] == 1) == 50  # setosa against the rest
    wine2 = _prepare("sklearn", tmp_path, "wine2", name="wine", positive="2", test_fraction=0.0)
    assert wine2.task == "binary" and np.sum(wine2.train_rows(0, 178)[1] == 1) == 48
    with pytest.raises(ConfigError, match="regression dataset"):
        open_dataset("sklearn:diabetes", task="binary")


@pytest.mark.parametrize("name", ["iris", "diabetes", "digits"])
def test_a_bundled_set_from_the_cache_is_the_one_scikit_learn_loads(tmp_path, monkeypatch, name):
    import subprocess
    import sys

    import sklearn.datasets

    from gdcode.data import bundled

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first, _ = bundled.load_table(name)
    path = bundled.cache_path(name)
    assert path is not None and path.parent == tmp_path / "gdcode" and path.exists()
    again, task = bundled.load_table(name)
    bunch = getattr(sklearn.datasets, bundled.BUNDLED[name][0])()
    for table in (first, again):
        np.testing.assert_array_equal(table.X, bunch.data)
        np.testing.assert_array_equal(table.labels, bunch.target)
        assert table.feature_names == [str(f) for f in bunch.feature_names]
    assert task == bundled.BUNDLED[name][1]
    # what the ranks gain: a process that finds the cache never imports scikit-learn, nor scipy
    probe = ("import sys; from gdcode.data import open_dataset; "
             f"open_dataset('sklearn:{name}', seed=1); print('sklearn' in sys.modules, 'scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert out.stdout.split()[0] == "False", out.stderr
    assert out.stdout.split()[1] == "False", out.stderr


def test_a_broken_or_unwritable_bundled_cache_is_passed_over(tmp_path, monkeypatch):
    from gdcode.data import bundled

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    reference, _ = bundled.load_table("wine")
    path = bundled.cache_path("wine")
    path.write_bytes(b"not an npz")
    table, _ = bundled.load_table("wine")  # loaded through scikit-learn, and the cache rewritten
    np.testing.assert_array_equal(table.X, reference.X)
    assert np.load(path)["X"].shape == reference.X.shape
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # its gdcode/ cannot be made
    table, _ = bundled.load_table("wine")
    np.testing.assert_array_equal(table.X, reference.X)
    assert not list(tmp_path.glob("**/*.tmp"))


# ----------------------------------------------------------------------------- malformed input


CSV_CASES = [
    ("x,y,label\n1,2,a\n3,4\n", ["--label", "label"], "line 3: 2 fields, but the header has 3"),
    ("x,y,label\n1,2,a\n3,oops,b\n", ["--label", "label"], "line 3, column 'y': 'oops' is not a number"),
    ("x,y,label\n1,,a\n", ["--label", "label"], "line 2, column 'y': empty field"),
    ("x,y,label\n1,2,a\n", ["--label", "target"], "no label column 'target'"),
    ("x,y,label\n1,2,a\n", [], "--label COLUMN is required"),
    ("", ["--label", "label"], "is empty"),
    ("\nx,y,label\n1,2,a\n", ["--label", "label"], "line 1 is empty"),
    ("x,y,label\n", ["--label", "label"], "has a header but no data lines"),
    ("x,y,label\n1,2,3\n1,2,oops\n", ["--label", "label", "--task", "regression"],
     "line 3, column 'label': 'oops' is not a number"),
    ("x,y,label\n1,nan,3\n", ["--label", "label"], "line 2, column 'y': 'nan' is not a finite"),
]


@pytest.mark.parametrize("text, args, message", CSV_CASES)
def test_malformed_csv(tmp_path, capsys, text, args, message):
    raw = tmp_path / "bad.csv"
    raw.write_text(text)
    code, err = _exit_code(["prepare", "csv", "--raw", str(raw), "--out", str(tmp_path / "o"), *args],
                           capsys)
    assert code == 2 and str(raw) in err and message in err
    assert not (tmp_path / "o").exists()


SVM_CASES = [
    ("1 1:2\n-1 3:x\n", "line 2: the value of index 3 'x' is not a number"),
    ("1 1:2\nyes 3:1\n", "line 2: the label 'yes' is not a number"),
    ("1 1:2 junk\n", "line 1: 'junk' is not INDEX:VALUE"),
    ("1 1:2\n\n-1 4:1 2:1\n", "line 3: index 2 after index 4"),
    ("", "has no data lines"),
    ("# nothing here\n\n", "has no data lines"),
    ("1 1:inf\n", "line 1: the value of index 1 'inf' is not a finite number"),
]


@pytest.mark.parametrize("text, message", SVM_CASES)
def test_malformed_svmlight(tmp_path, capsys, text, message):
    raw = tmp_path / "bad.svm"
    raw.write_text(text)
    code, err = _exit_code(["prepare", "svmlight", "--raw", str(raw), "--out", str(tmp_path / "o")],
                           capsys)
    assert code == 2 and str(raw) in err and message in err


def test_malformed_npz(tmp_path, capsys):
    cases = {
        "text.npz": (lambda p: p.write_text("not an archive"), "is not a .npz archive"),
        "empty.npz": (lambda p: p.write_bytes(b""), "not a zip file of .npy arrays"),
        "noy.npz": (lambda p: np.savez(p, X=np.ones((3, 2))), "has no array 'y'"),
        "short.npz": (lambda p: np.savez(p, X=np.ones((3, 2)), y=np.ones(2)), "'y' has shape (2,)"),
        "flat.npz": (lambda p: np.savez(p, X=np.ones(3), y=np.ones(3)), "must be 2-D"),
        "obj.npz": (lambda p: np.savez(p, X=np.ones((2, 2)), y=np.array([None, 1], dtype=object)),
                    "cannot be read without pickle"),
        "ptr.npz": (lambda p: np.savez(p, data=np.ones(2), indices=np.array([0, 1]),
                                       indptr=np.array([0, 3]), shape=np.array([1, 2]),
                                       y=np.ones(1)), "'indptr' (length 2) does not describe"),
        "single.npy": (lambda p: np.save(p, np.ones(3)), "is a single .npy array"),
    }
    for name, (make, message) in cases.items():
        raw = tmp_path / name
        make(raw)
        raw = raw if raw.exists() else raw.with_suffix(raw.suffix + ".npz")
        code, err = _exit_code(["prepare", "npz", "--raw", str(raw), "--out", str(tmp_path / "o")],
                               capsys)
        assert code == 2 and str(raw) in err and message in err, (name, err)


@pytest.mark.parametrize("kind", ["csv", "svmlight", "npz", "covtype"])
def test_unreadable_raw_paths(tmp_path, capsys, kind):
    extra = ["--label", "y"] if kind == "csv" else []
    code, err = _exit_code(["prepare", kind, "--raw", str(tmp_path / "missing.txt"), *extra], capsys)
    assert code == 2 and "missing.txt" in err and "no such file" in err.lower()
    code, err = _exit_code(["prepare", kind, "--raw", str(tmp_path), *extra], capsys)
    assert code == 2 and "is a directory" in err
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.txt"
        locked.write_text("1 1:1\n")
        locked.chmod(0)
        code, err = _exit_code(["prepare", kind, "--raw", str(locked), *extra], capsys)
        assert code == 2 and "permission denied" in err.lower()


def test_gzip_raw_file(tmp_path):
    import gzip

    raw = tmp_path / "small.csv.gz"
    raw.write_bytes(gzip.compress((FIXTURES / "small.csv").read_bytes()))
    a = _prepare("csv", tmp_path, "gz", raw=str(raw), label="outcome")
    b = _prepare("csv", tmp_path, "plain", raw=str(FIXTURES / "small.csv"), label="outcome")
    np.testing.assert_array_equal(a.train_rows(0, a.n_train)[0], b.train_rows(0, b.n_train)[0])


# ----------------------------------------------------------------------------- options, output


def test_options_that_do_not_apply_and_output_safety(tmp_path, capsys):
    raw = str(FIXTURES / "amazon_train.csv")
    code, err = _exit_code(["prepare", "amazon", "--raw", raw, "--label", "x"], capsys)
    assert code == 2 and "--label does not apply to `gdcode prepare amazon`" in err
    code, err = _exit_code(["prepare", "synthetic", "--rows", "10", "--cols", "2", "--standardize"],
                           capsys)
    assert code == 2 and "--standardize does not apply" in err
    code, err = _exit_code(["prepare", "synthetic", "--rows", "10", "--cols", "2", "--sparse"], capsys)
    assert code == 2 and "--nnz-per-row K or --density P" in err
    code, err = _exit_code(["prepare", "imagenet"], capsys)
    assert code == 2 and "unknown KIND 'imagenet'" in err
    code, err = _exit_code(["prepare", "csv", "--raw", raw, "--label", "ACTION",
                            "--test-fraction", "1"], capsys)
    assert code == 2 and "--test-fraction 1.0 must be in [0, 1)" in err
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    code, err = _exit_code(["prepare", "amazon", "--raw", raw, "--out", str(keep)], capsys)
    assert code == 2 and "not a prepared dataset directory" in err
    assert (keep / "notes.txt").read_text() == "precious"
    out = str(tmp_path / "am")
    assert cli.main(["prepare", "amazon", "--raw", raw, "--out", out]) == 0
    code, err = _exit_code(["prepare", "amazon", "--raw", raw, "--out", out, "--seed", "1"], capsys)
    assert code == 2 and "pass --force" in err
    assert cli.main(["prepare", "amazon", "--raw", raw, "--out", out, "--seed", "1", "--force"]) == 0
    assert json.loads((Path(out) / "meta.json").read_text())["split"]["seed"] == 1
    assert not list(tmp_path.glob(".*partial*"))


def test_download_without_network(tmp_path, capsys):
    for kind in ("amazon", "kc_house"):
        with pytest.raises(ConfigError, match="Kaggle, which needs an account"):
            download.fetch(kind, tmp_path / "x.csv")

    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(ConfigError, match="may be offline.*--raw FILE"):
        download.fetch("covtype", tmp_path / "cov.gz", opener=offline)
    assert not list(tmp_path.iterdir())
    (tmp_path / "cov.gz").write_bytes(b"already here")
    assert download.fetch("covtype", tmp_path / "cov.gz", opener=offline) == tmp_path / "cov.gz"


@pytest.mark.parametrize("seed,fraction", [(0, 0.2), (3, 0.25)])
def test_prepared_sklearn_digits_holds_what_the_dataset_spec_gives(tmp_path, capsys, seed, fraction):
    out = tmp_path / "digits"
    code, err = _exit_code(["prepare", "sklearn", "--name", "digits", "--seed", str(seed), "--test-fraction",
                            str(fraction), "--out", str(out)], capsys)
    assert code == 0, err
    prepared = PreparedSource(out)
    live = open_dataset("sklearn:digits", seed=seed, test_fraction=fraction)
    assert (prepared.n_train, prepared.n_test, prepared.n_cols) == (live.n_train, live.n_test, live.n_cols)
    for a, b in zip(prepared.train_rows(0, prepared.n_train), live.train_rows(0, live.n_train), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(prepared.test_set(), live.test_set(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.loads((out / "meta.json").read_text())["standardized"] == "center-scale"
    raw = _prepare("sklearn", tmp_path, "raw", name="digits", standardize=False, seed=seed, test_fraction=fraction)
    assert raw.train_rows(0, raw.n_train)[0].max() == 16.0  # the pixel counts, as scikit-learn gives them
    code, _ = _exit_code(["prepare", "sklearn", "--name", "digits", "--no-standardize", "--out",
                          str(tmp_path / "raw2")], capsys)
    assert code == 0 and json.loads((tmp_path / "raw2" / "meta.json").read_text())["standardized"] is None


def test_svmlight_zero_based_is_detected(tmp_path, capsys):
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 6))  # dense: column 0 has values, so index 0 appears
    y = np.where(rng.random(30) < 0.5, 1, -1)
    dump_svmlight_file(X, y, str(tmp_path / "z.svm"), zero_based=True)
    dump_svmlight_file(X, y, str(tmp_path / "o.svm"), zero_based=False)
    order = np.random.default_rng([0, 0x5B117]).permutation(30)
    for name in ("z", "o"):
        code, err = _exit_code(["prepare", "svmlight", "--raw", str(tmp_path / f"{name}.svm"), "--test-fraction",
                                "0", "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
        src = PreparedSource(tmp_path / name)
        assert src.n_cols == 6
        np.testing.assert_allclose(src.train_rows(0, 30)[0].toarray(), X[order])
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        assert meta["source"]["zero_based"] is (name == "z")
    # told: yes reads a one-based file with an empty column 0; no refuses index 0, naming the line
    code, _ = _exit_code(["prepare", "svmlight", "--raw", str(tmp_path / "o.svm"), "--zero-based",
                          "--test-fraction", "0", "--out", str(tmp_path / "oy")], capsys)
    assert code == 0 and PreparedSource(tmp_path / "oy").n_cols == 7
    code, err = _exit_code(["prepare", "svmlight", "--raw", str(tmp_path / "z.svm"), "--zero-based", "no",
                            "--out", str(tmp_path / "zn")], capsys)
    assert code == 2 and "line 1" in err and not (tmp_path / "zn").exists()
