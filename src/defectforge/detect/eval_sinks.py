"""Where ``evaluate_detector`` puts each scored chunk (:mod:`defectforge.detect.evaluate`).

:class:`ExactSink` keeps every map and mask for the exact pixel metrics (one global sort);
:class:`StreamSink` folds each chunk into a
:class:`~defectforge.metrics.streaming.PixelAccumulator` and drops it, keeping only the maps
that can still become example panels, so its memory does not grow with the number of images.
Both take chunks in any order (``start`` says where they go).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ExactSink", "StreamSink", "pick_examples"]


class ExactSink:
    """Keeps every map and mask (the exact path): pixel metrics from one global sort."""

    def __init__(self, n: int):
        self.maps: list[Any] = [None] * n
        self.masks: list[Any] = [None] * n
        self.scores = np.full(n, np.nan)
        self.n_maps = 0
        self.curves: dict[str, Any] = {}  # the PRO curve of finish's sort

    def add(self, start: int, sc: np.ndarray, maps: list[np.ndarray] | None, masks: list[Any]) -> None:
        self.scores[start:start + len(sc)] = sc
        self.masks[start:start + len(masks)] = masks
        if maps is not None:
            self.maps[start:start + len(maps)] = maps
            self.n_maps += len(maps)

    @property
    def has_maps(self) -> bool:
        return self.n_maps == len(self.maps)

    def finish(self, is_def, scores, thr, pthr) -> tuple[dict[str, Any], tuple[Any, Any], dict[str, Any]]:
        from defectforge.metrics import evaluate_anomaly

        pix = self.has_maps
        metrics = evaluate_anomaly(is_def, scores, self.masks if pix else None, self.maps if pix else None,
                                   threshold=thr, pixel_threshold=pthr if pix else None, nan_on_undefined=True,
                                   curves=self.curves)
        if pix:
            metrics["pixel_metrics_max_error"] = {"pixel_auroc": 0.0, "pixel_ap": 0.0, "aupro": 0.0}
        return metrics, ((self.masks, self.maps) if pix else (None, None)), {}

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        from defectforge.metrics import pro_curve

        if "pro" in self.curves:  # kept from finish: no second global sort
            return self.curves["pro"]
        if self.has_maps and any(m is not None and m.any() for m in self.masks):
            return pro_curve(self.masks, self.maps)
        return None

    def scale(self, pixel_threshold: float | None) -> Any:
        from defectforge.report.panels import map_scale

        return map_scale(pixel_threshold, self.maps)


class StreamSink:
    """The bounded path: each chunk goes into a :class:`PixelAccumulator` and is dropped,
    except the maps that can still become example panels (top / bottom ``n`` by score)."""

    def __init__(self, is_def: np.ndarray, n_examples: int, pthr: float | None, pixel_metrics: bool):
        from defectforge.metrics.streaming import PixelAccumulator

        self.is_def = is_def
        self.n = n_examples
        self.pixel_metrics = pixel_metrics
        self.acc = PixelAccumulator(pthr if pixel_metrics else None)
        self.scores = np.full(len(is_def), np.nan)
        self.maps: dict[int, np.ndarray] = {}
        self.masks: dict[int, Any] = {}
        self.n_maps = 0

    def add(self, start: int, sc: np.ndarray, maps: list[np.ndarray] | None, masks: list[Any]) -> None:
        self.scores[start:start + len(sc)] = sc
        if maps is None:
            return
        self.acc.add(masks if self.pixel_metrics else None, maps, first=start)
        self.n_maps += len(maps)
        for j, (a, m) in enumerate(zip(maps, masks)):
            self.maps[start + j], self.masks[start + j] = a, m
        keep = _candidates(self.scores, self.is_def, self.n)
        for i in [i for i in self.maps if i not in keep]:
            del self.maps[i], self.masks[i]

    @property
    def has_maps(self) -> bool:
        return self.n_maps == len(self.scores)

    def finish(self, is_def, scores, thr, pthr) -> tuple[dict[str, Any], tuple[Any, Any], dict[str, Any]]:
        from defectforge.metrics import evaluate_anomaly

        metrics = evaluate_anomaly(is_def, scores, threshold=thr, nan_on_undefined=True)
        extra: dict[str, Any] = {}
        if self.has_maps and self.pixel_metrics:
            metrics.update(self.acc.metrics(metrics["aupro_fpr_limit"], nan_on_undefined=True))
            extra["pixel_confusion"] = _confusion(self.acc)
        return metrics, (None, None), extra

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        n_fg, n_bg = self.acc.counts()
        if self.has_maps and self.pixel_metrics and self.acc.n_regions and n_bg:
            return self.acc.pro_curve()
        return None

    def scale(self, pixel_threshold: float | None) -> Any:
        from defectforge.metrics.streaming import accumulator_quantile
        from defectforge.report.panels import MapScale, map_scale

        if pixel_threshold is not None and np.isfinite(pixel_threshold):
            return map_scale(pixel_threshold, [np.full((1, 1), self.acc.min)])
        hi = accumulator_quantile(self.acc, 0.999)
        return MapScale(self.acc.min, hi if hi > self.acc.min else self.acc.min + 1.0, None)


def _confusion(acc: Any) -> dict[str, Any]:
    """The pixel confusion dict of :func:`defectforge.report.threshold.pixel_confusion`, from
    the accumulator's exact counts."""
    from defectforge.report.threshold import _rates, confusion_counts

    c = acc.confusion_counts()
    if c is None:
        return confusion_counts([], [], None)
    return {"threshold": acc.pixel_threshold, "tp": c["tp"], "fp": c["fp"], "tn": c["tn"], "fn": c["fn"],
            **_rates(c["tp"], c["fp"], c["fn"])}


def _ranked(scores: np.ndarray, idx: np.ndarray, ascending: bool) -> np.ndarray:
    """``idx`` by score descending, ties by index (or the exact reverse when ``ascending``)."""
    order = idx[np.lexsort((idx, -scores[idx]))]
    return order[::-1] if ascending else order


def _candidates(scores: np.ndarray, is_def: np.ndarray, n: int) -> set[int]:
    """Indices (among those scored so far) that can still be picked by :func:`pick_examples`."""
    seen = ~np.isnan(scores)
    d_idx, g_idx = np.flatnonzero(seen & is_def), np.flatnonzero(seen & ~is_def)
    out = set(_ranked(scores, d_idx, False)[:n].tolist()) | set(_ranked(scores, d_idx, True)[:n].tolist())
    return out | set(_ranked(scores, g_idx, False)[:n].tolist())


def pick_examples(scores: np.ndarray, is_def: np.ndarray, n: int) -> list[tuple[int, str]]:
    """Best-scored defects, worst (lowest-scored) defects, worst (highest) goods."""
    order_d = _ranked(scores, np.flatnonzero(is_def), False)
    picks = [(int(i), "best defect") for i in order_d[:n]]
    picks += [(int(i), "worst defect") for i in order_d[::-1][:n] if int(i) not in {p for p, _ in picks}]
    picks += [(int(i), "worst good") for i in _ranked(scores, np.flatnonzero(~is_def), False)[:n]]
    return picks
