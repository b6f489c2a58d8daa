"""The surface an operator works on (points, normals, a k-d tree, the diagonal), the result
type, label thresholds and the helpers every operator shares (:mod:`.operators`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from defectforge.errors import ConfigError
from defectforge.synth3d.cloud import bbox_diag, check_cloud

LABEL_THRESHOLD = 0.001
"""Default label threshold (fraction of the diagonal): a point is labelled defective only
when an operator displaced it by at least this much (recorded per defect)."""
MIN_LENGTH_RATIO = 0.5
"""A line defect whose surface path is shorter than this fraction of the requested
length is refused (a short path at a part's end), so records never overstate a defect."""


class SynthesisError(ConfigError):
    """An operator could not produce a valid defect with the given parameters/location."""


class OpResult(NamedTuple):
    points: np.ndarray
    normals: np.ndarray
    mask: np.ndarray
    info: dict[str, Any]


class Surface:
    """A checked cloud with its KD-tree, diag and centroid, built once and reused."""

    def __init__(self, points: np.ndarray, normals: np.ndarray | None = None, *, tree: cKDTree | None = None,
                 source: str = "point cloud"):
        self.points = check_cloud(points, source)
        self.source = source
        self._tree = tree
        if normals is None:
            from defectforge.synth3d.geometry import estimate_normals

            normals = estimate_normals(self.points, tree=self.tree)
        normals = np.asarray(normals, dtype=np.float64)
        norm = np.linalg.norm(normals, axis=1, keepdims=True)
        if normals.shape != self.points.shape or not np.isfinite(normals).all() or (norm < 1e-12).any():
            raise SynthesisError(f"{source}: normals must be finite, non-zero and one per point")
        self.normals = normals / norm
        self.diag = bbox_diag(self.points)
        self.centroid = self.points.mean(axis=0)

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.points)
        return self._tree

    def __len__(self) -> int:
        return len(self.points)


def _surface(points, normals, surface: Surface | None) -> Surface:
    if surface is not None:
        return surface
    return Surface(points, normals)


def _rc(t: np.ndarray) -> np.ndarray:
    """Raised cosine: 1 at t = 0, 0 at t >= 1."""
    return 0.5 * (1.0 + np.cos(np.pi * np.clip(t, 0.0, 1.0)))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)


def _tangent_frame(n: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random orthonormal tangent pair (u, v) at unit normal ``n``."""
    a = np.array([1.0, 0, 0]) if abs(n[0]) < 0.9 else np.array([0, 1.0, 0])
    u0 = _unit(np.cross(n, a))
    v0 = np.cross(n, u0)
    t = rng.uniform(0, 2 * np.pi)
    u = np.cos(t) * u0 + np.sin(t) * v0
    return u, np.cross(n, u)


def _pick_center(s: Surface, rng: np.random.Generator, center: int | None) -> int:
    if center is None:
        return int(rng.integers(len(s)))
    center = int(center)
    if not 0 <= center < len(s):
        raise SynthesisError(f"centre index {center} is outside the cloud (0..{len(s) - 1})")
    return center


def _mean_normal(s: Surface, idx: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    m = s.normals[idx].sum(axis=0)
    nrm = np.linalg.norm(m)
    return m / nrm if nrm > 1e-9 * len(idx) else fallback


def refresh_normals(s: Surface, new_points: np.ndarray, idx: np.ndarray, k: int = 12) -> np.ndarray:
    """Normals after displacing rows ``idx``: PCA over the *original* neighbours (the
    topology is unchanged by a displacement) at the new positions, oriented like before."""
    normals = s.normals.copy()
    if len(idx) == 0:
        return normals
    _, nb = s.tree.query(s.points[idx], k=min(k, len(s)))
    q = new_points[nb] - new_points[nb].mean(axis=1, keepdims=True)
    _, vecs = np.linalg.eigh(np.einsum("nki,nkj->nij", q, q))
    n = vecs[:, :, 0]
    n[np.einsum("ij,ij->i", n, s.normals[idx]) < 0] *= -1
    normals[idx] = n
    return normals


def _finish(s: Surface, idx: np.ndarray, disp: np.ndarray, info: dict, min_points: int = 3,
            normals: np.ndarray | None = None, label_threshold: float = LABEL_THRESHOLD) -> OpResult:
    """Apply per-point displacement ``disp`` to rows ``idx``.

    The mask is exactly the rows displaced by at least ``label_threshold * diag`` (every
    row is displaced as computed, so the surface stays smooth; rows moved by less are
    left unlabelled and ``info["max_unlabelled_displacement"]`` says how little they
    moved). ``info["achieved"]`` holds what the labelled points really reach (largest
    displacement, radius around the centre) next to the requested ``params``.
    """
    if not 0.0 <= label_threshold < 1.0:
        raise SynthesisError(f"{info['operator']}: label_threshold must be in [0, 1) (x diag), got {label_threshold}")
    mag = np.linalg.norm(disp, axis=1)
    moved = mag > 0
    idx, disp, mag = idx[moved], disp[moved], mag[moved]
    thr = label_threshold * s.diag
    lab = mag >= thr if thr > 0 else np.ones(len(idx), dtype=bool)
    if len(idx) < min_points:
        raise SynthesisError(f"{info['operator']}: the defect moves only {len(idx)} points; "
                             f"increase its size (diag = {s.diag:.4g}, {len(s)} points)")
    if not lab.any():
        raise SynthesisError(f"{info['operator']}: no point moves by the label threshold {label_threshold:g} x diag; "
                             f"increase its size or depth (diag = {s.diag:.4g}, {len(s)} points)")
    pts = s.points.copy()
    pts[idx] += disp
    mask = np.zeros(len(pts), dtype=bool)
    mask[idx[lab]] = True
    info["params"]["label_threshold"] = float(label_threshold)
    achieved = {"max_displacement_abs": float(mag.max()), "max_displacement": float(mag.max() / s.diag)}
    if "center" in info:
        r = float(np.linalg.norm(s.points[idx[lab]] - np.asarray(info["center"]), axis=1).max())
        achieved.update(radius_abs=r, radius=r / s.diag)
    info.update(n_support=int(lab.sum()), n_moved=int(len(idx)), label_threshold_abs=float(thr),
                max_unlabelled_displacement=float(mag[~lab].max(initial=0.0)),
                max_displacement=float(mag.max()), max_displacement_ratio=float(mag.max() / s.diag),
                achieved=achieved)
    out_normals = normals if normals is not None else refresh_normals(s, pts, idx)
    return OpResult(pts, out_normals, mask, info)


# --------------------------------------------------------------------------- 1D point
