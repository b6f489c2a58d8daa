"""Point-cloud anomaly metrics per category: O-AUROC, P-AUROC, O-AUPR, P-AUPR.

Conventions of Real3D-AD / Anomaly-ShapeNet (docs/synthesis-3d.md section 9):

- O-AUROC / O-AUPR: over the object scores of a category's test clouds.
- P-AUROC / P-AUPR: over the **pooled points of all test clouds of the category** (one
  ranking; good clouds contribute only negatives).
- The table has one row per category and a ``mean`` row (plain mean over categories,
  NaN entries skipped). A metric that is undefined for a category (one class only) is
  NaN, never a silent 0.5.

Scores are raw (no normalisation): both metrics depend only on the order.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from defectforge.errors import InputError

METRICS_3D = ("O-AUROC", "P-AUROC", "O-AUPR", "P-AUPR")


def category_metrics(labels: Sequence[bool], scores: Sequence[float], point_labels: Sequence[np.ndarray],
                     point_scores: Sequence[np.ndarray] | None) -> dict[str, float]:
    """The four metrics for one category (NaN where undefined or without point scores)."""
    from defectforge.metrics import auroc, average_precision

    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) != len(s):
        raise InputError(None, f"{len(y)} labels but {len(s)} object scores")
    out = {"O-AUROC": auroc(y, s, nan_on_undefined=True), "O-AUPR": average_precision(y, s, nan_on_undefined=True)}
    if point_scores is None:
        out["P-AUROC"] = out["P-AUPR"] = float("nan")
    else:
        if len(point_scores) != len(point_labels):
            raise InputError(None, f"{len(point_labels)} point-label arrays but {len(point_scores)} point-score arrays")
        for i, (pl, ps) in enumerate(zip(point_labels, point_scores)):
            if len(pl) != len(ps):
                raise InputError(None, f"cloud {i}: {len(pl)} point labels but {len(ps)} point scores")
        pl = np.concatenate([np.asarray(a, dtype=bool).reshape(-1) for a in point_labels]) if point_labels else np.zeros(0, bool)
        ps = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in point_scores]) if point_scores else np.zeros(0)
        out["P-AUROC"] = auroc(pl, ps, nan_on_undefined=True)
        out["P-AUPR"] = average_precision(pl, ps, nan_on_undefined=True)
    return {k: float(out[k]) for k in METRICS_3D}


def evaluate_3d(categories: Sequence[str], labels: Sequence[bool], scores: Sequence[float],
                point_labels: Sequence[np.ndarray], point_scores: Sequence[np.ndarray] | None) -> dict[str, Any]:
    """``{"per_class": {cls: metrics}, "mean": metrics, "n_clouds": {cls: n}}`` over the test clouds."""
    cats = list(categories)
    n = len(cats)
    if not (len(labels) == len(scores) == len(point_labels) == n) or (point_scores is not None and len(point_scores) != n):
        raise InputError(None, "categories, labels, scores and point arrays must have one entry per cloud")
    per: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for c in sorted(set(cats)):
        idx = [i for i, x in enumerate(cats) if x == c]
        per[c] = category_metrics([labels[i] for i in idx], [scores[i] for i in idx], [point_labels[i] for i in idx],
                                  None if point_scores is None else [point_scores[i] for i in idx])
        counts[c] = len(idx)
    mean = {}
    for m in METRICS_3D:
        vals = [v[m] for v in per.values() if np.isfinite(v[m])]
        mean[m] = float(np.mean(vals)) if vals else float("nan")
    return {"per_class": per, "mean": mean, "n_clouds": counts}


def metrics_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{"class", O-AUROC, ...}`` (rounded to 4 places) ending with the ``mean`` row."""
    rows = []
    for c, m in result["per_class"].items():
        rows.append({"class": c, **{k: round(v, 4) for k, v in m.items()}})
    rows.append({"class": "mean", **{k: round(v, 4) for k, v in result["mean"].items()}})
    return rows
