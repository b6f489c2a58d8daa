"""3D (point-cloud) anomaly detection.

- :class:`~defectforge.detect3d.bank.FPFHBank` (``"fpfh"``): training-free multi-scale
  FPFH memory bank, CPU-first (Simple3D-style).
- :class:`~defectforge.detect3d.pointnet.PointTransformerAD` (``"pointnet"``): a small
  point transformer trained on synthetic (synth3d operator) anomalies, scored by
  prototype matching against normal features, optionally fused with its supervised head.

Both return :class:`defectforge.detect.base.Prediction` (``anomaly_map`` = per-point
scores of each cloud). Loaders: :mod:`defectforge.detect3d.data`; metrics:
:mod:`defectforge.detect3d.metrics`; CLI: ``defectforge detect3d fit|predict|eval``.
"""

from __future__ import annotations

from typing import Any

DETECTORS_3D = ("fpfh", "pointnet")


def detector_classes() -> dict[str, type]:
    """Class name -> class of every 3D detector (imports them)."""
    from defectforge.detect3d.bank import FPFHBank
    from defectforge.detect3d.pointnet import PointTransformerAD

    return {"FPFHBank": FPFHBank, "PointTransformerAD": PointTransformerAD}


def get_detector3d(name: str, **kwargs: Any):
    """A new, unfitted 3D detector by name (``"fpfh"`` or ``"pointnet"``)."""
    from defectforge.errors import ConfigError

    key = name.lower()
    if key == "fpfh":
        from defectforge.detect3d.bank import FPFHBank

        return FPFHBank(**kwargs)
    if key == "pointnet":
        from defectforge.detect3d.pointnet import PointTransformerAD

        return PointTransformerAD(**kwargs)
    raise ConfigError(f"unknown 3D detector {name!r}; available: {', '.join(DETECTORS_3D)}")
