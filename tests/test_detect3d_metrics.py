"""Per-category 3D metrics: object vs pooled-point metrics, undefined cases, the mean row."""

import math

import numpy as np
import pytest

from defectforge.detect3d.metrics import evaluate_3d, metrics_table
from defectforge.errors import InputError
from defectforge.metrics import auroc, average_precision


def test_metrics_per_class_pool_points_and_average():
    rng = np.random.default_rng(0)
    cats = ["a", "a", "a", "b", "b", "b"]
    labels = [False, True, True, False, True, False]
    scores = [0.1, 0.9, 0.4, 0.5, 0.2, 0.3]
    plab = [np.zeros(50, bool) if not l else rng.random(50) < 0.2 for l in labels]
    psc = [rng.random(50) + 0.8 * pl for pl in plab]
    res = evaluate_3d(cats, labels, scores, plab, psc)
    a = res["per_class"]["a"]
    assert a["O-AUROC"] == auroc([0, 1, 1], [0.1, 0.9, 0.4])
    assert a["O-AUPR"] == average_precision([0, 1, 1], [0.1, 0.9, 0.4])
    pooled_l = np.concatenate(plab[:3])
    pooled_s = np.concatenate(psc[:3])
    assert a["P-AUROC"] == auroc(pooled_l, pooled_s)
    assert a["P-AUPR"] == average_precision(pooled_l, pooled_s)
    # pooled is not the mean of per-cloud AUROCs
    b = res["per_class"]["b"]
    assert b["O-AUROC"] == 0.0  # the defect has the lowest score
    assert res["mean"]["O-AUROC"] == pytest.approx((a["O-AUROC"] + b["O-AUROC"]) / 2)
    rows = metrics_table(res)
    assert [r["class"] for r in rows] == ["a", "b", "mean"]
    assert res["n_clouds"] == {"a": 3, "b": 3}


def test_undefined_metrics_are_nan_and_skipped_in_mean():
    res = evaluate_3d(["a", "a", "b", "b"], [False, False, False, True], [0.1, 0.2, 0.1, 0.9],
                      [np.zeros(5, bool)] * 3 + [np.array([1, 0, 0, 0, 0], bool)],
                      [np.arange(5.0)] * 3 + [np.array([9.0, 0, 0, 0, 0])])
    assert math.isnan(res["per_class"]["a"]["O-AUROC"]) and math.isnan(res["per_class"]["a"]["P-AUPR"])
    assert res["mean"]["O-AUROC"] == 1.0
    res2 = evaluate_3d(["a", "a"], [False, True], [0.0, 1.0], [np.zeros(3, bool), np.ones(3, bool)], None)
    assert math.isnan(res2["mean"]["P-AUROC"]) and res2["mean"]["O-AUROC"] == 1.0


def test_mismatched_lengths_raise():
    with pytest.raises(InputError, match="3 point labels but 4 point scores"):
        evaluate_3d(["a", "a"], [False, True], [0.0, 1.0], [np.zeros(3, bool), np.ones(3, bool)],
                    [np.zeros(3), np.zeros(4)])
    with pytest.raises(InputError, match="one entry per cloud"):
        evaluate_3d(["a"], [False, True], [0.0, 1.0], [np.zeros(3, bool)], None)
