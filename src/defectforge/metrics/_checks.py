"""Input checks and cumulative counts shared by the image metrics (:mod:`.anomaly`), the
pooled pixel metrics (:mod:`.pixel`) and the bounded-memory ones (:mod:`.streaming`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from defectforge.errors import DefectforgeError, InputError

GOOD_LABEL = "good"


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


#: from this many float32 scores on, the order comes from one sort of packed 64-bit keys
PACKED_SORT_MIN = 1 << 16


def _descending_order(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` in descending order (tied scores in any order).

    Large float32 arrays (pixel scores): one in-place sort of 64-bit keys, the score's bits
    mapped to an order-preserving unsigned integer in the high half and the index in the low
    half, whose low halves then are the order. numpy sorts integer keys with its vectorised
    sort; ``argsort`` is not vectorised (60 M pixel scores: ~3.4 s against ~12 s; memory:
    ``argsort``'s result plus chunks of 4 M keys). Otherwise ``argsort``.
    """
    n = scores.shape[0]
    if scores.dtype != np.float32 or not PACKED_SORT_MIN <= n < 2**32:
        return np.argsort(scores)[::-1]
    bits, key, step = scores.view(np.uint32), np.empty(n, dtype=np.uint64), 1 << 22
    for a in range(0, n, step):  # by chunks: no temporary as long as the scores
        k = bits[a:a + step].astype(np.uint64)
        # negative floats: every bit flipped; the others: the sign bit set (it is 0)
        k ^= np.where(k >= 0x80000000, np.uint64(0xFFFFFFFF), np.uint64(0x80000000))
        k <<= np.uint64(32)
        k |= np.arange(a, a + k.shape[0], dtype=np.uint64)
        key[a:a + k.shape[0]] = k
    key.sort()
    key &= np.uint64(0xFFFFFFFF)
    return key.view(np.int64)[::-1]


def _threshold_counts(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Cumulative (fps, tps, thresholds, weight_sum) at each distinct score, descending.

    ``tps[i]`` / ``fps[i]`` count positives / negatives with ``score >= thresholds[i]``; one
    entry per distinct score (the last index of each tied run), so the order of tied samples
    never matters. ``weight_sum[i]`` is the cumulative sum of ``weights`` in the same order
    (``None`` without weights). One O(n log n) sort.
    """
    order = _descending_order(scores)  # stability is not needed: only run ends are used
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
