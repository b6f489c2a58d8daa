"""3D (point-cloud) anomaly detection.

- :class:`~defectforge.detect3d.bank.FPFHBank` (``"fpfh"``): training-free multi-scale
  FPFH memory bank, CPU-first (Simple3D-style).
- :class:`~defectforge.detect3d.pointnet.PointTransformerAD` (``"pointnet"``): a small
  point transformer trained on synthetic (synth3d operator) anomalies, scored by
  prototype matching against normal features, optionally fused with its supervised head.

Both return :class:`defectforge.detect.base.Prediction` (``anomaly_map`` = per-point
scores of each cloud). Loaders: :mod:`defectforge.detect3d.data`; metrics:
:mod:`defectforge.detect3d.metrics`; evaluation: :func:`defectforge.detect3d.evaluate.evaluate_detector3d`; CLI: ``defectforge detect3d fit|predict|eval``.
"""

from __future__ import annotations

from defectforge.detect3d.base import DETECTORS3D, Detector3D, get_detector3d, load_models3d, save_models

__all__ = ["DETECTORS3D", "Detector3D", "get_detector3d", "load_models3d", "save_models"]
