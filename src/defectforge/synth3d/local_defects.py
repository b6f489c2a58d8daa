"""Local MPAS operators: 1D point primitives (``bump``, ``dent``, ``pit``) and 1D line
primitives (``scratch``, ``groove``) (contract and details in :mod:`.operators`)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from defectforge.synth3d.surface import (
    LABEL_THRESHOLD,
    MIN_LENGTH_RATIO,
    OpResult,
    Surface,
    SynthesisError,
    _finish,
    _mean_normal,
    _pick_center,
    _rc,
    _surface,
    _tangent_frame,
    _unit,
)


def _point_primitive(kind: str, points, normals, rng, *, surface=None, center=None, radius=0.04, depth=0.01,
                     normal_gate=-0.5, label_threshold=LABEL_THRESHOLD) -> OpResult:
    s = _surface(points, normals, surface)
    ci = _pick_center(s, rng, center)
    r = radius * s.diag
    idx = np.asarray(s.tree.query_ball_point(s.points[ci], r), dtype=np.int64)
    nc = _mean_normal(s, idx, s.normals[ci])
    idx = idx[s.normals[idx] @ nc > normal_gate]  # skip the far side of thin walls
    d = np.linalg.norm(s.points[idx] - s.points[ci], axis=1) / r
    if kind == "pit":
        w = np.clip(1.0 - d ** 2, 0.0, None) ** 2
    else:
        w = _rc(d)
    sign = 1.0 if kind == "bump" else -1.0
    disp = (sign * depth * s.diag * w)[:, None] * nc
    info = {"operator": kind, "primitive": "1D-point", "center_index": ci, "center": s.points[ci].tolist(),
            "normal": nc.tolist(), "params": {"radius": radius, "depth": depth, "normal_gate": normal_gate},
            "radius_abs": r, "depth_abs": depth * s.diag}
    return _finish(s, idx, disp, info, label_threshold=label_threshold)


def bump(points, normals, rng, **kw) -> OpResult:
    """Raised-cosine bump of height ``depth * diag`` over a ball of ``radius * diag``."""
    return _point_primitive("bump", points, normals, rng, **kw)


def dent(points, normals, rng, **kw) -> OpResult:
    """Raised-cosine dent (inward) of depth ``depth * diag``."""
    return _point_primitive("dent", points, normals, rng, **kw)


def pit(points, normals, rng, **kw) -> OpResult:
    """A steep-walled pit: squared-paraboloid profile, inward."""
    kw.setdefault("radius", 0.015)
    kw.setdefault("depth", 0.008)
    return _point_primitive("pit", points, normals, rng, **kw)


# --------------------------------------------------------------------------- 1D line


def _geodesic_path(s: Surface, i0: int, i1: int, radius: float, k: int = 8) -> tuple[np.ndarray, bool]:
    """Surface path from i0 to i1: Dijkstra on a kNN graph of the points within
    ``radius`` of the endpoints' midpoint (local, so cost does not grow with the cloud)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    mid = 0.5 * (s.points[i0] + s.points[i1])
    local = np.asarray(s.tree.query_ball_point(mid, radius), dtype=np.int64)
    if len(local) < k + 2 or not np.isin([i0, i1], local).all():
        return _snapped_segment(s, i0, i1), False
    sub = s.points[local]
    dist, nb = cKDTree(sub).query(sub, k=k + 1)
    rows = np.repeat(np.arange(len(sub)), k)
    graph = csr_matrix((dist[:, 1:].reshape(-1) + 1e-12, (rows, nb[:, 1:].reshape(-1))), shape=(len(sub), len(sub)))
    a = int(np.flatnonzero(local == i0)[0])
    b = int(np.flatnonzero(local == i1)[0])
    dd, pred = dijkstra(graph, directed=False, indices=a, return_predecessors=True)
    if not np.isfinite(dd[b]):
        return _snapped_segment(s, i0, i1), False
    path = [b]
    while path[-1] != a:  # backtracking is inherently sequential; a few hundred steps at most
        path.append(int(pred[path[-1]]))
    return sub[np.array(path[::-1])], True


def _snapped_segment(s: Surface, i0: int, i1: int, n: int = 50) -> np.ndarray:
    """Fallback path: the straight segment, each sample snapped to its nearest cloud point."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    _, nearest = s.tree.query(s.points[i0] * (1 - t) + s.points[i1] * t)
    keep = np.concatenate([[True], nearest[1:] != nearest[:-1]])
    return s.points[nearest[keep]]


def _resample_polyline(poly: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    total = arc[-1]
    if total <= 0:
        return poly[:1], np.zeros(1)
    t = np.linspace(0.0, total, max(2, int(np.ceil(total / step)) + 1))
    out = np.stack([np.interp(t, arc, poly[:, j]) for j in range(3)], axis=1)
    return out, t / total


def _line_primitive(kind: str, points, normals, rng, *, surface=None, center=None, length=0.15, width=0.006,
                    depth=0.003, profile="rc", taper=0.15, sign=-1.0, direction=None, normal_gate=-0.5,
                    label_threshold=LABEL_THRESHOLD) -> OpResult:
    s = _surface(points, normals, surface)
    ci = _pick_center(s, rng, center)
    L, w = length * s.diag, width * s.diag
    n0 = s.normals[ci]
    if direction is None:
        u, _ = _tangent_frame(n0, rng)
    else:
        u = _unit(np.asarray(direction, dtype=np.float64) - np.dot(direction, n0) * n0)
    # end point: the surface point nearest to start + L u, then search the path locally
    _, cj = s.tree.query(s.points[ci] + L * u)
    cj = int(cj)
    if cj == ci:
        raise SynthesisError(f"{kind}: no surface point lies along the requested length {length} x diag from this "
                             "centre (the part ends there, or the length is below the point spacing)")
    chord = float(np.linalg.norm(s.points[cj] - s.points[ci]))
    path, geodesic = _geodesic_path(s, ci, cj, radius=0.75 * max(chord, L) + 2 * w)
    dense, along = _resample_polyline(path, step=max(w / 3, 1e-12))
    # smooth normals along the path (nearest surface normal, moving average)
    _, pn = s.tree.query(dense)
    pnorm = s.normals[pn]
    kern = np.ones(5) / 5
    pnorm = _unit(np.stack([np.convolve(np.pad(pnorm[:, j], 2, mode="edge"), kern, "valid") for j in range(3)], axis=1))
    mid = 0.5 * (dense.min(axis=0) + dense.max(axis=0))
    reach = 0.5 * float(np.linalg.norm(dense.max(axis=0) - dense.min(axis=0))) + w
    cand = np.asarray(s.tree.query_ball_point(mid, reach), dtype=np.int64)
    dist, j = cKDTree(dense).query(s.points[cand], distance_upper_bound=w)
    inside = np.isfinite(dist) & (dist < w)
    cand, dist, j = cand[inside], dist[inside], j[inside]
    keep = np.einsum("ij,ij->i", s.normals[cand], pnorm[j]) > normal_gate
    cand, dist, j = cand[keep], dist[keep], j[keep]
    t = dist / w
    across = {"rc": _rc(t), "v": 1.0 - t, "u": np.sqrt(np.clip(1.0 - t ** 2, 0, None))}.get(profile)
    if across is None:
        raise SynthesisError(f"{kind}: unknown profile {profile!r} (use rc, v or u)")
    a = along[j]
    end = np.minimum(a, 1.0 - a) / max(taper, 1e-9)
    taper_w = 0.5 * (1.0 - np.cos(np.pi * np.clip(end, 0.0, 1.0))) if taper > 0 else np.ones_like(a)
    disp = (np.sign(sign) * depth * s.diag * across * taper_w)[:, None] * pnorm[j]
    info = {"operator": kind, "primitive": "1D-line", "center_index": ci, "end_index": cj,
            "center": s.points[ci].tolist(), "path": path.tolist(), "geodesic": geodesic,
            "path_length_abs": float(np.linalg.norm(np.diff(dense, axis=0), axis=1).sum()),
            "params": {"length": length, "width": width, "depth": depth, "profile": profile, "taper": taper,
                       "sign": float(np.sign(sign)), "normal_gate": normal_gate}, "length_abs": L}
    res = _finish(s, cand, disp, info, label_threshold=label_threshold)
    # achieved length: the surface path, and the span along it of the labelled points
    # (shorter than the path by the tapered ends that stay under the label threshold)
    total = info["path_length_abs"]
    a_lab = a[res.mask[cand]]
    span = float((a_lab.max() - a_lab.min()) * total)
    res.info["achieved"].update(length_abs=total, length=total / s.diag, length_ratio=total / L,
                                labelled_length_abs=span, labelled_length=span / s.diag)
    if total < MIN_LENGTH_RATIO * L:
        raise SynthesisError(f"{kind}: the surface path is only {total / L:.2f}x the requested length "
                             f"{length} x diag (the part ends there); another centre is needed")
    return res


def scratch(points, normals, rng, **kw) -> OpResult:
    """A narrow, shallow scratch along a surface path (default: into the surface)."""
    return _line_primitive("scratch", points, normals, rng, **kw)


def groove(points, normals, rng, **kw) -> OpResult:
    """A wider, U-profiled groove along a surface path."""
    kw.setdefault("width", 0.012)
    kw.setdefault("depth", 0.005)
    kw.setdefault("profile", "u")
    return _line_primitive("groove", points, normals, rng, **kw)


# --------------------------------------------------------------------------- 2D plane
