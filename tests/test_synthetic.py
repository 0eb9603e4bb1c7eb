"""The synthetic Gaussian-mixture generator."""

import numpy as np
import pytest

from gdcode.data import SyntheticSource, open_dataset, parse_dataset_spec
from gdcode.data.synthetic import BLOCK, generate, true_beta
from gdcode.errors import ConfigError


def test_shapes_and_split():
    src = SyntheticSource(1000, 17, seed=3, test_fraction=0.2)
    X, y = src.train_set()
    Xt, yt = src.test_set()
    assert X.shape == (800, 17) and y.shape == (800,)
    assert Xt.shape == (200, 17) and yt.shape == (200,)
    assert set(np.unique(y)) <= {-1.0, 1.0}
    assert SyntheticSource(1000, 17, test_fraction=0.0).n_test == 0


def test_reproducible_from_seed_and_different_across_seeds():
    a = generate(0, 500, 10, seed=1)
    b = generate(0, 500, 10, seed=1)
    c = generate(0, 500, 10, seed=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_any_row_range_equals_the_same_rows_of_the_whole():
    X, y = generate(0, 3 * BLOCK + 17, 8, seed=5)
    for lo, hi in [(0, 1), (BLOCK - 3, BLOCK + 4), (1500, 2 * BLOCK + 900), (3 * BLOCK, 3 * BLOCK + 17)]:
        Xs, ys = generate(lo, hi, 8, seed=5)
        assert np.array_equal(Xs, X[lo:hi]) and np.array_equal(ys, y[lo:hi])


def test_mixture_structure_and_label_balance():
    cols = 50
    X, y = generate(0, 20000, cols, seed=0)
    beta = true_beta(cols, 0)
    assert set(np.unique(beta)) == {-1.0, 1.0}
    # noise (10/sqrt(d)) N(0, 1) per coordinate dominates the mean of size 1.5/d
    assert np.std(X) == pytest.approx(10 / np.sqrt(cols), rel=0.02)
    # labels follow sigmoid(x.beta): balanced classes, and mostly agreeing with sign(x.beta)
    assert abs(np.mean(y > 0) - 0.5) < 0.02
    assert np.mean(np.sign(X @ beta) == y) > 0.8


@pytest.mark.parametrize("spec", ["synthetic:10", "synthetic:axb", "synthetic:0x3", "nope", "synthetic:5x0"])
def test_bad_specs_raise_config_error(spec):
    with pytest.raises(ConfigError):
        parse_dataset_spec(spec)


def test_open_dataset_too_few_training_rows():
    with pytest.raises(ConfigError, match="no training rows"):
        open_dataset("synthetic:1x3", test_fraction=0.9)
