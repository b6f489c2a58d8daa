"""Rotation-invariant local shape descriptors from neighbourhood PCA (network inputs).

For every point and each neighbourhood size ``k`` of ``ks`` (default 16 and 48 points,
two scales) the covariance of the ``k`` nearest points gives eigenvalues
``l1 >= l2 >= l3`` with sum ``S``. Five values per scale:

- ``l1/S, l2/S, l3/S``: linearity / planarity / scattering profile (``l3/S`` is the
  classic surface-variation "curvature"); small bumps and dents raise ``l3/S``, edges
  raise ``l1/S``.
- ``sqrt(S) / unit``: the neighbourhood's spread, relative to ``unit`` (the caller's
  point spacing), which drops where points are missing (cracks, holes).
- ``(p - mean) . n / sqrt(S)``: the signed height of the point above its neighbourhood's
  mean along the point's normal (oriented away from the cloud centroid), so a bump and
  a dent differ in sign.

All of them are invariant to rotations and translations of the cloud (eigenvalues and
dot products), which is why they suit augmentation by random rotation.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

SHAPE_KS = (16, 48)
PER_SCALE = 5


def local_shape_features(points: np.ndarray, normals: np.ndarray, ks: tuple[int, ...] = SHAPE_KS,
                         unit: float = 1.0, tree: cKDTree | None = None) -> np.ndarray:
    """(N, 5 * len(ks)) float32 descriptors (see the module docstring)."""
    pts = np.asarray(points, dtype=np.float64)
    nrm = np.asarray(normals, dtype=np.float64)
    tree = tree if tree is not None else cKDTree(pts)
    kmax = int(min(max(ks), len(pts)))
    _, idx = tree.query(pts, k=kmax, workers=-1)
    out = []
    for k in ks:
        k = int(min(k, kmax))
        nb = pts[idx[:, :k]]  # (N, k, 3), the point itself included
        mean = nb.mean(axis=1)
        c = nb - mean[:, None, :]
        cov = np.einsum("nki,nkj->nij", c, c) / k
        ev = np.clip(np.linalg.eigvalsh(cov)[:, ::-1], 0.0, None)  # descending
        s = np.maximum(ev.sum(axis=1), 1e-18)
        height = np.einsum("ni,ni->n", pts - mean, nrm) / np.sqrt(s)
        out.append(np.column_stack([ev / s[:, None], np.sqrt(s) / unit, height]))
    return np.concatenate(out, axis=1).astype(np.float32)
