"""The point-cloud value type and the checks every 3D entry point runs on its input.

A :class:`PointCloud` is ``points`` (N, 3) float64, optional ``normals`` (N, 3) and
optional integer ``labels`` (N,), all aligned row by row. :func:`check_cloud` rejects
empty, non-finite, flat and tiny clouds with one clear line naming the source, because
every later step (normals, diag-relative parameters, masks) silently misbehaves on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectforge.errors import InputError

MIN_POINTS = 50


@dataclass
class PointCloud:
    """Points with optional per-point normals and labels (rows aligned)."""

    points: np.ndarray
    normals: np.ndarray | None = None
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, dtype=np.float64).reshape(-1, 3)
        n = len(self.points)
        if self.normals is not None:
            self.normals = np.ascontiguousarray(self.normals, dtype=np.float64).reshape(-1, 3)
            if len(self.normals) != n:
                raise ValueError(f"normals have {len(self.normals)} rows for {n} points")
        if self.labels is not None:
            self.labels = np.asarray(self.labels).reshape(-1).astype(np.int64)
            if len(self.labels) != n:
                raise ValueError(f"labels have {len(self.labels)} rows for {n} points")

    def __len__(self) -> int:
        return len(self.points)

    @property
    def diag(self) -> float:
        return bbox_diag(self.points)

    def subset(self, index: np.ndarray) -> "PointCloud":
        """Rows ``index`` (bool mask or integer indices) of every per-point array."""
        return PointCloud(
            self.points[index],
            None if self.normals is None else self.normals[index],
            None if self.labels is None else self.labels[index],
            dict(self.meta),
        )


def bbox_diag(points: np.ndarray) -> float:
    """Length of the axis-aligned bounding-box diagonal, the unit of every 3D parameter."""
    if len(points) == 0:
        return 0.0
    return float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))


MAX_COORD = 1e15
"""Largest coordinate magnitude :func:`check_cloud` accepts (far-from-origin scans near 1e9 keep working)."""


def check_cloud(points: np.ndarray, source: str | Path | None = "point cloud", min_points: int = MIN_POINTS) -> np.ndarray:
    """Return ``points`` as (N, 3) float64 or raise :class:`InputError` naming ``source``.

    Rejects: wrong shape, fewer than ``min_points`` points, NaN/inf coordinates, a
    degenerate extent (all points equal, or a bounding-box diagonal below 1e-9), and flat
    or linear clouds (PCA: second extent below 1e-6 of the first), since surface normals
    and a 3D part size are undefined for them. Planar clouds (third extent ~0) are
    allowed: a flat sheet is a valid scan.
    """
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(source, f"expected an (N, 3) array of points, got shape {arr.shape}")
    if len(arr) == 0:
        raise InputError(source, "point cloud is empty")
    if len(arr) < min_points:
        raise InputError(source, f"point cloud has only {len(arr)} points (need at least {min_points})")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InputError(source, f"{int(bad.sum())} of {len(arr)} points have NaN or infinite coordinates")
    big = float(np.abs(arr).max())
    if big > MAX_COORD:  # squared distances (normals, KD-trees) would overflow to inf
        raise InputError(source, f"coordinates up to {big:.3g} are beyond {MAX_COORD:.0e}: not a scan in any "
                                 "length unit (rescale the cloud)")
    diag = bbox_diag(arr)
    if diag < 1e-9:
        raise InputError(source, f"point cloud is degenerate: bounding-box diagonal {diag:.3g} (all points at one place)")
    centred = arr - arr.mean(axis=0)
    sample = centred if len(centred) <= 20000 else centred[:: len(centred) // 20000 + 1]
    sv = np.linalg.svd(sample / diag, compute_uv=False)
    if sv[1] < 1e-6 * sv[0]:
        raise InputError(source, "point cloud is degenerate: all points lie on a line")
    return arr
