"""MPAS-style defect operators on point clouds with exact point-wise masks.

Every operator has the contract::

    op(points, normals, rng, *, surface=None, center=None, **params) -> OpResult
    OpResult(points, normals, mask, info)      # unpacks as a 4-tuple

``mask`` is a bool array aligned with the *output* points; it marks exactly the points
the operator displaced by at least ``label_threshold`` x diag (displacement operators;
default :data:`LABEL_THRESHOLD`, recorded in ``info``; points moved by less stay
unlabelled and ``info["max_unlabelled_displacement"]`` bounds their motion) or the walls
left by removed points (crack). ``info["achieved"]`` records what the labelled points
really reach (displacement, radius, line length) next to the requested ``params``. It is carried as an index mask, never recovered by coordinate matching. All
lengths are fractions of the bounding-box diagonal ``diag``; randomness only comes from
``rng``. ``info`` records the primitive, the centre, the support size, the largest
displacement and every value actually used. Deleting operators also return
``info["kept"]``, the input index of each output point.

Primitives (section 2 of docs/synthesis-3d.md, reimplemented):

- 1D point: ``bump``, ``dent``, ``pit`` — raised-cosine (pit: squared paraboloid)
  displacement along the outward normal of a ball around a surface point.
- 1D line: ``scratch``, ``groove`` — a geodesic path (Dijkstra on a kNN graph built only
  inside a ball around the two endpoints) widened into a tube, with a profile across
  (raised cosine, V or U) and a taper along the path.
- 2D plane: ``bend`` — a smooth Barr bend about a hinge line (PCA long axis or a given
  plane), continuous across the hinge zone; ``crack`` — removal of a lens-shaped slab
  through a surface point, the crack walls are the mask.
- 3D free-form: ``freeform`` / ``bulge`` / ``sink`` — support = region points inside the
  2D convex hull of sampled surface points; Gaussian, smooth-noise or surface-fit
  height field; raised-cosine falloff from the hull boundary; IDW local smoothing.

Compound defects: :func:`compose` applies steps in sequence and ORs the masks (masks
of earlier steps are re-indexed through ``kept`` when points are removed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from defectforge.errors import ConfigError
from defectforge.registry import Registry
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


def _pca_axes(pts: np.ndarray) -> np.ndarray:
    c = pts - pts.mean(axis=0)
    sample = c if len(c) <= 50000 else c[:: len(c) // 50000 + 1]
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    return vt  # rows: long, width, thick


def bend(points, normals, rng, *, surface=None, center=None, angle=12.0, position=None, zone=0.04,
         hinge_point=None, hinge_normal=None, label_threshold=LABEL_THRESHOLD) -> OpResult:
    """Smooth bend of the part about a hinge line (Barr bend).

    The hinge plane has normal ``e1`` (PCA long axis, or ``hinge_normal``) through the
    hinge point: ``center`` if given, else ``hinge_point``, else the point at fraction
    ``position`` (default U(0.6, 0.85)) of the extent along ``e1``. Points with signed
    distance ``s > 0`` are bent towards ``e3`` (the thickness axis) by ``angle`` degrees,
    progressively over a zone of ``zone * diag`` (continuous, no tearing) and rigidly
    beyond it. The mask is every displaced point (the bent portion); ``info["hinge_band"]``
    holds the MPAS-style band ``0 <= s <= zone`` for those who want the fold line only.
    The point count never changes (no remeshing, no resampling).
    """
    s = _surface(points, normals, surface)
    axes = _pca_axes(s.points)
    e1 = _unit(np.asarray(hinge_normal, dtype=np.float64)) if hinge_normal is not None else axes[0]
    if rng.random() < 0.5 and hinge_normal is None:
        e1 = -e1
    e3 = axes[2] - np.dot(axes[2], e1) * e1
    if np.linalg.norm(e3) < 1e-6:
        e3 = axes[1] - np.dot(axes[1], e1) * e1
    e3 = _unit(e3) * (1.0 if rng.random() < 0.5 else -1.0)
    e2 = np.cross(e3, e1)
    proj = (s.points - s.centroid) @ e1
    if center is not None:
        h = s.points[_pick_center(s, rng, center)]
    elif hinge_point is not None:
        h = np.asarray(hinge_point, dtype=np.float64)
    else:
        position = float(rng.uniform(0.6, 0.85)) if position is None else float(position)
        h = s.centroid + (proj.min() + position * (proj.max() - proj.min())) * e1
    d = s.points - h
    sc, tc = d @ e1, d @ e3
    theta = np.deg2rad(angle)
    if abs(theta) < 1e-9:
        raise SynthesisError("bend: angle must be non-zero")
    b = max(zone * s.diag, 1e-12)
    rho = b / theta
    sel = np.flatnonzero(sc > 0)
    ss, tt = sc[sel], tc[sel]
    phi = np.where(ss <= b, ss / rho, theta)
    extra = np.where(ss <= b, 0.0, ss - b)
    s_new = (rho - tt) * np.sin(phi) + extra * np.cos(phi)
    t_new = rho - (rho - tt) * np.cos(phi) + extra * np.sin(phi)
    new = s.points[sel] + np.outer(s_new - ss, e1) + np.outer(t_new - tt, e3)
    disp = new - s.points[sel]
    # normals rotate with the local bend angle phi about e2 (e1 -> e3)
    n = s.normals[sel]
    n1, n3, n2 = n @ e1, n @ e3, n @ e2
    c, si = np.cos(phi), np.sin(phi)
    rot_n = np.outer(n1 * c - n3 * si, e1) + np.outer(n1 * si + n3 * c, e3) + np.outer(n2, e2)
    normals_out = s.normals.copy()
    normals_out[sel] = rot_n
    band = sel[ss <= b]
    info = {"operator": "bend", "primitive": "2D-plane", "center": h.tolist(), "hinge_normal": e1.tolist(),
            "bend_axis": e2.tolist(), "bend_towards": e3.tolist(), "hinge_band": band,
            "params": {"angle": float(angle), "position": position, "zone": zone}}
    return _finish(s, sel, disp, info, normals=normals_out, label_threshold=label_threshold)


def crack(points, normals, rng, *, surface=None, center=None, length=0.2, gap=0.008, depth=0.05,
          wall_k=5, direction=None) -> OpResult:
    """A crack: remove a lens-shaped slab through a surface point; the walls are the mask.

    The slab contains the crack direction ``u`` (a random tangent) and the inward normal;
    its half-width is ``gap/2 * sqrt(1 - (2x/L)^2) * (1 - 0.6 d/depth)`` (widest at the
    surface centre, closing towards the ends and the bottom). Removed points go; the
    ``wall_k`` nearest *remaining* neighbours of every removed point are labelled.
    ``info["kept"]`` maps output rows to input rows.
    """
    s = _surface(points, normals, surface)
    ci = _pick_center(s, rng, center)
    L, G, D = length * s.diag, gap * s.diag, depth * s.diag
    m = s.points[ci]
    near = np.asarray(s.tree.query_ball_point(m, max(2 * G, 0.02 * s.diag)), dtype=np.int64)
    n = _mean_normal(s, near, s.normals[ci])
    if direction is None:
        u, _ = _tangent_frame(n, rng)
    else:
        u = _unit(np.asarray(direction, dtype=np.float64) - np.dot(direction, n) * n)
    wdir = np.cross(u, n)
    reach = float(np.sqrt((L / 2) ** 2 + D ** 2 + G ** 2))
    cand = np.asarray(s.tree.query_ball_point(m, reach), dtype=np.int64)
    d = s.points[cand] - m
    x, y, z = d @ u, d @ wdir, -(d @ n)
    half = 0.5 * G * np.sqrt(np.clip(1.0 - (2 * x / L) ** 2, 0.0, None)) * (1.0 - 0.6 * np.clip(z / D, 0.0, 1.0))
    gone = (np.abs(y) < half) & (np.abs(x) < L / 2) & (np.abs(z) <= D)
    removed = cand[gone]
    if len(removed) == 0:
        raise SynthesisError(f"crack: the slab (gap {gap} x diag) removes no points; widen it or use a denser cloud")
    keep_mask = np.ones(len(s), dtype=bool)
    keep_mask[removed] = False
    kept = np.flatnonzero(keep_mask)
    new_index = np.cumsum(keep_mask) - 1
    # walls: wall_k nearest remaining neighbours of each removed point (local tree only)
    local = cand[~gone]
    if len(local) < wall_k:
        raise SynthesisError("crack: too few points remain around the crack")
    _, nb = cKDTree(s.points[local]).query(s.points[removed], k=wall_k)
    walls = new_index[local[np.unique(nb)]]
    mask = np.zeros(len(kept), dtype=bool)
    mask[walls] = True
    info = {"operator": "crack", "primitive": "2D-plane", "center_index": ci, "center": m.tolist(),
            "normal": n.tolist(), "direction": u.tolist(), "kept": kept, "removed": removed,
            "n_removed": int(len(removed)), "n_support": int(mask.sum()), "max_displacement": 0.0,
            "max_displacement_ratio": 0.0,
            "params": {"length": length, "gap": gap, "depth": depth, "wall_k": wall_k}}
    return OpResult(s.points[kept], s.normals[kept], mask, info)


# --------------------------------------------------------------------------- 3D free-form


def _freeform(kind: str, points, normals, rng, *, surface=None, center=None, size=0.08, aspect=None,
              amplitude=0.01, field="gaussian", n_hull=10, smooth=True, sign=1.0, normal_gate=-0.5,
              label_threshold=LABEL_THRESHOLD) -> OpResult:
    from scipy.spatial import ConvexHull, Delaunay, QhullError

    s = _surface(points, normals, surface)
    ci = _pick_center(s, rng, center)
    c = s.points[ci]
    a = size * s.diag
    aspect = float(rng.uniform(0.5, 1.0)) if aspect is None else float(aspect)
    b = a * aspect
    idx = np.asarray(s.tree.query_ball_point(c, a), dtype=np.int64)
    nc = _mean_normal(s, idx, s.normals[ci])
    u, v = _tangent_frame(nc, rng)
    d = s.points[idx] - c
    x, y, z = d @ u, d @ v, d @ nc
    inside = ((x / a) ** 2 + (y / b) ** 2 + (z / a) ** 2 <= 1.0) & (s.normals[idx] @ nc > normal_gate)
    idx, x, y = idx[inside], x[inside], y[inside]
    if len(idx) < 10:
        raise SynthesisError(f"{kind}: region of size {size} x diag holds only {len(idx)} points; increase size")
    xy = np.stack([x, y], axis=1)
    hull_pts = np.concatenate([xy[rng.choice(len(idx), size=min(int(n_hull), len(idx)), replace=False)], [[0.0, 0.0]]])
    support = "hull"
    try:
        hull = ConvexHull(hull_pts)
        poly = hull_pts[hull.vertices]
        inhull = Delaunay(poly).find_simplex(xy) >= 0
        if inhull.sum() < 10:
            raise QhullError("too small")
    except (QhullError, ValueError):
        support = "ellipse"
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        poly = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
        inhull = np.ones(len(idx), dtype=bool)
    idx, xy = idx[inhull], xy[inhull]
    # distance to the hull boundary (vectorised over all edges), raised-cosine falloff
    p0, p1 = poly, np.roll(poly, -1, axis=0)
    e = p1 - p0
    tproj = np.clip(np.einsum("nej,ej->ne", xy[:, None, :] - p0[None], e) / np.maximum((e ** 2).sum(1), 1e-300), 0, 1)
    closest = p0[None] + tproj[..., None] * e[None]
    db = np.linalg.norm(xy[:, None, :] - closest, axis=2).min(axis=1)
    fall = 0.5 * (1.0 - np.cos(np.pi * np.clip(db / max(db.max(), 1e-300), 0, 1)))
    cen = xy.mean(axis=0)
    r = np.linalg.norm(xy - cen, axis=1)
    scale = max(r.max(), 1e-300)
    if field == "gaussian":
        f = np.exp(-0.5 * (r / (0.5 * scale)) ** 2)
    elif field == "noise":
        k = 6
        centres = xy[rng.choice(len(xy), size=min(k, len(xy)), replace=False)]
        amps = rng.uniform(0.3, 1.0, len(centres)) * rng.choice([-1.0, 1.0], len(centres))
        amps[0] = 1.0
        sig = 0.35 * scale
        f = 1.0 + (np.exp(-((xy[:, None, :] - centres[None]) ** 2).sum(2) / (2 * sig ** 2)) * amps).sum(1)
    elif field == "surface_fit":
        q = (xy - cen) / scale * (np.pi / 2)
        rr, th = np.linalg.norm(q, axis=1), np.arctan2(q[:, 1], q[:, 0])
        f = np.cos(4 * rr + th) * np.exp(-0.6 * rr ** 2)
    else:
        raise SynthesisError(f"{kind}: unknown field {field!r} (use gaussian, noise or surface_fit)")
    f = f / max(np.abs(f).max(), 1e-300)
    direction = s.normals[idx] if field == "surface_fit" else np.broadcast_to(nc, (len(idx), 3))
    disp = (np.sign(sign) * amplitude * s.diag * f * fall)[:, None] * direction
    if smooth and len(idx) > 6:
        # IDW local smoothing of the displacement: 0.3 own + 0.7 inverse-distance mean of 5 neighbours
        full = np.zeros((len(s), 3))
        full[idx] = disp
        dist, nb = s.tree.query(s.points[idx], k=6)
        wts = 1.0 / np.maximum(dist[:, 1:], 1e-12)
        idw = (full[nb[:, 1:]] * wts[..., None]).sum(1) / wts.sum(1, keepdims=True)
        disp = 0.3 * disp + 0.7 * idw
    info = {"operator": kind, "primitive": "3D-freeform", "center_index": ci, "center": c.tolist(),
            "normal": nc.tolist(), "support": support, "hull_2d": poly.tolist(),
            "params": {"size": size, "aspect": aspect, "amplitude": amplitude, "field": field, "n_hull": int(n_hull),
                       "smooth": bool(smooth), "sign": float(np.sign(sign)), "normal_gate": normal_gate},
            "size_abs": a}
    return _finish(s, idx, disp, info, label_threshold=label_threshold)


def freeform(points, normals, rng, **kw) -> OpResult:
    """Hull-supported free-form deformation (``sign`` +1 outward, -1 inward)."""
    return _freeform("freeform", points, normals, rng, **kw)


def bulge(points, normals, rng, **kw) -> OpResult:
    """Free-form outward bulge (Real3D-AD "bulge")."""
    kw["sign"] = 1.0
    return _freeform("bulge", points, normals, rng, **kw)


def sink(points, normals, rng, **kw) -> OpResult:
    """Free-form inward sink (Real3D-AD "sink")."""
    kw["sign"] = -1.0
    return _freeform("sink", points, normals, rng, **kw)


# --------------------------------------------------------------------------- registry and composition


@dataclass(frozen=True)
class OperatorSpec:
    """An operator, its primitive family, and per-parameter (lo, hi) bounds plus the
    default sampling range (all lengths as fractions of diag, angles in degrees).

    ``int_params`` are sampled as integers; ``random_centre=False`` means a random
    location lets the operator place itself (``bend`` puts its hinge along the long
    axis) instead of drawing a surface point as the centre. The instruction schema
    (:mod:`defectforge.synth3d.instructions`) reads all of this from :data:`OPERATORS`.
    """

    fn: Callable[..., OpResult]
    primitive: str
    bounds: dict[str, tuple[float, float]]
    defaults: dict[str, tuple[float, float]]
    mask_fraction: tuple[float, float] = (0.0002, 0.25)
    int_params: tuple[str, ...] = ()
    random_centre: bool = True


_LT = {"label_threshold": (0.0, 0.05)}
_POINT_B = {"radius": (0.003, 0.25), "depth": (0.0005, 0.1), "normal_gate": (-1.0, 0.99), **_LT}
_LINE_B = {"length": (0.01, 0.8), "width": (0.001, 0.1), "depth": (0.0002, 0.05), "taper": (0.0, 0.5),
           "sign": (-1.0, 1.0), "normal_gate": (-1.0, 0.99), **_LT}
_FREE_B = {"size": (0.01, 0.4), "aspect": (0.2, 1.0), "amplitude": (0.0005, 0.1), "n_hull": (4, 40),
           "normal_gate": (-1.0, 0.99), **_LT}

#: The 3D defect operators (plug-ins: ``OPERATORS.register(name, OperatorSpec(...))`` or the
#: entry-point group ``defectforge.operators3d``).
OPERATORS: Registry[OperatorSpec] = Registry("operator", entry_points="defectforge.operators3d")
_BUILTIN_OPERATORS = {
    "bump": OperatorSpec(bump, "1D", _POINT_B, {"radius": (0.03, 0.06), "depth": (0.006, 0.015)}),
    "dent": OperatorSpec(dent, "1D", _POINT_B, {"radius": (0.03, 0.06), "depth": (0.006, 0.015)}),
    "pit": OperatorSpec(pit, "1D", _POINT_B, {"radius": (0.01, 0.02), "depth": (0.005, 0.012)}),
    "scratch": OperatorSpec(scratch, "1D", _LINE_B, {"length": (0.1, 0.25), "width": (0.004, 0.008),
                                                     "depth": (0.002, 0.004)}),
    "groove": OperatorSpec(groove, "1D", _LINE_B, {"length": (0.1, 0.25), "width": (0.01, 0.016),
                                                   "depth": (0.004, 0.008)}),
    "bend": OperatorSpec(bend, "2D", {"angle": (-60.0, 60.0), "position": (0.05, 0.95), "zone": (0.005, 0.3), **_LT},
                         {"angle": (8.0, 20.0), "zone": (0.03, 0.06)}, mask_fraction=(0.01, 0.6),
                         random_centre=False),
    "crack": OperatorSpec(crack, "2D", {"length": (0.02, 0.8), "gap": (0.001, 0.05), "depth": (0.005, 0.3),
                                        "wall_k": (1, 20)},
                          {"length": (0.12, 0.25), "gap": (0.006, 0.012), "depth": (0.03, 0.08)},
                          int_params=("wall_k",)),
    "freeform": OperatorSpec(freeform, "3D", {**_FREE_B, "sign": (-1.0, 1.0)},
                             {"size": (0.06, 0.12), "amplitude": (0.008, 0.02)}, int_params=("n_hull",)),
    "bulge": OperatorSpec(bulge, "3D", _FREE_B, {"size": (0.06, 0.12), "amplitude": (0.008, 0.02)},
                          int_params=("n_hull",)),
    "sink": OperatorSpec(sink, "3D", _FREE_B, {"size": (0.06, 0.12), "amplitude": (0.008, 0.02)},
                         int_params=("n_hull",)),
}
for _name, _spec in _BUILTIN_OPERATORS.items():
    OPERATORS.register(_name, _spec)
CHOICE_PARAMS = {"profile": ("rc", "v", "u"), "field": ("gaussian", "noise", "surface_fit"), "smooth": (True, False)}


def apply(name: str, points, normals, rng, **params) -> OpResult:
    """Run the operator ``name`` (see :data:`OPERATORS`)."""
    return OPERATORS.get(name).fn(points, normals, rng, **params)


def compose(points, normals, rng, steps: list[tuple[str, dict]], *, surface: Surface | None = None) -> OpResult:
    """Apply ``steps`` ((operator, params) pairs) in order; masks are OR-ed.

    Earlier masks follow removals through each step's ``kept`` map, so the final mask
    always aligns with the final points. ``info["steps"]`` lists each step's info;
    ``info["kept"]`` maps final rows to input rows.
    """
    s = _surface(points, normals, surface)
    pts, nrm = s.points, s.normals
    mask = np.zeros(len(pts), dtype=bool)
    kept = np.arange(len(pts))
    infos = []
    for name, params in steps:
        res = apply(name, pts, nrm, rng, surface=s, **params)
        if "kept" in res.info:
            mask, kept = mask[res.info["kept"]], kept[res.info["kept"]]
        mask = mask | res.mask
        pts, nrm = res.points, res.normals
        infos.append(res.info)
        if len(infos) < len(steps):
            s = Surface(pts, nrm, source=s.source)
    return OpResult(pts, nrm, mask, {"operator": "compose", "steps": infos, "kept": kept})
