"""COCO-style box mAP (mAP50 and mAP50-95) for supervised defect detectors.

Follows the pycocotools ``COCOeval`` bbox conventions (area range "all"):

- IoU on continuous coordinates: ``w = x1 - x0`` (no +1), boxes as
  :class:`defectforge.data.Box` with ``x1, y1`` exclusive.
- Per image and class, detections are sorted by descending score (stable, so ties keep input
  order) and only the top ``max_detections`` (100) are kept. Note: like pycocotools, this
  limit is applied per image *and class*, which is what COCOeval actually does.
- Greedy matching in that order: each detection takes the still-unmatched ground truth with
  the highest IoU, if that IoU is ``>= t`` (ties go to the later ground truth, as COCOeval).
- Per class and IoU threshold, detections of all images are ranked by score (stable, image
  order breaks ties), precision is made monotone (the envelope) and sampled at the 101 recall
  points 0, 0.01, ..., 1 (first point with recall >= r; 0 beyond the reached recall).
  AP = mean of those 101 precisions.
- IoU thresholds 0.50:0.05:0.95; mAP50-95 averages over thresholds and classes, mAP50 over
  classes at IoU 0.5. A class without ground truth in any image is excluded from the means
  (its per-class entry is ``None``).
- ``iscrowd`` / ignore regions are **not supported**: every ground-truth box counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from defectforge.errors import ConfigError, InputError
from defectforge.metrics.anomaly import UndefinedMetricError

__all__ = ["COCO_IOU_THRESHOLDS", "box_iou", "mean_average_precision"]

COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
#: COCO's object sizes by box area in pixels (small < 32^2 <= medium < 96^2 <= large; both
#: ends of each range count, as in COCOeval)
AREA_RANGES: dict[str, tuple[float, float]] = {"small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
                                                "large": (96.0 ** 2, 1e10)}


def _box_array(boxes: Sequence[Any], what: str, image: int, need_score: bool
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(K,4) x0,y0,x1,y1 float64, (K,) scores, labels; validates coordinates and scores."""
    coords = np.zeros((len(boxes), 4), dtype=np.float64)
    scores = np.zeros(len(boxes), dtype=np.float64)
    labels: list[str] = []
    for j, b in enumerate(boxes):
        try:
            c = (float(b.x0), float(b.y0), float(b.x1), float(b.y1))
        except (AttributeError, TypeError, ValueError):
            raise InputError(None, f"image {image}: {what} {j} is not a Box with x0,y0,x1,y1 "
                             f"({b!r})") from None
        if not all(math.isfinite(v) for v in c):
            raise InputError(None, f"image {image}: {what} {j} has non-finite coordinates {c}")
        if c[2] < c[0] or c[3] < c[1]:
            raise InputError(None, f"image {image}: {what} {j} has x1 < x0 or y1 < y0 {c}")
        coords[j] = c
        if need_score:
            sc = getattr(b, "score", None)
            if sc is None or not math.isfinite(float(sc)):
                raise InputError(None, f"image {image}: prediction {j} needs a finite score, "
                                 f"got {sc!r}")
            scores[j] = float(sc)
        labels.append(str(getattr(b, "label", "defect")))
    return coords, scores, labels


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of x0,y0,x1,y1 boxes, COCO style (``w = x1 - x0``).

    A pair whose union is empty (two zero-area boxes) has IoU 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def _match_image(gt: np.ndarray, dt: np.ndarray, thresholds: np.ndarray,
                 gt_ignore: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(tp, matched_ignored)``, both (T, D) bool, for detections already in score order.

    Without ``gt_ignore`` this is plain greedy matching. With it (COCOeval's area ranges),
    ``gt`` must list the counted boxes first: a detection prefers a counted ground truth
    and only falls back to an ignored one, and a match to an ignored one is reported in
    ``matched_ignored`` (the detection is then left out, neither TP nor FP)."""
    n_t, n_d, n_g = thresholds.shape[0], dt.shape[0], gt.shape[0]
    tp = np.zeros((n_t, n_d), dtype=bool)
    ign = np.zeros((n_t, n_d), dtype=bool)
    if n_d == 0 or n_g == 0:
        return tp, ign
    ious = box_iou(dt, gt).tolist()  # plain lists: the boxes of one image and class are few
    gi = [False] * n_g if gt_ignore is None else [bool(x) for x in gt_ignore]
    n_keep = n_g - sum(gi)  # counted boxes come first
    for ti, t in enumerate(thresholds):
        need = min(float(t), 1 - 1e-10)  # as COCOeval: a threshold of 1 accepts IoU ~ 1
        taken = [False] * n_g
        for d in range(n_d):
            row = ious[d]
            m = -1
            for lo, hi in ((0, n_keep), (n_keep, n_g)):  # counted first, then ignored
                best = need
                for j in range(lo, hi):  # the free ground truth with the highest IoU; ties -> the last
                    if not taken[j] and row[j] >= best:
                        best, m = row[j], j
                if m >= 0:
                    break
            if m < 0:
                continue
            taken[m] = True
            if gi[m]:
                ign[ti, d] = True
            else:
                tp[ti, d] = True
    return tp, ign


def _coco_ap(tp_sorted: np.ndarray, n_gt: int) -> float:
    """101-point interpolated AP for one class and threshold (detections in rank order)."""
    if tp_sorted.shape[0] == 0:
        return 0.0
    tp_cum = np.cumsum(tp_sorted, dtype=np.float64)
    fp_cum = np.cumsum(~tp_sorted, dtype=np.float64)
    recall = tp_cum / n_gt
    precision = tp_cum / (tp_cum + fp_cum)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    sampled = np.where(idx < envelope.shape[0], envelope[np.minimum(idx, envelope.shape[0] - 1)],
                       0.0)
    return float(sampled.mean())


def mean_average_precision(ground_truth: Sequence[Sequence[Any]],
                           predictions: Sequence[Sequence[Any]],
                           iou_thresholds: Sequence[float] | None = None,
                           classes: Sequence[str] | None = None, *,
                           max_detections: int = 100,
                           nan_on_undefined: bool = False) -> dict[str, Any]:
    """COCO box mAP of ``predictions`` against ``ground_truth`` (one list of Box per image).

    Predictions must carry ``score``. ``classes`` restricts the evaluation to those labels
    (other boxes are ignored); by default every label seen in ground truth or predictions.

    Returns ``{"map50", "map50_95", "map_small", "map_medium", "map_large", "per_class":
    {name: {"ap50", "ap50_95", "n_gt", "n_pred"}}, "n_images", "iou_thresholds",
    "max_detections"}``; ``map_small/medium/large`` are COCO's APs/APm/APl (mAP50-95 over the
    boxes of that size, :data:`AREA_RANGES`, box area; ``None`` when no ground truth has it). ``map50`` is ``None`` when 0.5 is not
    among ``iou_thresholds``; per-class APs are ``None`` for a class without ground truth
    (excluded from the means). Raises :class:`UndefinedMetricError` when no evaluated class has
    any ground truth (``nan_on_undefined=True``: NaN). See the module docstring for the exact
    conventions.
    """
    if len(ground_truth) != len(predictions):
        raise InputError(None, f"ground_truth has {len(ground_truth)} images but predictions "
                         f"has {len(predictions)}")
    if max_detections < 1:
        raise ConfigError(f"max_detections must be >= 1, got {max_detections}")
    thr = np.asarray(COCO_IOU_THRESHOLDS if iou_thresholds is None else iou_thresholds,
                     dtype=np.float64).reshape(-1)
    if thr.size == 0 or not np.all((thr > 0) & (thr <= 1)):
        raise ConfigError(f"iou_thresholds must be a non-empty list in (0, 1], got {thr.tolist()}")

    images = []
    seen: set[str] = set()
    for i, (gts, dts) in enumerate(zip(ground_truth, predictions)):
        g = _box_array(list(gts or []), "ground-truth box", i, need_score=False)
        d = _box_array(list(dts or []), "prediction", i, need_score=True)
        seen.update(g[2])
        seen.update(d[2])
        images.append((g, d))
    names = sorted(seen) if classes is None else [str(c) for c in classes]

    i50 = np.flatnonzero(np.isclose(thr, 0.5))
    per_class: dict[str, dict[str, Any]] = {}
    ap_table = []  # (n_classes_with_gt, T)
    by_size: dict[str, list[float]] = {k: [] for k in AREA_RANGES}
    for name in names:
        parts = _class_matches(images, name, thr, max_detections)
        aps, n_gt, n_pred = _class_aps(parts, thr, None)
        entry: dict[str, Any] = {"ap50": None, "ap50_95": None, "n_gt": n_gt, "n_pred": n_pred}
        if aps is not None:
            ap_table.append(aps)
            entry["ap50_95"] = float(aps.mean())
            entry["ap50"] = float(aps[i50[0]]) if i50.size else None
        for size, rng in AREA_RANGES.items():
            aps_s, _, _ = _class_aps(parts, thr, rng)
            if aps_s is not None:
                by_size[size].append(float(aps_s.mean()))
        per_class[name] = entry

    out: dict[str, Any] = {"per_class": per_class, "n_images": len(images),
                           "iou_thresholds": [float(t) for t in thr],
                           "max_detections": int(max_detections)}
    if not ap_table:
        msg = ("mAP is undefined: no ground-truth box of the evaluated classes "
               f"{names} in {len(images)} image(s) (pass nan_on_undefined=True to get NaN)")
        if not nan_on_undefined:
            raise UndefinedMetricError(msg)
        out["map50"] = float("nan") if i50.size else None
        out["map50_95"] = float("nan")
        out.update({f"map_{size}": None for size in AREA_RANGES})
        return out
    table = np.stack(ap_table)
    out["map50_95"] = float(table.mean())
    out["map50"] = float(table[:, i50[0]].mean()) if i50.size else None
    for size, vals in by_size.items():  # COCO APs / APm / APl (None: no box of that size)
        out[f"map_{size}"] = float(np.mean(vals)) if vals else None
    return out


def _class_matches(images: list, name: str, thr: np.ndarray, max_detections: int) -> list[tuple]:
    """Per image: ``(gt boxes, detections in score order, their scores, TP matrix)`` of one class."""
    out = []
    for (gc, _, gl), (dc, ds, dl) in images:
        gmask = np.fromiter((lab == name for lab in gl), dtype=bool, count=len(gl))
        dmask = np.fromiter((lab == name for lab in dl), dtype=bool, count=len(dl))
        g, d, s = gc[gmask], dc[dmask], ds[dmask]
        order = np.argsort(-s, kind="mergesort")[:max_detections]
        d, s = d[order], s[order]
        out.append((g, d, s, _match_image(g, d, thr)[0]))
    return out


def _class_aps(parts: list[tuple], thr: np.ndarray, area_range: tuple[float, float] | None
               ) -> tuple[np.ndarray | None, int, int]:
    """``(AP per IoU threshold or None without counted ground truth, n_gt, n_pred)`` of one
    class; ``area_range`` (lo, hi): ground truth outside it is ignored, and so are unmatched
    detections outside it (COCOeval's small / medium / large)."""
    n_gt = n_pred = 0
    scores_all, tp_all, keep_all = [], [], []
    for g, d, s, tp in parts:
        keep = np.ones_like(tp)
        if area_range is None:
            n_gt += g.shape[0]
        else:
            lo, hi = area_range
            g_out = ~_in_range(_areas(g), lo, hi)
            if g_out.all():  # every ground truth ignored: any match makes the detection ignored
                tp, ign = np.zeros_like(tp), tp
            elif g_out.any():  # mixed: match again, counted boxes first (as COCOeval)
                order = np.argsort(g_out, kind="mergesort")
                tp, ign = _match_image(g[order], d, thr, g_out[order])
            else:  # nothing ignored: the plain matching holds
                ign = np.zeros_like(tp)
            d_out = ~_in_range(_areas(d), lo, hi)
            keep = ~(ign | (~tp & d_out[None, :]))
            n_gt += int((~g_out).sum())
        n_pred += d.shape[0]
        scores_all.append(s)
        tp_all.append(tp)
        keep_all.append(keep)
    if n_gt == 0:
        return None, n_gt, n_pred
    s = np.concatenate(scores_all) if scores_all else np.zeros(0)
    tp = np.concatenate(tp_all, axis=1) if tp_all else np.zeros((thr.shape[0], 0), dtype=bool)
    keep = np.concatenate(keep_all, axis=1) if keep_all else np.zeros((thr.shape[0], 0), dtype=bool)
    rank = np.argsort(-s, kind="mergesort")
    aps = np.array([_coco_ap(tp[ti, rank][keep[ti, rank]], n_gt) for ti in range(thr.shape[0])])
    return aps, n_gt, n_pred


def _areas(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _in_range(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (a >= lo) & (a <= hi)  # both ends included, as COCOeval
