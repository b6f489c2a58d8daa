"""Pixel metrics pooled over every pixel of every image: pixel AUROC / AP, the PRO curve
and AUPRO (conventions in :mod:`defectforge.metrics.anomaly`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from defectforge.errors import ConfigError, InputError
from defectforge.metrics._checks import (
    _ap_from_counts,
    _auroc_from_counts,
    _check_finite,
    _class_counts_message,
    _float_array,
    _threshold_counts,
    UndefinedMetricError,
    _undefined,
)

__all__ = ["aupro", "pixel_ap", "pixel_auroc", "pro_curve", "region_weights"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


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
