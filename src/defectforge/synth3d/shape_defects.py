"""Shape MPAS operators: 2D plane primitives (``bend``, ``crack``) and 3D free-form ones
(``freeform``, ``bulge``, ``sink``) (contract and details in :mod:`.operators`)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from defectforge.synth3d.surface import (
    LABEL_THRESHOLD,
    OpResult,
    SynthesisError,
    _finish,
    _mean_normal,
    _pick_center,
    _surface,
    _tangent_frame,
    _unit,
)


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
