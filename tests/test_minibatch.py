"""Minibatches in coded mode: every worker holding a partition takes the same rows of it."""

from __future__ import annotations

import numpy as np
import pytest

from gdcode import problem
from gdcode.options import RunOptions


def test_batches_are_the_same_fraction_of_every_partition_and_pure_functions_of_the_iteration():
    built = problem.build(RunOptions(scheme="frc", workers=4, stragglers=1, dataset="synthetic:1003x5",
                                     test_fraction=0.0, batch_size=100))
    sizes = built.batch_sizes()
    parts = np.diff(built.partition_bounds())
    np.testing.assert_allclose(sizes / parts, 100 / 1003, atol=1 / parts.min())
    assert built.rows_per_iteration == sizes.sum()
    a, b = built.batch_rows(1, 7), built.batch_rows(1, 7)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0) and a.size == sizes[1]
    assert not np.array_equal(a, built.batch_rows(1, 8))
    assert built.code.partition_sizes.tolist() == sizes.tolist()  # ignore's weights follow the batch


def test_bounds_and_batch_sizes_are_computed_once_and_read_only():
    built = problem.build(RunOptions(scheme="frc", workers=4, stragglers=1, dataset="synthetic:1003x5",
                                     test_fraction=0.0, batch_size=100))
    assert built.partition_bounds() is built.partition_bounds() and built.batch_sizes() is built.batch_sizes()
    for arr in (built.partition_bounds(), built.batch_sizes()):
        with pytest.raises(ValueError):
            arr[0] = 1
    key = [built.options.seed, 0xBA7C4, 2, 5, 3]  # batch_rows' documented stream
    expected = np.sort(np.random.default_rng(key).choice(int(np.diff(built.partition_bounds())[2]),
                                                         size=int(built.batch_sizes()[2]), replace=False))
    assert np.array_equal(built.batch_rows(2, 5, 3), expected)


def test_no_batch_means_every_row():
    built = problem.build(RunOptions(dataset="synthetic:400x5", batch_size=0))
    assert built.batch_sizes() is None and built.rows_per_iteration == built.n_train


@pytest.mark.mpi
def test_exact_codes_decode_exactly_the_minibatch_gradient(train):
    common = ("--dataset", "synthetic:1200x20", "--iterations", "12", "--batch-size", "128",
              "--update", "nesterov", "--momentum", "0.9", "--lr", "0.2", "--delay", "exp:0.002")
    base = train(4, *common, "--scheme", "uncoded", name="uncoded")
    for scheme in ("frc", "cyclic-mds"):
        run = train(4, *common, "--scheme", scheme, "--stragglers", "1", name=scheme)
        np.testing.assert_allclose(run.column("train_loss"), base.column("train_loss"), rtol=1e-9)
        np.testing.assert_allclose(run.model, base.model, rtol=1e-9, atol=1e-12)
    full = train(4, *common[:4], "--iterations", "12", "--update", "nesterov", "--lr", "0.2", name="full")
    assert not np.allclose(full.column("train_loss"), base.column("train_loss"))
