"""Image-level and pixel-level anomaly metrics against scikit-learn, plus edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from defectforge.errors import ConfigError, DefectforgeError, InputError
from defectforge.metrics import (
    ThresholdFallbackWarning,
    UndefinedMetricError,
    aupro,
    auroc,
    average_precision,
    evaluate_anomaly,
    f1_at,
    f1_max,
    pixel_ap,
    pixel_auroc,
    pr_curve,
    roc_curve,
    select_threshold,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def labelled_scores(draw, min_size: int = 2, max_size: int = 60, both: bool = True):
    """Labels with both classes and integer-valued scores from a small range (heavy ties)."""
    n = draw(st.integers(min_size, max_size))
    seed = draw(st.integers(0, 2**32 - 1))
    levels = draw(st.sampled_from([2, 3, 5, 20, 10_000]))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    if both:
        y[0], y[1] = 0, 1
        rng.shuffle(y)
    s = rng.integers(-levels // 2, levels - levels // 2, n).astype(np.float64)
    return y, s


# Strictly monotone maps that stay injective in float64 on integers in [-5000, 5000].
MONOTONE = [
    lambda x: 3.0 * x + 7.0,
    lambda x: x**3 - 5.0,
    lambda x: np.exp(x / 1000.0),
    lambda x: np.arctan(x / 1000.0),
]


# --------------------------------------------------------------------------- vs sklearn


@FAST
@given(labelled_scores())
def test_auroc_and_ap_match_sklearn(data):
    y, s = data
    assert auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


@FAST
@given(labelled_scores(), st.booleans())
def test_roc_curve_matches_sklearn(data, drop):
    y, s = data
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=drop)
    fpr_s, tpr_s, thr_s = skm.roc_curve(y, s, drop_intermediate=drop)
    np.testing.assert_allclose(fpr, fpr_s)
    np.testing.assert_allclose(tpr, tpr_s)
    np.testing.assert_array_equal(thr, thr_s)


@FAST
@given(labelled_scores())
def test_pr_curve_matches_sklearn(data):
    y, s = data
    p, r, t = pr_curve(y, s)
    p_s, r_s, t_s = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(p, p_s)
    np.testing.assert_allclose(r, r_s)
    np.testing.assert_array_equal(t, t_s)


@FAST
@given(labelled_scores())
def test_f1_max_is_max_of_f1_over_thresholds(data):
    y, s = data
    best, thr = f1_max(y, s)
    brute = max(skm.f1_score(y, s >= t) for t in np.unique(s))
    assert best == pytest.approx(brute, abs=1e-12)
    assert f1_at(y, s, thr) == pytest.approx(best, abs=1e-12)
    assert f1_at(y, s, thr) == pytest.approx(skm.f1_score(y, s >= thr), abs=1e-12)


def test_float32_scores_and_string_labels():
    rng = np.random.default_rng(3)
    s = rng.normal(size=300).astype(np.float32)
    y = rng.integers(0, 2, 300)
    names = np.where(y == 1, "pitting", "good")
    assert auroc(names, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(list(names), s) == pytest.approx(
        skm.average_precision_score(y, s), abs=1e-12)


def test_raw_scores_far_outside_unit_interval():
    # The anomalib bug: raw distances >> 1 squashed by a sigmoid all become 1.0 (AUROC 0.5).
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([40.0, 41.0, 42.0, 43.0, 44.0, 45.0])
    assert auroc(y, s) == 1.0
    assert average_precision(y, s) == 1.0


# --------------------------------------------------------------------------- invariance


@FAST
@given(labelled_scores(), st.sampled_from(range(len(MONOTONE))))
def test_image_metrics_invariant_under_monotone_transform(data, k):
    y, s = data
    t = MONOTONE[k](s)
    assert len(np.unique(t)) == len(np.unique(s))  # the transform kept every score distinct
    assert auroc(y, t) == pytest.approx(auroc(y, s), abs=1e-12)
    assert average_precision(y, t) == pytest.approx(average_precision(y, s), abs=1e-12)
    assert f1_max(y, t)[0] == pytest.approx(f1_max(y, s)[0], abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(range(len(MONOTONE))))
def test_pixel_metrics_invariant_under_monotone_transform(seed, k):
    rng = np.random.default_rng(seed)
    masks = [rng.random((6, 7)) > 0.7, None, rng.random((5, 9)) > 0.8]
    maps = [rng.integers(-50, 50, m.shape if m is not None else (4, 4)).astype(float)
            for m in masks]
    assume(any(m is not None and m.any() for m in masks))
    tmaps = [MONOTONE[k](a) for a in maps]
    assert pixel_auroc(masks, tmaps) == pytest.approx(pixel_auroc(masks, maps), abs=1e-12)
    assert pixel_ap(masks, tmaps) == pytest.approx(pixel_ap(masks, maps), abs=1e-12)
    assert aupro(masks, tmaps) == pytest.approx(aupro(masks, maps), abs=1e-12)


# --------------------------------------------------------------------------- extremes


def test_perfect_inverted_and_constant_scores():
    y = np.array([0, 0, 0, 0, 1, 1, 0, 1])
    perfect = y * 10.0 + np.arange(8) * 0.1
    assert auroc(y, perfect) == 1.0
    assert average_precision(y, perfect) == 1.0
    assert f1_max(y, perfect)[0] == 1.0
    inverted = -perfect
    assert auroc(y, inverted) == 0.0
    assert average_precision(y, inverted) == pytest.approx(
        skm.average_precision_score(y, inverted))
    # A constant detector: AUROC 1/2 and AP = positive rate (not 0.525 as a trapezoid gives).
    const = np.full(8, 3.0)
    assert auroc(y, const) == 0.5
    assert average_precision(y, const) == pytest.approx(y.mean())


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], []])
def test_single_class_auroc_is_undefined(labels):
    s = np.arange(len(labels), dtype=float)
    with pytest.raises(UndefinedMetricError, match="AUROC is undefined.*both classes"):
        auroc(labels, s)
    assert np.isnan(auroc(labels, s, nan_on_undefined=True))
    with pytest.raises(UndefinedMetricError):
        roc_curve(labels, s)


def test_all_normal_ap_f1_undefined_all_defect_ap_is_one():
    s = np.array([0.1, 0.5, 0.9])
    for fn in (average_precision, lambda y, s, **k: f1_max(y, s, **k)[0]):
        with pytest.raises(UndefinedMetricError, match="no defect"):
            fn([0, 0, 0], s)
        assert np.isnan(fn([0, 0, 0], s, nan_on_undefined=True))
    with pytest.raises(UndefinedMetricError, match="no defect"):
        f1_at([0, 0, 0], s, 0.5)
    # with only defects AP and F1-max are 1.0, as in sklearn
    assert average_precision([1, 1, 1], s) == 1.0
    assert f1_max([1, 1, 1], s)[0] == 1.0
    # UndefinedMetricError is both a defectforge error (CLI one-liner) and a ValueError
    assert issubclass(UndefinedMetricError, DefectforgeError)
    assert issubclass(UndefinedMetricError, ValueError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise_naming_the_problem(bad):
    s = np.array([0.1, 0.2, bad, 0.4])
    with pytest.raises(InputError, match=r"(NaN|infinite).*index 2"):
        auroc([0, 1, 0, 1], s)
    with pytest.raises(ValueError, match="finite"):
        average_precision([0, 1, 0, 1], s)
    maps = [np.zeros((3, 3)), np.zeros((3, 3))]
    maps[1][1, 2] = bad
    with pytest.raises(InputError, match=r"image 1: .*index \(1, 2\)"):
        pixel_auroc([np.eye(3, dtype=bool), None], maps)


def test_bad_labels_and_shapes_raise():
    with pytest.raises(InputError, match="0/1"):
        auroc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="3 values but labels has 2"):
        auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="mask shape"):
        pixel_auroc([np.zeros((3, 4), bool)], [np.zeros((3, 3))])
    with pytest.raises(InputError, match="0/1/255"):
        pixel_auroc([np.full((3, 3), 0.5)], [np.zeros((3, 3))])
    with pytest.raises(ConfigError, match="fpr_limit"):
        aupro([np.eye(3, dtype=bool)], [np.eye(3)], fpr_limit=0.0)


# --------------------------------------------------------------------------- pixel pooling


def test_pixel_metrics_pool_all_pixels_like_sklearn():
    rng = np.random.default_rng(7)
    shapes = [(9, 11), (5, 5), (12, 4)]
    masks = [rng.random(sh) > 0.75 for sh in shapes] + [None]
    maps = [rng.integers(0, 6, sh).astype(np.float32) for sh in shapes] + [rng.random((3, 3))]
    y = np.concatenate([m.ravel() for m in masks[:3]] + [np.zeros(9, bool)])
    s = np.concatenate([a.ravel().astype(np.float64) for a in maps])
    assert pixel_auroc(masks, maps) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert pixel_ap(masks, maps) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    # 0/255 uint8 masks (as PNGs decode) and an (N, H, W) stack give the same numbers
    stack_m = rng.random((4, 6, 6)) > 0.8
    stack_a = rng.random((4, 6, 6)).astype(np.float32)
    ref = pixel_auroc(list(stack_m), list(stack_a))
    assert pixel_auroc(stack_m, stack_a) == pytest.approx(ref, abs=1e-12)
    assert pixel_auroc((stack_m * 255).astype(np.uint8), stack_a) == pytest.approx(ref, abs=1e-12)


def test_pixel_metrics_undefined_without_defect_pixels():
    maps = [np.random.default_rng(0).random((4, 4)) for _ in range(2)]
    for fn in (pixel_auroc, pixel_ap, aupro):
        with pytest.raises(UndefinedMetricError, match="undefined"):
            fn([None, np.zeros((4, 4), bool)], maps)
        assert np.isnan(fn([None, None], maps, nan_on_undefined=True))
    full = [np.ones((4, 4), bool)] * 2
    for fn in (pixel_auroc, aupro):
        with pytest.raises(UndefinedMetricError, match="background"):
            fn(full, maps)


# --------------------------------------------------------------------------- thresholds


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(2, 80), st.sampled_from([0.9, 0.99, 1.0]))
def test_select_threshold_only_normals_never_the_minimum(seed, n, q):
    s = np.random.default_rng(seed).normal(size=n) * 100
    assume(np.unique(s).size > 1)
    with pytest.warns(ThresholdFallbackWarning, match="only normal.*quantile"):
        thr = select_threshold(np.zeros(n, int), s, method="f1", quantile=q)
    assert thr > s.min()
    assert thr == pytest.approx(np.quantile(s, q))
    # at most ~(1 - q) of the normals are flagged, never all of them
    assert np.mean(s >= thr) < 1.0


@FAST
@given(labelled_scores())
def test_select_threshold_f1_reproduces_f1_max_on_validation(data):
    y, s = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback with both classes present
        thr = select_threshold(y, s, method="f1")
    assert f1_at(y, s, thr) == pytest.approx(f1_max(y, s)[0], abs=1e-12)


def test_select_threshold_quantile_and_errors():
    y = np.array([0] * 100 + [1] * 5)
    s = np.r_[np.arange(100.0), [1000.0] * 5]
    assert select_threshold(y, s, method="quantile", quantile=0.95) == pytest.approx(
        np.quantile(np.arange(100.0), 0.95))  # uses the normal scores only
    with pytest.raises(UndefinedMetricError, match="only defects"):
        select_threshold([1, 1], [0.2, 0.3])
    with pytest.raises(ConfigError, match="method"):
        select_threshold(y, s, method="max")
    with pytest.raises(ConfigError, match="quantile"):
        select_threshold(y, s, method="quantile", quantile=0.0)


def test_validation_threshold_applied_to_separate_test_set():
    rng = np.random.default_rng(11)
    y_val, y_test = rng.integers(0, 2, 80), rng.integers(0, 2, 80)
    s_val = y_val * 2.0 + rng.normal(size=80)
    s_test = y_test * 2.0 + rng.normal(size=80)
    thr = select_threshold(y_val, s_val)
    f1_test = f1_at(y_test, s_test, thr)
    assert f1_test == pytest.approx(skm.f1_score(y_test, s_test >= thr))
    assert f1_test <= f1_max(y_test, s_test)[0] + 1e-12  # oracle F1-max is an upper bound


# --------------------------------------------------------------------------- evaluate_anomaly


def test_evaluate_anomaly_keys_and_consistency():
    rng = np.random.default_rng(5)
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = labels + rng.normal(size=6) * 0.8
    masks = [None if lab == 0 else rng.random((8, 10)) > 0.8 for lab in labels]
    maps = [rng.random((8, 10)).astype(np.float32) + (m if m is not None else 0)
            for m in masks]
    res = evaluate_anomaly(labels, scores, masks, maps, threshold=0.5, pixel_threshold=0.9)
    expected = {"image_auroc", "image_ap", "f1_max", "f1_max_threshold", "f1_at_threshold",
                "pixel_auroc", "pixel_ap", "aupro", "pixel_f1_at_threshold", "n_images",
                "n_defect", "n_good", "aupro_fpr_limit"}
    assert set(res) == expected
    assert (res["n_images"], res["n_defect"], res["n_good"]) == (6, 3, 3)
    assert res["image_auroc"] == auroc(labels, scores)
    assert res["pixel_auroc"] == pytest.approx(pixel_auroc(masks, maps), abs=1e-12)
    assert res["pixel_ap"] == pytest.approx(pixel_ap(masks, maps), abs=1e-12)
    assert res["aupro"] == pytest.approx(aupro(masks, maps, 0.3), abs=1e-12)
    assert res["f1_at_threshold"] == f1_at(labels, scores, 0.5)
    assert res["aupro_fpr_limit"] == 0.3
    for key in ("pixel_auroc", "pixel_ap", "aupro", "pixel_f1_at_threshold"):
        assert isinstance(res[key], float) and np.isfinite(res[key])

    image_only = evaluate_anomaly(labels, scores)
    assert image_only["pixel_auroc"] is None and image_only["aupro"] is None
    assert image_only["image_ap"] == res["image_ap"]
    with pytest.raises(InputError, match="maps has 2 entries but labels has 6"):
        evaluate_anomaly(labels, scores, masks[:2], maps[:2])


def test_evaluate_anomaly_nan_on_undefined_for_a_single_class_test_set():
    maps = [np.random.default_rng(1).random((5, 5)) for _ in range(3)]
    with pytest.raises(UndefinedMetricError, match="AUROC is undefined"):
        evaluate_anomaly([0, 0, 0], [0.1, 0.2, 0.3], [None] * 3, maps)
    res = evaluate_anomaly([0, 0, 0], [0.1, 0.2, 0.3], [None] * 3, maps, threshold=0.2,
                           nan_on_undefined=True)
    for key in ("image_auroc", "image_ap", "f1_max", "f1_at_threshold", "pixel_auroc",
                "pixel_ap", "aupro"):
        assert np.isnan(res[key]), key
    assert (res["n_good"], res["n_defect"]) == (3, 0)


def test_packed_key_order_gives_the_argsort_counts(monkeypatch):
    """Large float32 score arrays are ordered by one sort of packed 64-bit keys: the same
    counts and thresholds as argsort's order, weight sums equal up to summation order."""
    from defectforge.metrics import _checks

    rng = np.random.default_rng(5)
    n = _checks.PACKED_SORT_MIN * 3
    cases = [rng.random(n, dtype=np.float32) - 0.5,
             np.round(rng.standard_normal(n), 1).astype(np.float32),  # many ties
             np.r_[np.zeros(n, np.float32), np.float32(-0.0), np.float32(np.inf), np.float32(-np.inf),
                   -np.ones(5, np.float32), np.float32(1e-45)].astype(np.float32)]
    for x in cases:
        order = _checks._descending_order(x)
        assert np.all(np.diff(x[order]) <= 0) and np.array_equal(np.sort(order), np.arange(x.size))
        labels, weights = rng.random(x.size) < 0.2, rng.random(x.size)
        packed = _checks._threshold_counts(labels, x, weights)
        monkeypatch.setattr(_checks, "PACKED_SORT_MIN", 1 << 40)  # argsort
        plain = _checks._threshold_counts(labels, x, weights)
        monkeypatch.undo()
        for a, b in zip(packed[:3], plain[:3]):
            assert np.array_equal(a, b)
        np.testing.assert_allclose(packed[3], plain[3], rtol=1e-12)
