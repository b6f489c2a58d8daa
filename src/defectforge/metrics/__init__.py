"""Honest evaluation metrics.

- :mod:`defectforge.metrics.anomaly`: image AUROC / AP / F1 and thresholds, and
  :func:`evaluate_anomaly` (every metric of a test set in one dict), all on raw scores (no
  sigmoid, no normalisation, no clamping); the conventions are in its docstring.
- :mod:`defectforge.metrics.pixel`: pooled pixel AUROC / AP and exact AUPRO (re-exported by
  :mod:`.anomaly`); :mod:`defectforge.metrics.streaming`: the same in bounded memory.
- :mod:`defectforge.metrics.detection`: COCO-convention box mAP50 / mAP50-95.
"""

from defectforge.metrics.anomaly import (
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
    pro_curve,
    roc_curve,
    select_threshold,
)
from defectforge.metrics.detection import COCO_IOU_THRESHOLDS, box_iou, mean_average_precision

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "ThresholdFallbackWarning",
    "UndefinedMetricError",
    "aupro",
    "auroc",
    "average_precision",
    "box_iou",
    "evaluate_anomaly",
    "f1_at",
    "f1_max",
    "mean_average_precision",
    "pixel_ap",
    "pixel_auroc",
    "pr_curve",
    "pro_curve",
    "roc_curve",
    "select_threshold",
]
