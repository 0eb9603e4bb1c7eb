"""``gdcode run --dataset DIR`` and ``sklearn:NAME`` end to end (launches mpiexec)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gdcode.data.prepare import PrepareOptions, prepare

pytestmark = pytest.mark.mpi


def test_csr_and_dense_directories_of_the_same_data_train_alike(tmp_path, train):
    rng = np.random.default_rng(11)
    X = np.where(rng.random((600, 30)) < 0.2, rng.normal(size=(600, 30)), 0.0)
    y = np.where(X @ rng.normal(size=30) + 0.3 * rng.normal(size=600) > 0, 1, 0)
    np.savez(tmp_path / "dense.npz", X=X, y=y)
    S = sp.csr_matrix(X)
    np.savez(tmp_path / "csr.npz", data=S.data, indices=S.indices, indptr=S.indptr,
             shape=np.array(S.shape), y=y)
    for name in ("dense", "csr"):
        prepare("npz", PrepareOptions(raw=str(tmp_path / f"{name}.npz"), out=str(tmp_path / name),
                                      seed=4, test_fraction=0.25))
    runs = {name: train(3, "--dataset", str(tmp_path / name), "--iterations", "6", name=f"r-{name}")
            for name in ("dense", "csr")}
    assert runs["csr"].metadata["dataset"]["storage"] == "csr"
    assert runs["dense"].metadata["dataset"]["rows_train"] == 450
    for a, b in zip(runs["dense"].metrics, runs["csr"].metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-10)
    assert runs["csr"].metrics[-1]["train_loss"] < runs["csr"].metrics[0]["train_loss"]


def test_bundled_sets_train(tmp_path, train):
    run = train(2, "--dataset", "sklearn:breast_cancer", "--iterations", "15", name="bc")
    assert run.summary["status"] == "ok" and run.summary["test_accuracy"] > 0.9
    assert run.metadata["dataset"]["rows_train"] == 455
    ls = train(2, "--dataset", "sklearn:diabetes", "--model", "least-squares", "--lr", "0.1",
               "--iterations", "5", name="diabetes")
    assert ls.metrics[-1]["train_loss"] < ls.metrics[0]["train_loss"] and "test_rmse" in ls.summary
