"""Anomaly-detection metrics on raw scores: image AUROC / AP / F1, pixel AUROC / AP, AUPRO.

Everything here works on **raw** scores (higher = more anomalous) exactly as the detector
produced them. Nothing is passed through a sigmoid, clamped or normalised: AUROC, AP and
AUPRO depend only on the order of the scores, so normalisation could only hurt (anomalib's
sigmoid-on-raw-distances and clamp-before-metrics bugs are the cautionary tale).

Conventions
-----------
- ``labels``: 1-D, ``True``/``1`` = defect, ``False``/``0`` = good. Strings are accepted too
  (``"good"`` = good, any other string = defect), so ``[s.label for s in samples]`` works.
- ``scores``: 1-D, finite; NaN or inf raise :class:`~defectforge.errors.InputError`
  (a ``ValueError``) that says how many and where.
- Thresholds are inclusive: a prediction is "defect" when ``score >= threshold``.
- A metric that is mathematically undefined for the given labels (AUROC with a single class,
  AUPRO without defect or without background pixels, ...) raises :class:`UndefinedMetricError`
  with a message saying why; pass ``nan_on_undefined=True`` to get ``float("nan")`` instead.
- Ties: every curve has one point per *distinct* score (the last point of each tied run), so
  results do not depend on the order of tied samples. AUROC gives ties half credit
  (Mann-Whitney with average ranks). AP is sklearn's step-wise ``average_precision_score``.

Pixel metrics pool every pixel of every image (one global ranking), as MVTec-style
evaluation does. Inputs are a list of ``H x W`` arrays (sizes may differ between images) or an
``(N, H, W)`` array; a mask of ``None`` means "all background" (a good image). Pooling makes
at most one copy of the maps (none for a contiguous ``(N, H, W)`` float array); float32 maps
stay float32. Peak memory is about 30 (AUROC, AP) to 45 (AUPRO) bytes per pixel (sort
index, cumulative counts; see ``docs/bench/metrics.md``), so evaluate at the detector's map
resolution. For more pixels than fit in memory, :class:`defectforge.metrics.streaming.PixelAccumulator`
takes the maps chunk by chunk in bounded memory, with a stated maximum error.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from defectforge.errors import ConfigError, InputError
from defectforge.metrics._checks import (  # noqa: F401 (GOOD_LABEL and the error types are public here)
    GOOD_LABEL,
    ThresholdFallbackWarning,
    UndefinedMetricError,
    _ap_from_counts,
    _auroc_from_counts,
    _class_counts_message,
    _labels_1d,
    _scores_1d,
    _threshold_counts,
    _undefined,
)
from defectforge.metrics.pixel import (
    _aupro_undefined,
    _area_to_limit,
    _as_image_list,
    _check_fpr_limit,
    _pixel_ap_undefined,
    _pixel_counts,
    _Pixels,
    _pro_from_counts,
    aupro,
    pixel_ap,
    pixel_auroc,
    pro_curve,
)

__all__ = [
    "ThresholdFallbackWarning",
    "UndefinedMetricError",
    "aupro",
    "auroc",
    "average_precision",
    "evaluate_anomaly",
    "f1_at",
    "f1_max",
    "pixel_ap",
    "pixel_auroc",
    "pr_curve",
    "pro_curve",
    "roc_curve",
    "select_threshold",
]


def auroc(labels: Any, scores: Any, *, nan_on_undefined: bool = False) -> float:
    """Area under the ROC curve, rank based (Mann-Whitney U / (n+ n-), ties count 1/2).

    Equals ``sklearn.metrics.roc_auc_score``. Works on raw scores of any range.
    """
    y = _labels_1d(labels)
    s = _scores_1d(scores, y.shape[0])
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return _undefined(_class_counts_message("AUROC", n_pos, n_neg), nan_on_undefined)
    fps, tps, _, _ = _threshold_counts(y, s)
    return _auroc_from_counts(fps, tps)


def average_precision(labels: Any, scores: Any, *, nan_on_undefined: bool = False) -> float:
    """Step-wise average precision (area under the PR curve without interpolation).

    Identical to ``sklearn.metrics.average_precision_score`` including ties (one PR point per
    distinct score). Undefined without defects; with only defects it is 1.0 (as sklearn).
    """
    y = _labels_1d(labels)
    s = _scores_1d(scores, y.shape[0])
    n_pos = int(y.sum())
    if n_pos == 0:
        return _undefined(
            f"average precision is undefined: the images hold no defect sample "
            f"({y.shape[0]} normal); pass nan_on_undefined=True to get NaN", nan_on_undefined)
    fps, tps, _, _ = _threshold_counts(y, s)
    return _ap_from_counts(fps, tps)


def roc_curve(labels: Any, scores: Any, *, drop_intermediate: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr, thresholds)`` like ``sklearn.metrics.roc_curve``.

    Thresholds are decreasing; the first is ``inf`` (nothing predicted defect, point (0, 0)).
    ``drop_intermediate`` removes collinear points (sklearn's default), which changes neither
    the plot nor the area. Raises :class:`UndefinedMetricError` with a single class.
    """
    y = _labels_1d(labels)
    s = _scores_1d(scores, y.shape[0])
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        raise UndefinedMetricError(_class_counts_message("the ROC curve", n_pos, n_neg))
    fps, tps, thr, _ = _threshold_counts(y, s)
    if drop_intermediate and fps.shape[0] > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps = np.r_[0, fps]
    tps = np.r_[0, tps]
    thr = np.r_[np.inf, thr.astype(np.float64)]
    return fps / n_neg, tps / n_pos, thr


def pr_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve ``(precision, recall, thresholds)`` like sklearn's.

    Thresholds increase; ``precision[i]``/``recall[i]`` hold for ``score >= thresholds[i]``;
    the arrays end with the point (precision 1, recall 0) that has no threshold.
    """
    y = _labels_1d(labels)
    s = _scores_1d(scores, y.shape[0])
    n_pos = int(y.sum())
    if n_pos == 0:
        raise UndefinedMetricError(
            "the PR curve is undefined: the images hold no defect sample (recall needs one)")
    fps, tps, thr, _ = _threshold_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return (np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0],
            thr[::-1].astype(np.float64))


def f1_max(labels: Any, scores: Any, *, nan_on_undefined: bool = False
           ) -> tuple[float, float]:
    """Best F1 over all thresholds and that threshold (``score >= threshold`` = defect).

    This is an *oracle* number (the threshold is chosen on the data it is scored on); label it
    "F1-max" and report F1 at a validation threshold (:func:`select_threshold`) beside it.
    Among equal-F1 thresholds the highest is returned. The threshold is an actual score, so
    ``f1_at(labels, scores, thr)`` reproduces the F1.
    """
    y = _labels_1d(labels)
    s = _scores_1d(scores, y.shape[0])
    n_pos = int(y.sum())
    if n_pos == 0:
        v = _undefined("F1 is undefined: the images hold no defect sample "
                       f"({y.shape[0]} normal); pass nan_on_undefined=True to get NaN",
                       nan_on_undefined)
        return v, float("nan")
    fps, tps, thr, _ = _threshold_counts(y, s)
    f1 = 2.0 * tps / (tps + fps + n_pos)
    i = int(np.argmax(f1))
    return float(f1[i]), float(thr[i])


def f1_at(labels: Any, scores: Any, threshold: float, *, nan_on_undefined: bool = False
          ) -> float:
    """F1 of the prediction ``score >= threshold`` (defect) against ``labels``."""
    y = _labels_1d(labels)
    s = _scores_1d(scores, y.shape[0])
    threshold = float(threshold)
    if np.isnan(threshold):
        raise InputError(None, "threshold is NaN")
    n_pos = int(y.sum())
    if n_pos == 0:
        return _undefined("F1 is undefined: the images hold no defect sample "
                          f"({y.shape[0]} normal); pass nan_on_undefined=True to get NaN",
                          nan_on_undefined)
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred)) - tp
    return 2.0 * tp / (2 * tp + fp + (n_pos - tp))


def select_threshold(labels_val: Any, scores_val: Any,
                     method: Literal["f1", "quantile"] = "f1", quantile: float = 0.99) -> float:
    """Choose a decision threshold on a **validation** split (never on test).

    - ``method="f1"``: the threshold maximising F1 on validation (:func:`f1_max`). When the
      validation split holds only normals, F1 is undefined; rather than picking the minimum
      score (anomalib's bug: everything becomes anomalous) it falls back to the ``quantile`` of
      the normal scores and emits a :class:`ThresholdFallbackWarning` saying so.
    - ``method="quantile"``: ``numpy.quantile`` (linear) of the *normal* validation scores, so
      about ``1 - quantile`` of normal images score at or above it (a target false-positive
      rate).

    Raises :class:`UndefinedMetricError` when validation holds only defects (nothing tells
    where normals lie) and :class:`~defectforge.errors.ConfigError` for a bad method/quantile.
    """
    if method not in ("f1", "quantile"):
        raise ConfigError(f"select_threshold: method must be 'f1' or 'quantile', got {method!r}")
    quantile = float(quantile)
    if not 0.0 < quantile <= 1.0:
        raise ConfigError(f"select_threshold: quantile must be in (0, 1], got {quantile}")
    y = _labels_1d(labels_val, "labels_val")
    s = _scores_1d(scores_val, y.shape[0], "scores_val")
    if y.shape[0] == 0:
        raise UndefinedMetricError("select_threshold: the validation set is empty")
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_neg == 0:
        raise UndefinedMetricError(
            f"select_threshold: the validation set holds only defects ({n_pos}); a threshold "
            "needs normal validation images")
    if method == "f1" and n_pos == 0:
        warnings.warn(
            f"select_threshold: validation holds only normal images ({n_neg}), so F1 is "
            f"undefined; using the {quantile:g} quantile of the normal scores instead",
            ThresholdFallbackWarning, stacklevel=2)
        method = "quantile"
    if method == "f1":
        return f1_max(y, s)[1]
    return float(np.quantile(s[~y], quantile))


# --------------------------------------------------------------------------- pixel level


def evaluate_anomaly(labels: Any, scores: Any, masks: Any = None, maps: Any = None,
                     fpr_limit: float = 0.3, *, threshold: float | None = None,
                     pixel_threshold: float | None = None,
                     nan_on_undefined: bool = False, curves: dict[str, Any] | None = None) -> dict[str, Any]:
    """All anomaly metrics of one test set in one dict.

    Keys (always present):

    - ``image_auroc``, ``image_ap``: rank AUROC and step-wise AP of the image ``scores``.
    - ``f1_max``, ``f1_max_threshold``: oracle F1-max on this data and its threshold.
    - ``f1_at_threshold``: F1 at the given (validation-chosen) ``threshold``, else ``None``.
    - ``pixel_auroc``, ``pixel_ap``, ``aupro``: floats when ``maps`` is given (``masks`` may
      then be ``None`` entries for good images), **``None`` when ``maps`` is not given**.
    - ``pixel_f1_at_threshold``: pixel F1 at ``pixel_threshold`` when both maps and a pixel
      threshold are given, else ``None``.
    - ``aupro_fpr_limit`` (the FPR limit used), ``n_images``, ``n_defect``, ``n_good``.

    An undefined metric raises :class:`UndefinedMetricError`, so every float returned is
    finite; with ``nan_on_undefined=True`` it is NaN instead.

    ``curves``: a dict that receives the exact PRO curve ``(fpr, pro)`` under ``"pro"`` where
    AUPRO is defined (the :func:`pro_curve` of the same maps, from the same one global sort).
    """
    y = _labels_1d(labels)
    s = _scores_1d(scores, y.shape[0])
    n_def = int(y.sum())
    out: dict[str, Any] = {
        "n_images": int(y.shape[0]), "n_defect": n_def, "n_good": int(y.shape[0]) - n_def,
        "image_auroc": auroc(y, s, nan_on_undefined=nan_on_undefined),
        "image_ap": average_precision(y, s, nan_on_undefined=nan_on_undefined),
    }
    out["f1_max"], out["f1_max_threshold"] = f1_max(y, s, nan_on_undefined=nan_on_undefined)
    out["f1_at_threshold"] = (None if threshold is None
                              else f1_at(y, s, threshold, nan_on_undefined=nan_on_undefined))
    out["aupro_fpr_limit"] = float(fpr_limit)
    out["pixel_auroc"] = out["pixel_ap"] = out["aupro"] = out["pixel_f1_at_threshold"] = None
    if maps is None:
        if masks is not None:
            raise InputError(None, "masks given without maps; pixel metrics need anomaly maps")
        return out
    maps_l = _as_image_list(maps, "maps")
    if len(maps_l) != y.shape[0]:
        raise InputError(None, f"maps has {len(maps_l)} entries but labels has {y.shape[0]}")
    fpr_limit = _check_fpr_limit(fpr_limit)
    px = _Pixels(masks, maps_l, regions=True)  # pooled once, one sort for all pixel metrics
    n_fg, n_bg = px.counts()
    fps, tps, pro_sum = _pixel_counts(px)
    if n_fg == 0 or n_bg == 0:
        out["pixel_auroc"] = _undefined(
            _class_counts_message("pixel AUROC", n_fg, n_bg, "pixels"), nan_on_undefined)
    else:
        out["pixel_auroc"] = _auroc_from_counts(fps, tps)
    out["pixel_ap"] = (_undefined(_pixel_ap_undefined(n_bg), nan_on_undefined) if n_fg == 0
                       else _ap_from_counts(fps, tps))
    msg = _aupro_undefined(px, n_bg)
    if msg is not None:
        out["aupro"] = _undefined(msg, nan_on_undefined)
    else:
        curve = _pro_from_counts(px, fps, pro_sum)
        out["aupro"] = _area_to_limit(*curve, fpr_limit)
        if curves is not None:
            curves["pro"] = curve
    if pixel_threshold is not None:
        out["pixel_f1_at_threshold"] = f1_at(px.fg, px.scores, pixel_threshold,
                                             nan_on_undefined=nan_on_undefined)
    return out
