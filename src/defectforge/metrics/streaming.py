"""Pixel metrics in bounded memory: maps go in chunk by chunk and are dropped.

:class:`PixelAccumulator` keeps, instead of every pixel, three histograms over one fixed grid
of score bins: background pixels, defect pixels, and the defect pixels weighted by
1 / |their region| (8-connected component of the image's mask, as
:func:`~defectforge.metrics.anomaly.aupro` counts regions). Summed from the top bin down they
give, at every bin edge, exactly the counts the exact metrics see at that threshold, so pixel
AUROC, pixel AP and AUPRO are computed by the same code as the exact path
(:mod:`defectforge.metrics.anomaly`) with each bin treated as one tied score.

The grid
    A bin is the float32 bit pattern of the score with its lowest ``23 - mantissa_bits``
    mantissa bits dropped (default 15 kept: bins are 2**-15 ~ 3e-5 of the value wide). No range
    is needed in advance, the order of scores is kept exactly (bins never overlap), and only
    bins that occur are stored (at most 2 ** (9 + mantissa_bits) of them, 44 bytes each,
    whatever the number of images).

Exactness
    Pixel confusion counts and pixel F1 at the pixel threshold are exact (counted per chunk).
    The curve metrics differ from the exact ones only through pixels that share a bin; the
    result states a *proven* maximum error for each, computed from the histograms:

    - pixel AUROC: ``0.5 * sum_k fg_k * bg_k / (n_fg * n_bg)`` (pairs inside one bin get half
      credit here and 0..1 in the exact metric);
    - pixel AP: per bin, ``fg_k / n_fg`` times the largest gap between the precision used here
      and any precision the exact curve can reach inside that bin;
    - AUPRO: the bin-edge points lie on the exact PRO curve, which is monotone between them,
      so each segment is off by at most half its box ``dFPR * dPRO`` (the whole box for the
      segment cut at the FPR limit), over the limit.

    A bin whose pixels all hold one value (ties) adds no error (each bin keeps its smallest and
    largest value to know), so maps with few distinct values are evaluated exactly.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from defectforge.errors import InputError
from defectforge.metrics._checks import (
    _ap_from_counts,
    _auroc_from_counts,
    _check_finite,
    _class_counts_message,
    _undefined,
)
from defectforge.metrics.pixel import _area_to_limit, _check_fpr_limit, _map_2d, _mask_bool, region_weights

__all__ = ["PixelAccumulator", "choose_pixel_path", "DEFAULT_PIXEL_BUDGET"]

#: above this many pixels (images x eval height x eval width) ``detect eval`` uses the binned
#: path by default; the exact path needs ~45 bytes per pixel at its peak (~4.5 GB here).
DEFAULT_PIXEL_BUDGET = 100_000_000
PIXEL_PATHS = ("auto", "exact", "binned")


def choose_pixel_path(mode: str, n_pixels: int, budget: int = DEFAULT_PIXEL_BUDGET) -> str:
    """``"exact"`` or ``"binned"``: ``mode`` when forced, else exact up to ``budget`` pixels."""
    if mode not in PIXEL_PATHS:
        from defectforge.errors import ConfigError

        raise ConfigError(f"pixel path must be one of {', '.join(PIXEL_PATHS)}, got {mode!r}")
    if mode != "auto":
        return mode
    return "exact" if n_pixels <= budget else "binned"


def _sortable_keys(a: np.ndarray, shift: int) -> np.ndarray:
    """uint32 keys that order like the float32 values of ``a`` (bins of 2**shift patterns)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    neg = (u >> 31).astype(bool)
    k = np.where(neg, ~u, u | np.uint32(0x80000000))
    if shift:
        k >>= np.uint32(shift)
    return k


class PixelAccumulator:
    """Bounded-memory pixel AUROC / AP / AUPRO and pixel confusion counts (see the module doc).

    ``add(masks, maps)`` one chunk at a time (a mask of ``None`` = all background), then
    :meth:`metrics`, :meth:`pro_curve` and :meth:`confusion_counts`. Memory is O(occupied bins), not
    O(pixels); the chunk's own arrays are freed when ``add`` returns.
    """

    def __init__(self, pixel_threshold: float | None = None, mantissa_bits: int = 15):
        if not 0 <= int(mantissa_bits) <= 23:
            from defectforge.errors import ConfigError

            raise ConfigError(f"mantissa_bits must be in 0..23, got {mantissa_bits}")
        self.mantissa_bits = int(mantissa_bits)
        self._shift = 23 - self.mantissa_bits
        self.pixel_threshold = (None if pixel_threshold is None or not np.isfinite(pixel_threshold)
                                else float(pixel_threshold))
        self.keys = np.zeros(0, np.uint32)
        self.bg = np.zeros(0, np.int64)
        self.fg = np.zeros(0, np.int64)
        self.pro = np.zeros(0, np.float64)
        self.lo = np.zeros(0)  # smallest and largest value in each bin (as given, float64): a bin
        self.hi = np.zeros(0)  # holding one value only (ties) adds no error
        self.n_regions = 0
        self.n_images = 0
        self.min = np.inf
        self.max = -np.inf
        self._conf = [0, 0, 0, 0]  # tp, fp, fn, tn at pixel_threshold

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.keys, self.bg, self.fg, self.pro, self.lo, self.hi)))

    def add(self, masks: Sequence[Any] | None, maps: Sequence[Any], first: int | None = None) -> None:
        """Fold one chunk of maps (HxW each) and their masks into the histograms (``first``: the
        index of the chunk's first image in error messages; default: images so far)."""
        if masks is not None and len(masks) != len(maps):
            raise InputError(None, f"masks has {len(masks)} entries but maps has {len(maps)}")
        vals, fgs, ws = [], [], []
        for j, amap in enumerate(maps):
            i = (self.n_images if first is None else first) + j
            a = _map_2d(amap, i)
            if not np.isfinite(a).all():
                try:
                    _check_finite(a, f"map {i}")
                except InputError as exc:
                    raise InputError(None, f"image {i}: {exc}") from None
            m = _mask_bool(masks[j], i, a.shape) if masks is not None else None
            if m is None:
                m = np.zeros(a.shape, bool)
            vals.append(a.reshape(-1) + a.dtype.type(0.0))  # + 0: -0.0 -> 0.0
            fgs.append(m.reshape(-1))
            w = np.zeros(a.shape)
            if m.any():
                w, n = region_weights(m)
                self.n_regions += n
            ws.append(w.reshape(-1))
            self.min = min(self.min, float(a.min()))
            self.max = max(self.max, float(a.max()))
            if self.pixel_threshold is not None:
                self._count(a >= self.pixel_threshold, m)
        self.n_images += len(maps)
        if not vals:
            return
        v = np.concatenate(vals)
        del vals
        order = np.argsort(v, kind="stable")
        v = v[order]
        k = _sortable_keys(v, self._shift)
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        ends = np.r_[starts[1:], v.shape[0]]
        fg = np.concatenate(fgs)[order]
        w = np.concatenate(ws)[order]
        del fgs, ws, order
        fg_c = np.add.reduceat(fg.astype(np.int64), starts)
        self._merge(k[starts], np.diff(np.r_[starts, v.shape[0]]) - fg_c, fg_c,
                    np.add.reduceat(w, starts), v[starts], v[ends - 1])

    def _count(self, pred: np.ndarray, m: np.ndarray) -> None:
        t, p, g = int(np.count_nonzero(pred & m)), int(np.count_nonzero(pred)), int(np.count_nonzero(m))
        self._conf[0] += t
        self._conf[1] += p - t
        self._conf[2] += g - t
        self._conf[3] += pred.size - p - g + t

    def _merge(self, uk: np.ndarray, bg: np.ndarray, fg: np.ndarray, pro: np.ndarray,
               lo: np.ndarray, hi: np.ndarray) -> None:
        keys = np.concatenate([self.keys, uk])
        merged, inv = np.unique(keys, return_inverse=True)
        n = merged.shape[0]
        self.bg = np.bincount(inv, weights=np.concatenate([self.bg, bg]), minlength=n).astype(np.int64)
        self.fg = np.bincount(inv, weights=np.concatenate([self.fg, fg]), minlength=n).astype(np.int64)
        self.pro = np.bincount(inv, weights=np.concatenate([self.pro, pro]), minlength=n)
        new_lo, new_hi = np.full(n, np.inf), np.full(n, -np.inf)
        np.minimum.at(new_lo, inv, np.concatenate([self.lo, lo]))
        np.maximum.at(new_hi, inv, np.concatenate([self.hi, hi]))
        self.keys, self.lo, self.hi = merged, new_lo, new_hi

    # ------------------------------------------------------------------ results
    def _cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cumulative (fps, tps, pro_sum) from the top bin down, one entry per bin."""
        return (np.cumsum(self.bg[::-1]), np.cumsum(self.fg[::-1]), np.cumsum(self.pro[::-1]))

    def counts(self) -> tuple[int, int]:
        n_fg = int(self.fg.sum())
        return n_fg, int(self.bg.sum())

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, pro)`` at every occupied bin edge (points of the exact curve), from (0, 0)."""
        fps, _, pro_sum = self._cumulative()
        n_bg = max(int(fps[-1]), 1) if fps.size else 1
        fpr = np.r_[0.0, fps / n_bg]
        pro = np.r_[0.0, np.minimum(pro_sum / max(self.n_regions, 1), 1.0)]
        return fpr, pro

    def confusion_counts(self) -> dict[str, int] | None:
        """Exact pixel ``{"tp", "fp", "fn", "tn"}`` of ``map >= pixel_threshold`` (None without one)."""
        if self.pixel_threshold is None:
            return None
        return dict(zip(("tp", "fp", "fn", "tn"), self._conf))

    def metrics(self, fpr_limit: float = 0.3, *, nan_on_undefined: bool = False) -> dict[str, Any]:
        """``pixel_auroc``, ``pixel_ap``, ``aupro``, ``pixel_f1_at_threshold`` (exact), and
        ``pixel_metrics_max_error`` (the proven bound of each curve metric) and ``pixel_bins``."""
        fpr_limit = _check_fpr_limit(fpr_limit)
        n_fg, n_bg = self.counts()
        fps, tps, pro_sum = self._cumulative()
        mixed = (self.lo != self.hi)[::-1]  # bins holding more than one distinct value
        fg_r, bg_r = self.fg[::-1] * mixed.astype(np.float64), self.bg[::-1].astype(np.float64)
        err: dict[str, float | None] = {"pixel_auroc": None, "pixel_ap": None, "aupro": None}
        out: dict[str, Any] = {}
        if n_fg == 0 or n_bg == 0:
            out["pixel_auroc"] = _undefined(_class_counts_message("pixel AUROC", n_fg, n_bg, "pixels"),
                                            nan_on_undefined)
        else:
            out["pixel_auroc"] = _auroc_from_counts(fps, tps)
            err["pixel_auroc"] = 0.5 * float(np.dot(fg_r, bg_r)) / (float(n_fg) * float(n_bg))
        if n_fg == 0:
            out["pixel_ap"] = _undefined("pixel AP is undefined: no defect pixel in the masks "
                                         f"({n_bg} background pixels); pass nan_on_undefined=True to get NaN",
                                         nan_on_undefined)
        else:
            out["pixel_ap"] = _ap_from_counts(fps, tps)
            err["pixel_ap"] = _ap_bound(fps, tps, fg_r, n_fg)
        if self.n_regions == 0 or n_bg == 0:
            out["aupro"] = _undefined(f"AUPRO is undefined: the masks hold {self.n_regions} defect region(s) "
                                      f"and {n_bg} background pixel(s); both are needed (pass "
                                      "nan_on_undefined=True to get NaN)", nan_on_undefined)
        else:
            fpr, pro = self.pro_curve()
            out["aupro"] = _area_to_limit(fpr, pro, fpr_limit)
            err["aupro"] = _pro_bound(fpr, pro, fpr_limit, mixed)
        out["pixel_f1_at_threshold"] = None
        if self.pixel_threshold is not None:
            tp, fp, fn, _ = self._conf
            out["pixel_f1_at_threshold"] = (2.0 * tp / (2 * tp + fp + fn) if n_fg else
                                            _undefined("F1 is undefined: the masks hold no defect pixel",
                                                       nan_on_undefined))
        out["pixel_metrics_max_error"] = err
        out["pixel_bins"] = int(self.keys.shape[0])
        out["pixel_bin_mantissa_bits"] = self.mantissa_bits
        return out


def _ap_bound(fps: np.ndarray, tps: np.ndarray, fg_r: np.ndarray, n_fg: int) -> float:
    """Max |binned AP - exact AP|: inside bin k every exact point has TP in (T0, T1] and FP in
    [F0, F1], so its precision lies in [(T0+1)/(T0+1+F1), T1/(T1+F0)] (``fg_r`` is 0 for bins
    of one value, where the binned point is the exact one)."""
    t1, f1 = tps.astype(np.float64), fps.astype(np.float64)
    t0, f0 = np.r_[0.0, t1[:-1]], np.r_[0.0, f1[:-1]]
    has = fg_r > 0
    p_here = np.divide(t1, t1 + f1, out=np.zeros_like(t1), where=has)
    p_min = np.divide(t0 + 1, t0 + 1 + f1, out=np.zeros_like(t1), where=has)
    p_max = np.divide(t1, t1 + f0, out=np.ones_like(t1), where=has & (t1 + f0 > 0))
    gap = np.maximum(p_max - p_here, p_here - p_min)
    return float(np.dot(fg_r[has], gap[has])) / float(n_fg)


def _pro_bound(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float, mixed: np.ndarray) -> float:
    """Max |binned AUPRO - exact AUPRO|: each segment below the limit is off by at most half
    its box, the segment crossing the limit by at most its whole (cut) box; a bin of one
    value is one segment of the exact curve too."""
    df, dp = np.diff(fpr), np.diff(pro) * mixed
    below = fpr[1:] <= fpr_limit
    total = 0.5 * float(np.dot(df[below], dp[below]))
    k = np.flatnonzero(~below)
    if k.size and fpr[k[0]] < fpr_limit:
        total += (fpr_limit - fpr[k[0]]) * dp[k[0]]
    return min(total / fpr_limit, 1.0)


def _key_to_float(k: np.ndarray, shift: int) -> np.ndarray:
    """The smallest float32 value of each bin (inverse of :func:`_sortable_keys`)."""
    u = np.asarray(k, np.uint32) << np.uint32(shift)
    pos = (u >> 31).astype(bool)
    bits = np.where(pos, u ^ np.uint32(0x80000000), ~u)
    return bits.view(np.float32).astype(np.float64)


def accumulator_quantile(acc: PixelAccumulator, q: float) -> float:
    """The ``q`` quantile of all pixels seen, to within one bin (the bin's lower edge,
    clipped to the observed range); ``nan`` before any pixel."""
    total = acc.bg + acc.fg
    if not total.size:
        return float("nan")
    c = np.cumsum(total)
    i = int(np.searchsorted(c, q * c[-1], side="left"))
    v = float(_key_to_float(acc.keys[min(i, c.size - 1):][:1], acc._shift)[0])
    return min(max(v, acc.min), acc.max)
