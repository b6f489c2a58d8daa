"""KID and precision/recall/density/coverage on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.errors import ConfigError, InputError
from defectforge.filter.quality import kid, prdc


def test_kid_same_distribution_near_zero_shifted_larger():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    c = rng.normal(loc=0.7, size=(300, 16))
    same, shifted = kid(a, b, subsets=20, subset_size=100), kid(a, c, subsets=20, subset_size=100)
    assert abs(same["kid_mean"]) < 0.02
    assert shifted["kid_mean"] > 10 * max(abs(same["kid_mean"]), 1e-3)
    assert same["subset_size"] == 100


def test_kid_unbiased_matches_direct_formula():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.3
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m = 6
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    got = kid(x, y, subsets=3, subset_size=6)  # subsets of all rows: every subset is the full set
    assert got["kid_mean"] == pytest.approx(sxx + syy - 2 * sxy, rel=1e-9)
    assert got["kid_std"] == pytest.approx(0.0, abs=1e-12)


def test_prdc_identical_and_disjoint():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(60, 5))
    same = prdc(a, a.copy(), k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc(a, a + 100.0, k=3)
    assert far["precision"] == far["recall"] == far["coverage"] == far["density"] == 0.0
    half = prdc(a, np.concatenate([a[:30], a[30:] + 100.0]), k=3)
    assert 0.4 <= half["precision"] <= 0.6


def test_quality_bad_input():
    with pytest.raises(InputError, match="feature sizes differ"):
        kid(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(InputError, match="at least 2"):
        kid(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="k must be"):
        prdc(np.zeros((4, 3)), np.zeros((4, 3)), k=4)
    with pytest.raises(InputError, match="NaN"):
        prdc(np.full((4, 3), np.nan), np.zeros((4, 3)))
