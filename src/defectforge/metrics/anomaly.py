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
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from defectforge.errors import ConfigError, DefectforgeError, InputError

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

GOOD_LABEL = "good"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class UndefinedMetricError(DefectforgeError, ValueError):
    """A metric is undefined for the given labels (e.g. AUROC with only one class present)."""


class ThresholdFallbackWarning(UserWarning):
    """:func:`select_threshold` could not use the requested method and fell back to a quantile."""


# --------------------------------------------------------------------------- input checks


def _labels_1d(labels: Any, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 1-D bool array (True = defect), or raise InputError."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InputError(None, f"{name} must be 1-D (one per image), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "US" or (arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr)):
        return np.array([str(v) != GOOD_LABEL for v in arr], dtype=bool)
    if arr.dtype.kind in "iuf":
        ok = (arr == 0) | (arr == 1)
        if not ok.all():
            bad = arr[~ok]
            raise InputError(
                None, f"{name} must be 0/1 or bool (1 = defect); found {bad.size} other value(s), "
                f"e.g. {bad[0].item()!r}")
        return arr.astype(bool)
    raise InputError(None, f"{name} must be bool, 0/1 or 'good'/<defect type> strings, "
                     f"got dtype {arr.dtype}")


def _check_finite(values: np.ndarray, name: str) -> None:
    """Raise InputError naming the count and first position of NaN / inf values."""
    finite = np.isfinite(values)
    if finite.all():
        return
    bad = ~finite
    n_nan = int(np.isnan(values).sum())
    n_inf = int(bad.sum()) - n_nan
    first = np.unravel_index(int(np.argmax(bad.ravel())), values.shape)
    where = first[0] if len(first) == 1 else tuple(int(i) for i in first)
    raise InputError(
        None, f"{name} contain {n_nan} NaN and {n_inf} infinite value(s) (first at index "
        f"{where}); metrics need finite raw scores")


def _float_array(values: Any, name: str) -> np.ndarray:
    """``values`` as a float array without copying float32/float64 input; ints -> float64."""
    arr = np.asarray(values)
    if arr.dtype.kind == "b" or arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind == "f":
        if arr.dtype.itemsize < 4:
            arr = arr.astype(np.float32)
        elif arr.dtype.itemsize > 8:
            arr = arr.astype(np.float64)
    else:
        raise InputError(None, f"{name} must be real numbers, got dtype {arr.dtype}")
    return arr


def _scores_1d(scores: Any, n: int, name: str = "scores") -> np.ndarray:
    arr = _float_array(scores, name)
    if arr.ndim != 1:
        raise InputError(None, f"{name} must be 1-D (one per image), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(None, f"{name} has {arr.shape[0]} values but labels has {n}")
    _check_finite(arr, name)
    return arr


def _undefined(message: str, nan_on_undefined: bool) -> float:
    if nan_on_undefined:
        return float("nan")
    raise UndefinedMetricError(message)


def _class_counts_message(metric: str, n_pos: int, n_neg: int, what: str = "images") -> str:
    if what == "pixels":
        held = f"the masks hold {n_pos} defect and {n_neg} background pixel(s)"
    else:
        held = f"the {what} hold {n_pos} defect and {n_neg} normal sample(s)"
    return (f"{metric} is undefined: {held}; both classes are needed "
            "(pass nan_on_undefined=True to get NaN)")


# --------------------------------------------------------------------------- core curve


def _threshold_counts(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Cumulative (fps, tps, thresholds, weight_sum) at each distinct score, descending.

    ``tps[i]`` / ``fps[i]`` count positives / negatives with ``score >= thresholds[i]``; one
    entry per distinct score (the last index of each tied run), so the order of tied samples
    never matters. ``weight_sum[i]`` is the cumulative sum of ``weights`` in the same order
    (``None`` without weights). One O(n log n) sort.
    """
    order = np.argsort(scores)[::-1]  # stability is not needed: only run ends are used
    s = scores[order]
    run_end = np.empty(s.shape[0], dtype=bool)
    np.not_equal(s[1:], s[:-1], out=run_end[:-1])
    run_end[-1:] = True
    ends = np.flatnonzero(run_end)
    del run_end
    thresholds = s[ends]
    count_dtype = np.int32 if s.shape[0] < 2**31 - 1 else np.int64  # halves the cumsum
    del s
    tps = np.cumsum(labels[order], dtype=count_dtype)[ends].astype(np.int64)
    weight_sum = None
    if weights is not None:
        w = weights[order]
        del order
        np.cumsum(w, out=w)
        weight_sum = w[ends]
        del w
    else:
        del order
    fps = ends  # reuse the index array: fps = (ends + 1) - tps, in place
    fps += 1
    fps -= tps
    return fps, tps, thresholds, weight_sum


def _auroc_from_counts(fps: np.ndarray, tps: np.ndarray) -> float:
    """Exact Mann-Whitney AUROC (ties count 1/2) from cumulative counts at distinct scores."""
    # U = sum over runs of pos_run * (negatives below + neg_run / 2)
    #   = n_pos * n_neg - sum pos_run * (fps_end + fps_prev) / 2   (fewer temporaries)
    n_pos, n_neg = float(tps[-1]), float(fps[-1])
    pos_run = np.diff(tps, prepend=0).astype(np.float64)
    fps_sum = fps.astype(np.float64)
    fps_sum[1:] += fps[:-1]
    u = n_pos * n_neg - 0.5 * float(np.dot(pos_run, fps_sum))
    return u / (n_pos * n_neg)


def _ap_from_counts(fps: np.ndarray, tps: np.ndarray) -> float:
    """Step-wise AP = sum_n (R_n - R_{n-1}) P_n, identical to sklearn's average_precision_score."""
    precision = tps / (tps + fps)
    recall_step = np.diff(tps, prepend=0) / tps[-1]
    return float(np.dot(recall_step, precision))


# --------------------------------------------------------------------------- image level


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


def _as_image_list(values: Any, name: str) -> list[Any] | np.ndarray:
    if values is None:
        return None  # type: ignore[return-value]
    if isinstance(values, np.ndarray):
        if values.ndim == 2:
            raise InputError(None, f"{name}: got one 2-D array; pass a list of HxW arrays or an "
                             "(N, H, W) array")
        if values.ndim != 3:
            raise InputError(None, f"{name} must be a list of HxW arrays or an (N, H, W) array, "
                             f"got shape {values.shape}")
        return values
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        try:
            values = list(values)
        except TypeError:
            raise InputError(None, f"{name} must be a list of HxW arrays or an (N, H, W) array, "
                             f"got {type(values).__name__}") from None
    return values


def _mask_bool(mask: Any, i: int, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != shape:
        raise InputError(None, f"image {i}: mask shape {m.shape} differs from map shape {shape}; "
                         "resize maps (or masks) to one evaluation resolution first")
    if m.dtype == bool:
        return m
    if m.dtype.kind not in "iuf":
        raise InputError(None, f"image {i}: mask must be bool or 0/1/255, got dtype {m.dtype}")
    if not ((m == 0) | (m == 1) | (m == 255)).all():
        raise InputError(None, f"image {i}: mask holds values other than 0/1/255 (soft or "
                         "resized with interpolation?); binarise it first")
    return m != 0


def _map_2d(amap: Any, i: int) -> np.ndarray:
    a = _float_array(amap, f"map {i}")
    if a.ndim != 2:
        raise InputError(None, f"image {i}: anomaly map must be 2-D (H x W), got shape {a.shape}")
    return a


def region_weights(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``(weights, n_regions)`` of a bool mask: each defect pixel weighs 1 / |its region|
    (8-connected components), background pixels 0; summing weights above a threshold gives
    the sum of per-region overlaps that AUPRO needs."""
    lab, k = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    sizes_k = np.bincount(lab.reshape(-1), minlength=k + 1).astype(np.float64)
    inv = np.zeros(k + 1)
    inv[1:] = 1.0 / sizes_k[1:]
    return inv[lab], int(k)


class _Pixels:
    """Pooled pixels of all images: ``fg`` (bool), ``scores`` (float) and, when asked,
    ``weights`` (1/|region| on defect pixels, 0 on background) and ``n_regions``."""

    def __init__(self, masks: Any, maps: Any, *, regions: bool = False):
        maps_l = _as_image_list(maps, "maps")
        if maps_l is None:
            raise InputError(None, "maps is None; pixel metrics need anomaly maps")
        masks_l = _as_image_list(masks, "masks")
        n = len(maps_l)
        if masks_l is not None and len(masks_l) != n:
            raise InputError(None, f"masks has {len(masks_l)} entries but maps has {n}")
        self.n_regions = 0
        self.weights: np.ndarray | None = None
        fast = (isinstance(maps_l, np.ndarray) and isinstance(masks_l, np.ndarray)
                and masks_l.dtype == bool and masks_l.shape == maps_l.shape and not regions)
        if fast:
            # (N, H, W) arrays: views, no copy for contiguous float input.
            self.scores = _float_array(maps_l, "maps").reshape(-1)
            _check_finite(self.scores, "maps")
            self.fg = masks_l.reshape(-1)
            return
        arrays = [_map_2d(maps_l[i], i) for i in range(n)]
        sizes = [a.size for a in arrays]
        total = int(sum(sizes))
        dtype = np.result_type(np.float32, *[a.dtype for a in arrays]) if arrays else np.float32
        self.scores = np.empty(total, dtype=dtype)
        self.fg = np.zeros(total, dtype=bool)
        if regions:
            self.weights = np.zeros(total, dtype=np.float64)
        pos = 0
        for i, a in enumerate(arrays):
            end = pos + a.size
            if not np.isfinite(a).all():
                try:
                    _check_finite(a, f"map {i}")
                except InputError as exc:
                    raise InputError(None, f"image {i}: {exc}") from None
            self.scores[pos:end] = a.reshape(-1)
            m = _mask_bool(masks_l[i], i, a.shape) if masks_l is not None else None
            if m is not None:
                self.fg[pos:end] = m.reshape(-1)
                if regions and m.any():
                    w, k = region_weights(m)
                    self.weights[pos:end] = w.reshape(-1)
                    self.n_regions += k
            pos = end

    def counts(self) -> tuple[int, int]:
        n_fg = int(np.count_nonzero(self.fg))
        return n_fg, self.fg.shape[0] - n_fg


def _pixel_counts(px: _Pixels) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One global descending sort of all pixels -> cumulative (fps, tps, pro_sum) at each
    distinct score. ``fps`` counts background pixels, ``pro_sum`` the sum of 1/|region| over
    defect pixels (None unless regions were labelled)."""
    fps, tps, _, pro_sum = _threshold_counts(px.fg, px.scores, px.weights)
    return fps, tps, pro_sum


def pixel_auroc(masks: Any, maps: Any, *, nan_on_undefined: bool = False) -> float:
    """AUROC over all pixels of all images pooled (masks ``None`` = all background).

    Undefined when there is no defect pixel or no background pixel.
    """
    px = _Pixels(masks, maps)
    n_fg, n_bg = px.counts()
    if n_fg == 0 or n_bg == 0:
        return _undefined(_class_counts_message("pixel AUROC", n_fg, n_bg, "pixels"),
                          nan_on_undefined)
    fps, tps, _ = _pixel_counts(px)
    return _auroc_from_counts(fps, tps)


def _pixel_ap_undefined(n_bg: int) -> str:
    return ("pixel AP is undefined: no defect pixel in the masks "
            f"({n_bg} background pixels); pass nan_on_undefined=True to get NaN")


def pixel_ap(masks: Any, maps: Any, *, nan_on_undefined: bool = False) -> float:
    """Step-wise average precision over all pixels of all images pooled."""
    px = _Pixels(masks, maps)
    n_fg, n_bg = px.counts()
    if n_fg == 0:
        return _undefined(_pixel_ap_undefined(n_bg), nan_on_undefined)
    fps, tps, _ = _pixel_counts(px)
    return _ap_from_counts(fps, tps)


def _aupro_undefined(px: _Pixels, n_bg: int) -> str | None:
    if px.n_regions == 0 or n_bg == 0:
        return (f"AUPRO is undefined: the masks hold {px.n_regions} defect region(s) and "
                f"{n_bg} background pixel(s); both are needed (pass nan_on_undefined=True to "
                "get NaN)")
    return None


def _pro_from_counts(px: _Pixels, fps: np.ndarray, pro_sum: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    n_bg = px.fg.shape[0] - int(np.count_nonzero(px.fg))
    fpr = np.r_[0.0, fps / n_bg]
    pro = np.r_[0.0, np.minimum(pro_sum / px.n_regions, 1.0)]
    return fpr, pro


def _pro_curve_checked(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray] | str:
    """The full PRO curve, or a message saying why it is undefined."""
    px = _Pixels(masks, maps, regions=True)
    msg = _aupro_undefined(px, px.counts()[1])
    if msg is not None:
        return msg
    fps, _, pro_sum = _pixel_counts(px)
    return _pro_from_counts(px, fps, pro_sum)


def pro_curve(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-region-overlap curve ``(fpr, pro)``, exact, one point per distinct score.

    Regions are the 8-connected components of each ground-truth mask (unique across images).
    Walking all pixels in one global descending score order, ``fpr`` = background pixels
    above threshold / all background pixels and ``pro`` = mean over regions of the fraction of
    the region above threshold. Starts at (0, 0), ends at (1, 1). Good images (mask ``None``
    or empty) contribute background only.
    """
    out = _pro_curve_checked(masks, maps)
    if isinstance(out, str):
        raise UndefinedMetricError(out)
    return out


def _area_to_limit(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    k = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points with fpr <= limit
    x, y = fpr[:k], pro[:k]
    if k < fpr.shape[0]:
        f0, f1, p0, p1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        x = np.r_[x, fpr_limit]
        y = np.r_[y, p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)]
    area = float(np.trapezoid(y, x)) / fpr_limit
    return min(max(area, 0.0), 1.0)


def _check_fpr_limit(fpr_limit: float) -> float:
    value = float(fpr_limit)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"aupro: fpr_limit must be in (0, 1], got {fpr_limit}")
    return value


def aupro(masks: Any, maps: Any, fpr_limit: float = 0.3, *, nan_on_undefined: bool = False
          ) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (default 0.3), in [0, 1].

    The curve (:func:`pro_curve`) is cut at ``fpr_limit`` with PRO linearly interpolated at
    the limit, integrated with the trapezoid rule and divided by ``fpr_limit``. State the limit
    wherever the number is reported. O(P log P) in the number of pixels P.
    """
    fpr_limit = _check_fpr_limit(fpr_limit)
    out = _pro_curve_checked(masks, maps)
    if isinstance(out, str):
        return _undefined(out, nan_on_undefined)
    return _area_to_limit(out[0], out[1], fpr_limit)


# --------------------------------------------------------------------------- one call


def evaluate_anomaly(labels: Any, scores: Any, masks: Any = None, maps: Any = None,
                     fpr_limit: float = 0.3, *, threshold: float | None = None,
                     pixel_threshold: float | None = None,
                     nan_on_undefined: bool = False) -> dict[str, Any]:
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
        out["aupro"] = _area_to_limit(*_pro_from_counts(px, fps, pro_sum), fpr_limit)
    if pixel_threshold is not None:
        out["pixel_f1_at_threshold"] = f1_at(px.fg, px.scores, pixel_threshold,
                                             nan_on_undefined=nan_on_undefined)
    return out
