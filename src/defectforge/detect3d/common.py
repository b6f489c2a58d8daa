"""Shared 3D detector pieces: input checks, spatial normalisation (SDN), farthest-point
sampling, inverse-distance interpolation, score smoothing and the object score.

Spatial-distribution normalisation (SDN), used by both 3D detectors
--------------------------------------------------------------------
1. **Centre** each cloud on its bounding-box centre (robust to partial scans that shift
   the mean less than the box, and to uneven sampling density).
2. **Scale per category**: at fit time the category scale ``s`` is the median over the
   training clouds of the largest distance of a point from its centre (the unit-ball
   radius). Every cloud of the category, train or test, is divided by the same ``s``,
   so relative sizes inside a category are kept (a shrunk part stays detectable) and a
   partial scan is not blown up to the unit ball. With ``scale="cloud"`` each cloud is
   divided by its own radius instead (scale-free; use it when units are unknown).
3. **Fixed voxel** in normalised space (``voxel``, default 0.02 of the unit-ball
   radius): one point per voxel, so neighbourhood sizes in points mean the same physical
   size for every cloud. If more than ``max_points`` remain the voxel grows by 10 %
   steps until they fit (MulSen-AD's rule in Simple3D).

Scale check: a cloud whose radius differs from the category scale by more than
``max_scale_ratio`` (default 4x) is refused with an :class:`~defectforge.errors.InputError`
("... different units?"), since a mm/m or mm/inch mix-up otherwise gives meaningless
scores silently. Pass ``scale="cloud"`` to accept any scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from defectforge.errors import ConfigError, InputError
from defectforge.synth3d.cloud import PointCloud, check_cloud

MIN_POINTS = 200


def as_cloud(item: Any, i: int = 0) -> tuple[np.ndarray, str]:
    """(points (N, 3) float64, source name) from a PointCloud, array, or path; checked."""
    if isinstance(item, (str, Path)):
        from defectforge.synth3d.cloud_io import read_cloud

        cloud = read_cloud(item)
        return check_cloud(cloud.points, item, MIN_POINTS), str(item)
    if isinstance(item, PointCloud):
        src = str(item.meta.get("source", f"cloud {i}"))
        return check_cloud(item.points, src, MIN_POINTS), src
    if hasattr(item, "gt_kind") and hasattr(item, "load"):  # a Cloud3DSample
        cloud = item.load()
        return check_cloud(cloud.points, item.path, MIN_POINTS), str(item.path)
    return check_cloud(np.asarray(item), f"cloud {i}", MIN_POINTS), f"cloud {i}"


def bbox_centre(points: np.ndarray) -> np.ndarray:
    return 0.5 * (points.min(axis=0) + points.max(axis=0))


def radius(points: np.ndarray) -> float:
    """Largest distance of a point from the bounding-box centre."""
    return float(np.linalg.norm(points - bbox_centre(points), axis=1).max())


@dataclass
class SDN:
    """Spatial-distribution normalisation (see the module docstring)."""

    scale: str = "category"
    voxel: float = 0.02
    max_points: int = 20000
    max_scale_ratio: float = 4.0
    category_scale: float | None = None

    def __post_init__(self) -> None:
        if self.scale not in ("category", "cloud"):
            raise ConfigError(f"scale must be 'category' or 'cloud', got {self.scale!r}")
        if not self.voxel > 0:
            raise ConfigError(f"voxel must be positive, got {self.voxel}")
        if self.max_points < MIN_POINTS:
            raise ConfigError(f"max_points must be at least {MIN_POINTS}, got {self.max_points}")

    def fit(self, clouds: list[tuple[np.ndarray, str]]) -> "SDN":
        radii = np.array([radius(p) for p, _ in clouds])
        self.category_scale = float(np.median(radii))
        if self.scale == "category":
            for (p, src), r in zip(clouds, radii):
                self._check_ratio(r, src, "the other training clouds")
        return self

    def _check_ratio(self, r: float, source: str, what: str) -> None:
        ratio = r / self.category_scale
        if ratio > self.max_scale_ratio or ratio < 1.0 / self.max_scale_ratio:
            raise InputError(source, f"cloud size {r:.4g} is {ratio:.3g} x the median size of {what} "
                                     f"({self.category_scale:.4g}): different units? Convert it, or use "
                                     "scale='cloud' (--scale cloud) to normalise every cloud on its own")

    def normalise(self, points: np.ndarray, source: str = "cloud", *, check: bool = True) -> np.ndarray:
        """Centred and scaled copy of ``points`` (same rows)."""
        if self.category_scale is None:
            raise ConfigError("SDN is not fitted")
        c = points - bbox_centre(points)
        r = float(np.linalg.norm(c, axis=1).max())
        if self.scale == "cloud":
            return c / r
        if check:
            self._check_ratio(r, source, "the training clouds")
        return c / self.category_scale

    def downsample(self, npts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(points, index into npts, voxel used) on the fixed voxel grid, grown until <= max_points."""
        from defectforge.synth3d.geometry import voxel_downsample

        v = self.voxel
        while True:
            pts, idx = voxel_downsample(npts, v)
            if len(pts) <= self.max_points:
                return pts, idx, v
            v *= 1.1

    def to_dict(self) -> dict:
        return {"scale": self.scale, "voxel": self.voxel, "max_points": self.max_points,
                "max_scale_ratio": self.max_scale_ratio, "category_scale": self.category_scale}


def farthest_point_sampling(points: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``m`` points by farthest-point sampling from a seeded random start."""
    pts = np.asarray(points, dtype=np.float32)
    N = len(pts)
    m = int(min(m, N))
    out = np.empty(m, dtype=np.int64)
    i = int(rng.integers(N))
    mind = np.full(N, np.inf, dtype=np.float32)
    for j in range(m):
        out[j] = i
        d = pts - pts[i]
        np.minimum(mind, np.einsum("ij,ij->i", d, d), out=mind)
        i = int(np.argmax(mind))
    return out


def idw_interpolate(src: np.ndarray, values: np.ndarray, dst: np.ndarray, k: int = 3,
                    tree: cKDTree | None = None) -> np.ndarray:
    """Values at ``dst`` by inverse-distance weighting of the ``k`` nearest ``src`` points."""
    k = int(min(k, len(src)))
    tree = tree if tree is not None else cKDTree(src)
    d, i = tree.query(dst, k=k, workers=-1)
    if k == 1:
        return np.asarray(values)[i]
    w = 1.0 / np.maximum(d, 1e-8)
    w /= w.sum(axis=1, keepdims=True)
    return (np.asarray(values)[i] * w).sum(axis=1)


def knn_smooth(points: np.ndarray, values: np.ndarray, k: int = 12, tree: cKDTree | None = None) -> np.ndarray:
    """Mean of each point's ``k`` nearest values (the point included)."""
    if k <= 1:
        return np.asarray(values, dtype=np.float64)
    tree = tree if tree is not None else cKDTree(points)
    _, i = tree.query(points, k=int(min(k, len(points))), workers=-1)
    return np.asarray(values, dtype=np.float64)[i].mean(axis=1)


def topk_mean(values: np.ndarray, k: int) -> float:
    """Mean of the ``k`` largest values (all when fewer)."""
    v = np.asarray(values, dtype=np.float64)
    k = int(max(1, min(k, len(v))))
    return float(np.partition(v, len(v) - k)[len(v) - k:].mean())
