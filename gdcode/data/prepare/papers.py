"""The datasets of the gradient-coding papers, from their raw files.

``amazon``
    Amazon Employee Access (Kaggle, ``train.csv``): label ``ACTION`` (1 approved -> +1,
    0 -> -1); features: one-hot of the nine categorical columns and of their pairs, leaving out
    the pairs (ROLE_ROLLUP_1, ROLE_ROLLUP_2) and (ROLE_TITLE, ROLE_FAMILY) -- the encoding of
    the ErasureHead experiments (Wang et al., 2019), which cite the Kaggle winners' features.
``covtype``
    UCI Forest Covertype (``covtype.data``, 54 features and the class 1..7 per line): rows of
    class 1 and 2 only (2 -> +1, 1 -> -1, as in ErasureHead); each of the 10 numeric columns
    binned and one-hot (``bins=0``: one bin per distinct value, ErasureHead's encoding;
    ``bins=N``: N quantile bins), the 44 indicator columns (wilderness area, soil type) kept.
``kc_house``
    King County house sales (Kaggle, ``kc_house_data.csv``): least-squares target
    ``price / 1e6``; one-hot of zipcode, year built, year renovated, bedrooms, bathrooms,
    floors, waterfront, view, condition and grade; the eight area and location columns
    standardised. ``one_hot_all`` one-hot encodes every column instead, as ErasureHead did.

Category lists, bin edges and the kc_house scaling come from all rows (they use no labels),
so training and held-out rows share one encoding.
"""

from __future__ import annotations

import itertools
import os

import numpy as np

from gdcode.data.prepare.common import Table, numeric_labels, one_hot, quantile_bins
from gdcode.data.prepare.readers import read_csv
from gdcode.errors import ConfigError

AMAZON_COLUMNS = ("RESOURCE", "MGR_ID", "ROLE_ROLLUP_1", "ROLE_ROLLUP_2", "ROLE_DEPTNAME",
                  "ROLE_TITLE", "ROLE_FAMILY_DESC", "ROLE_FAMILY", "ROLE_CODE")
AMAZON_SKIPPED_PAIRS = (("ROLE_ROLLUP_1", "ROLE_ROLLUP_2"), ("ROLE_TITLE", "ROLE_FAMILY"))

COVTYPE_NUMERIC = ("Elevation", "Aspect", "Slope", "Horizontal_Distance_To_Hydrology",
                   "Vertical_Distance_To_Hydrology", "Horizontal_Distance_To_Roadways",
                   "Hillshade_9am", "Hillshade_Noon", "Hillshade_3pm",
                   "Horizontal_Distance_To_Fire_Points")
COVTYPE_INDICATORS = tuple([f"Wilderness_Area{i}" for i in range(1, 5)]
                           + [f"Soil_Type{i}" for i in range(1, 41)])

KC_CATEGORICAL = ("bedrooms", "bathrooms", "floors", "waterfront", "view", "condition", "grade",
                  "yr_built", "yr_renovated", "zipcode")
KC_NUMERIC = ("sqft_living", "sqft_lot", "sqft_above", "sqft_basement", "lat", "long",
              "sqft_living15", "sqft_lot15")
KC_DROPPED = ("id", "date")


def _require_columns(table: Table, wanted, raw) -> dict[str, int]:
    names = table.feature_names or []
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ConfigError(f"{raw} lacks the column(s) {', '.join(missing)}; is it the right raw "
                          "file?")
    return {n: j for j, n in enumerate(names)}


def amazon(raw: str | os.PathLike) -> Table:
    """Amazon Employee Access ``train.csv`` -> one-hot of the columns and their pairs (CSR)."""
    table = read_csv(raw, "ACTION", option="ACTION (the amazon label)")
    col = _require_columns(table, AMAZON_COLUMNS, raw)
    labels = _numbers(table, "ACTION")
    if not np.isin(labels, (0.0, 1.0)).all():
        row = int(np.flatnonzero(~np.isin(labels, (0.0, 1.0)))[0])
        raise ConfigError(f"{raw} data row {row + 1}: ACTION is {table.labels[row]!r}; it must "
                          "be 0 or 1")
    cols = [table.X[:, col[c]].astype(np.int64) for c in AMAZON_COLUMNS]
    names = list(AMAZON_COLUMNS)
    formats: list = [None] * len(cols)
    skipped = {frozenset(p) for p in AMAZON_SKIPPED_PAIRS}
    for (a, ca), (b, cb) in itertools.combinations(zip(AMAZON_COLUMNS, cols, strict=True), 2):
        if frozenset((a, b)) in skipped:
            continue
        # a pair's value is the pair of values, folded into one integer
        ua, ia = np.unique(ca, return_inverse=True)
        ub, ib = np.unique(cb, return_inverse=True)
        cols.append(ia.ravel().astype(np.int64) * ub.size + ib.ravel())
        names.append(f"{a}*{b}")
        formats.append(lambda code, ua=ua, ub=ub: f"{ua[code // ub.size]}|{ub[code % ub.size]}")
    X, feature_names = one_hot(cols, names, formats)
    return Table(X=X, labels=labels, origin=table.origin, feature_names=feature_names)


def covtype(raw: str | os.PathLike, bins: int = 0) -> Table:
    """UCI ``covtype.data`` -> classes 1 and 2, numeric columns binned and one-hot (CSR)."""
    import scipy.sparse as sp

    if bins < 0 or bins == 1:
        raise ConfigError(f"--bins {bins}: give 0 (one bin per distinct value) or at least 2")
    table = read_csv(raw, -1, header=False, option="the class column (the last)")
    if table.X.shape[1] != 54:
        raise ConfigError(f"{raw} has {table.X.shape[1] + 1} columns per line; covtype.data has 55 "
                          "(54 features and the class)")
    labels = _numbers(table, "the class")
    bad = ~np.isin(labels, np.arange(1, 8))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"{raw} data row {row + 1}: class {table.labels[row]!r} is not one of 1..7")
    keep = np.flatnonzero((labels == 1) | (labels == 2))
    if keep.size == 0:
        raise ConfigError(f"{raw} has no rows of class 1 or 2")
    X = table.X[keep]
    numeric = [X[:, j] if bins == 0 else quantile_bins(X[:, j], bins) for j in range(10)]
    Xn, names = one_hot(numeric, list(COVTYPE_NUMERIC))
    indicators = X[:, 10:54]
    if not np.isin(indicators, (0.0, 1.0)).all():
        row = int(keep[np.flatnonzero(~np.isin(indicators, (0.0, 1.0)).all(axis=1))[0]])
        raise ConfigError(f"{raw} data row {row + 1}: the wilderness and soil columns (11-54) must "
                          "be 0 or 1")
    Xi = sp.csr_matrix(indicators)
    X_all = sp.hstack([Xn, Xi], format="csr")
    return Table(X=X_all, labels=labels[keep], origin=table.origin,
                 feature_names=names + list(COVTYPE_INDICATORS))


def kc_house(raw: str | os.PathLike, one_hot_all: bool = False) -> Table:
    """``kc_house_data.csv`` -> price/1e6; one-hot categorical, standardised numeric (CSR)."""
    import scipy.sparse as sp

    table = read_csv(raw, "price", drop=KC_DROPPED, label_numeric=True,
                     option="price (the kc_house target)")
    col = _require_columns(table, KC_CATEGORICAL + KC_NUMERIC, raw)
    categorical = list(KC_CATEGORICAL + KC_NUMERIC) if one_hot_all else list(KC_CATEGORICAL)
    Xc, names = one_hot([table.X[:, col[c]] for c in categorical], categorical)
    parts, all_names = [Xc], names
    if not one_hot_all:
        num = table.X[:, [col[c] for c in KC_NUMERIC]]
        sd = num.std(axis=0)
        sd[sd == 0] = 1.0
        parts.append(sp.csr_matrix((num - num.mean(axis=0)) / sd))
        all_names = names + list(KC_NUMERIC)
    price = _numbers(table, "price")
    return Table(X=sp.hstack(parts, format="csr"), labels=price / 1e6, origin=table.origin,
                 feature_names=all_names)


def _numbers(table: Table, column: str) -> np.ndarray:
    values = numeric_labels(table.labels)
    if values is None:
        bad = next(v for v in table.labels if numeric_labels(np.array([v])) is None)
        raise ConfigError(f"{table.origin}: {column} {bad!r} is not a number")
    return values
