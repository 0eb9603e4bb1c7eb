"""Partitioning rows and a worker's share (pure functions of rows, partitions and code)."""

import numpy as np
import pytest
import scipy.sparse as sp

from gdcode.data import partition_bounds, partition_sizes, stack_rows, worker_rows


@pytest.mark.parametrize("n, k", [(10, 3), (12, 4), (7, 7), (1000, 6)])
def test_bounds_cover_rows_near_equally(n, k):
    b = partition_bounds(n, k)
    assert b[0] == 0 and b[-1] == n and len(b) == k + 1
    sizes = partition_sizes(n, k)
    assert sizes.max() - sizes.min() <= 1 and np.all(np.diff(sizes) <= 0)


def test_too_few_rows():
    with pytest.raises(ValueError, match="cannot fill"):
        partition_bounds(3, 4)


def test_worker_rows_and_coefficients():
    b = partition_bounds(10, 4)  # sizes 3, 3, 2, 2
    ranges, coef = worker_rows(b, np.array([0.0, 2.0, 0.0, -1.0]))
    assert ranges == [(3, 6), (8, 10)]
    assert coef.tolist() == [2.0, 2.0, 2.0, -1.0, -1.0]


def test_stack_rows_dense_and_sparse():
    X1, X2 = np.ones((2, 3)), np.zeros((1, 3))
    X, y = stack_rows([(X1, np.ones(2)), (X2, np.zeros(1))])
    assert X.shape == (3, 3) and X.flags.c_contiguous and y.tolist() == [1, 1, 0]
    S, _ = stack_rows([(sp.csr_matrix(X1), np.ones(2)), (sp.csr_matrix(X2), np.zeros(1))])
    assert sp.issparse(S) and S.format == "csr" and S.shape == (3, 3)
