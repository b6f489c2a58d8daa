"""Fast Point Feature Histograms (FPFH), vectorised numpy/scipy, pure kNN neighbourhoods.

Definition used here (Rusu et al. 2009, our own implementation; no open3d):

- For a pair (s, t) with unit normals ``n_s, n_t`` and ``d = p_t - p_s``: the source is
  the point whose normal makes the smaller angle with the line (``|n_s.d| >= |n_t.d|``,
  otherwise the pair is swapped and ``d`` negated). Darboux frame ``u = n_s``,
  ``v = unit(d x u)``, ``w = u x v``; features ``alpha = atan2(w.n_t, u.n_t)`` in
  [-pi, pi], ``phi = u.d/|d|`` in [-1, 1] and ``theta = v.n_t`` in [-1, 1]. Each is
  binned into ``bins`` (11) equal bins over its range.
- SPFH(p): the three histograms over p's ``k`` nearest neighbours (the point itself
  excluded), each scaled to sum 100.
- FPFH(p) = SPFH(p) + sum_j w_j SPFH(j) over the same neighbours with inverse-distance
  weights normalised to sum 1 (``w_j ~ 1 / |p - p_j|``; the classic ``1/(k d)`` weight
  would make the feature depend on the units), then each 11-bin block re-scaled to sum
  100.

Neighbourhoods are pure kNN (no radius), as Simple3D's MSND does, which makes the
feature scale-free. Every quantity is built from dot/cross products of differences and
normals, so it is invariant to rigid motions when the normals rotate with the cloud
(:func:`pca_normals_centroid` does). :func:`multiscale_fpfh` concatenates FPFH at several
``k`` (default 40/80/120 -> 99 values) from one kNN query.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

BINS = 11


def pca_normals_centroid(points: np.ndarray, k: int = 10, tree: cKDTree | None = None) -> np.ndarray:
    """Unit PCA normals from ``k`` nearest neighbours, flipped away from the centroid.

    Cheap, deterministic and rotation-equivariant (the MST orientation of
    :func:`defectforge.synth3d.geometry.estimate_normals` is more faithful on bores but
    costs more and depends on the pose through its seed point).
    """
    from defectforge.synth3d.geometry import pca_normals

    pts = np.asarray(points, dtype=np.float64)
    n = pca_normals(pts, k=min(k, len(pts)), tree=tree)
    flip = np.einsum("ij,ij->i", pts - pts.mean(axis=0), n) < 0
    n[flip] *= -1
    return n


def pair_features(ps: np.ndarray, ns: np.ndarray, pt: np.ndarray, nt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha, phi, theta) of the point pairs (ps, ns) -> (pt, nt); arrays (..., 3).

    Coincident pairs give (0, 0, 0).
    """
    d = pt - ps
    dist = np.linalg.norm(d, axis=-1)
    safe = np.where(dist > 0, dist, 1.0)
    d = d / safe[..., None]
    a1 = np.einsum("...i,...i->...", ns, d)
    a2 = np.einsum("...i,...i->...", nt, d)
    swap = np.abs(a1) < np.abs(a2)
    u = np.where(swap[..., None], nt, ns)
    other = np.where(swap[..., None], ns, nt)
    d = np.where(swap[..., None], -d, d)
    v = np.cross(d, u)
    vn = np.linalg.norm(v, axis=-1)
    v = v / np.where(vn > 0, vn, 1.0)[..., None]
    w = np.cross(u, v)
    alpha = np.arctan2(np.einsum("...i,...i->...", w, other), np.einsum("...i,...i->...", u, other))
    phi = np.einsum("...i,...i->...", u, d)
    theta = np.einsum("...i,...i->...", v, other)
    zero = (dist <= 0) | (vn <= 0)
    alpha = np.where(zero, 0.0, alpha)
    phi = np.where(zero, 0.0, phi)
    theta = np.where(zero, 0.0, theta)
    return alpha, phi, theta


def _bin(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    b = np.floor((x - lo) / (hi - lo) * bins).astype(np.int64)
    return np.clip(b, 0, bins - 1)


def spfh(points: np.ndarray, normals: np.ndarray, nbr: np.ndarray, bins: int = BINS, chunk: int = 8192) -> np.ndarray:
    """Simplified PFH (N, 3*bins) from neighbour indices ``nbr`` (N, k) (self excluded)."""
    N, k = nbr.shape
    out = np.zeros((N, 3 * bins), dtype=np.float64)
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        idx = nbr[s:e]
        ps = points[s:e, None, :]
        ns = normals[s:e, None, :]
        alpha, phi, theta = pair_features(np.broadcast_to(ps, idx.shape + (3,)), np.broadcast_to(ns, idx.shape + (3,)),
                                          points[idx], normals[idx])
        rows = np.repeat(np.arange(e - s) * (3 * bins), k)
        for j, (val, lo, hi) in enumerate(((alpha, -np.pi, np.pi), (phi, -1.0, 1.0), (theta, -1.0, 1.0))):
            flat = rows + j * bins + _bin(val.reshape(-1), lo, hi, bins)
            out[s:e] += np.bincount(flat, minlength=(e - s) * 3 * bins).reshape(e - s, 3 * bins)
    return out * (100.0 / k)


def _normalise_blocks(h: np.ndarray, bins: int) -> np.ndarray:
    h = h.reshape(len(h), 3, bins)
    tot = h.sum(axis=2, keepdims=True)
    h = h * (100.0 / np.where(tot > 0, tot, 1.0))
    return h.reshape(len(h), 3 * bins)


def fpfh_from_neighbours(points: np.ndarray, normals: np.ndarray, nbr: np.ndarray, dist: np.ndarray,
                         bins: int = BINS) -> np.ndarray:
    """FPFH (N, 3*bins) float32 given kNN indices ``nbr`` and distances ``dist`` (N, k), self excluded."""
    pts = np.asarray(points, dtype=np.float64)
    nrm = np.asarray(normals, dtype=np.float64)
    N, k = nbr.shape
    sp = spfh(pts, nrm, nbr, bins)
    w = 1.0 / np.maximum(dist, 1e-12)
    w = w / w.sum(axis=1, keepdims=True)
    W = sparse.csr_matrix((w.reshape(-1), nbr.reshape(-1), np.arange(0, N * k + 1, k)), shape=(N, N))
    return _normalise_blocks(sp + W @ sp, bins).astype(np.float32)


def multiscale_fpfh(points: np.ndarray, normals: np.ndarray | None = None, ks: tuple[int, ...] = (40, 80, 120),
                    normal_k: int = 10, tree: cKDTree | None = None, bins: int = BINS) -> np.ndarray:
    """FPFH at each ``k`` of ``ks`` concatenated: (N, 3*bins*len(ks)) float32.

    ``k`` is capped at ``N - 1``. Normals are estimated with
    :func:`pca_normals_centroid` (``normal_k`` neighbours) when not given.
    """
    pts = np.ascontiguousarray(points, dtype=np.float64)
    tree = tree if tree is not None else cKDTree(pts)
    if normals is None:
        normals = pca_normals_centroid(pts, normal_k, tree)
    kmax = int(min(max(ks), len(pts) - 1))
    dist, idx = tree.query(pts, k=kmax + 1, workers=-1)
    dist, idx = dist[:, 1:], idx[:, 1:]
    feats = []
    for k in ks:
        kk = int(min(k, kmax))
        feats.append(fpfh_from_neighbours(pts, normals, idx[:, :kk], dist[:, :kk], bins))
    return np.concatenate(feats, axis=1)


def fpfh_reference(points: np.ndarray, normals: np.ndarray, k: int, bins: int = BINS) -> np.ndarray:
    """Slow per-point loop of the same definition, for tests on tiny clouds."""
    import math

    pts = np.asarray(points, dtype=np.float64)
    nrm = np.asarray(normals, dtype=np.float64)
    N = len(pts)
    nbrs = []
    for i in range(N):
        d = [math.dist(pts[i], pts[j]) for j in range(N)]
        order = sorted(range(N), key=lambda j: (d[j], j))
        nbrs.append([j for j in order if j != i][:k])
    sp = np.zeros((N, 3 * bins))
    for i in range(N):
        for j in nbrs[i]:
            a, ph, th = (float(x) for x in pair_features(pts[i], nrm[i], pts[j], nrm[j]))
            sp[i, min(bins - 1, max(0, math.floor((a + math.pi) / (2 * math.pi) * bins)))] += 100.0 / k
            sp[i, bins + min(bins - 1, max(0, math.floor((ph + 1) / 2 * bins)))] += 100.0 / k
            sp[i, 2 * bins + min(bins - 1, max(0, math.floor((th + 1) / 2 * bins)))] += 100.0 / k
    out = np.zeros_like(sp)
    for i in range(N):
        acc = sp[i].copy()
        inv = {j: 1.0 / max(math.dist(pts[i], pts[j]), 1e-12) for j in nbrs[i]}
        tot_w = sum(inv.values())
        for j in nbrs[i]:
            acc += sp[j] * inv[j] / tot_w
        for b in range(3):
            block = acc[b * bins:(b + 1) * bins]
            tot = block.sum()
            out[i, b * bins:(b + 1) * bins] = block * 100.0 / tot if tot > 0 else block
    return out
