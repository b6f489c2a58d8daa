"""Parametric industrial parts sampled from analytic surfaces (exact outward normals).

Every part is a union of surface patches sampled uniformly by area, so the demo, tests
and benchmarks need no downloads and no mesh booleans. Most parts are *stacked
extrusions*: a list of levels, each a 2D region (outer loop minus hole loops) extruded
between two heights; side walls come from the loop edges, caps and steps from the
region differences between consecutive levels. The pipe elbow is a torus section.

Sizes are in millimetres and drawn from seeded ranges, so ``make_part("flange", 20000,
rng)`` gives a different but plausible flange for each generator. Each point carries a
region tag (``top``, ``bottom``, ``side``, ``hole``) in ``cloud.meta["tags"]`` that the
instruction layer uses for named locations.

Products: ``make_part(name, n, rng, design=7)`` draws the *nominal* design of one product
from the seed ``design`` (all dimensions and every discrete choice: tooth count, number
of bolt holes, pockets) and lets ``rng`` vary only the continuous dimensions by a small
relative amount (``variation``, default +-2 %, uniform) plus the point sampling. Parts of
one design are therefore "the same product" with manufacturing-like tolerance, as in
Real3D-AD, while ``design=None`` (default) keeps the original behaviour of drawing every
dimension from ``rng``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from matplotlib.path import Path as MplPath

from defectforge.errors import ConfigError
from defectforge.synth3d.cloud import PointCloud

TAG_NAMES = ("top", "bottom", "side", "hole")


@dataclass
class Loop:
    """A closed 2D polyline; ``hole`` marks material-free interiors (bores, pockets)."""

    xy: np.ndarray
    hole: bool = False


@dataclass
class Level:
    """Region ``loops[0]`` minus the other loops (even-odd), extruded over ``[z0, z1]``."""

    loops: list[Loop]
    z0: float
    z1: float


Sampler = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray, np.ndarray]]


def circle(r: float, c: tuple[float, float] = (0.0, 0.0), n: int = 96) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], axis=1)


def rectangle(w: float, h: float, c: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    x0, y0 = c[0] - w / 2, c[1] - h / 2
    return np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], dtype=np.float64)


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _oriented(loop: Loop, outer: bool) -> np.ndarray:
    """Outer loops counter-clockwise, holes clockwise: edge normal (dy, -dx) then points
    away from the material for both."""
    xy = np.asarray(loop.xy, dtype=np.float64)
    ccw = _signed_area(xy) > 0
    return xy if ccw == outer else xy[::-1].copy()


def _inside(loops: list[Loop], uv: np.ndarray) -> np.ndarray:
    inside = np.zeros(len(uv), dtype=bool)
    for lp in loops:
        inside ^= MplPath(np.asarray(lp.xy)).contains_points(uv)
    return inside


def _region_area_and_sampler(pred: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray,
                             z: float, nz: float, calib: np.random.Generator) -> tuple[float, Sampler]:
    box = float(np.prod(hi - lo))
    frac = float(pred(lo + calib.random((20000, 2)) * (hi - lo)).mean())

    def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        out = np.empty((0, 2))
        while len(out) < n:
            cand = lo + rng.random((max(64, int(1.3 * (n - len(out)) / max(frac, 1e-3))), 2)) * (hi - lo)
            out = np.concatenate([out, cand[pred(cand)]])
        uv = out[:n]
        pts = np.column_stack([uv, np.full(n, z)])
        nrm = np.tile([0.0, 0.0, nz], (n, 1))
        return pts, nrm, np.zeros(n, dtype=bool)

    return box * frac, sample


def _wall(xy: np.ndarray, z0: float, z1: float, hole: bool) -> tuple[float, Sampler]:
    a, b = xy, np.roll(xy, -1, axis=0)
    d = b - a
    length = np.linalg.norm(d, axis=1)
    normal = np.stack([d[:, 1], -d[:, 0]], axis=1) / np.maximum(length, 1e-12)[:, None]

    def sample(n: int, rng: np.random.Generator):
        e = rng.choice(len(length), size=n, p=length / length.sum())
        t = rng.random(n)
        uv = a[e] + t[:, None] * d[e]
        pts = np.column_stack([uv, z0 + rng.random(n) * (z1 - z0)])
        nrm = np.column_stack([normal[e], np.zeros(n)])
        return pts, nrm, np.full(n, hole)

    return float(length.sum() * (z1 - z0)), sample


def stacked_extrusion(levels: list[Level], calib: np.random.Generator) -> list[tuple[float, Sampler]]:
    """Patches (area, sampler) of a stack of extrusions touching end to end along z."""
    patches: list[tuple[float, Sampler]] = []
    for lv in levels:
        for j, lp in enumerate(lv.loops):
            patches.append(_wall(_oriented(lp, outer=j == 0 and not lp.hole), lv.z0, lv.z1, lp.hole))
    allxy = np.concatenate([lp.xy for lv in levels for lp in lv.loops])
    lo, hi = allxy.min(axis=0), allxy.max(axis=0)
    first, last = levels[0], levels[-1]
    patches.append(_region_area_and_sampler(lambda uv: _inside(first.loops, uv), lo, hi, first.z0, -1.0, calib))
    patches.append(_region_area_and_sampler(lambda uv: _inside(last.loops, uv), lo, hi, last.z1, 1.0, calib))
    for below, above in zip(levels[:-1], levels[1:]):
        up = lambda uv, b=below, a=above: _inside(b.loops, uv) & ~_inside(a.loops, uv)  # noqa: E731
        down = lambda uv, b=below, a=above: _inside(a.loops, uv) & ~_inside(b.loops, uv)  # noqa: E731
        for pred, nz in ((up, 1.0), (down, -1.0)):
            area, smp = _region_area_and_sampler(pred, lo, hi, below.z1, nz, calib)
            if area > 0:
                patches.append((area, smp))
    return patches


def _sample_patches(patches: list[tuple[float, Sampler]], n: int, rng: np.random.Generator):
    areas = np.array([a for a, _ in patches])
    counts = rng.multinomial(n, areas / areas.sum())
    pts, nrm, hole = [], [], []
    for (_, smp), c in zip(patches, counts):
        if c:
            p, q, h = smp(int(c), rng)
            pts.append(p)
            nrm.append(q)
            hole.append(h)
    return np.concatenate(pts), np.concatenate(nrm), np.concatenate(hole)


# --------------------------------------------------------------------------- parts


def _flange(rng):
    R = rng.uniform(40, 60)
    t = rng.uniform(8, 14)
    rb = R * rng.uniform(0.22, 0.3)
    rh = R * rng.uniform(0.45, 0.55)
    nb = int(rng.choice([4, 6, 8]))
    rbc = 0.5 * (rh + R)
    rbolt = min(0.3 * (R - rh), 0.6 * np.pi * rbc / nb) * rng.uniform(0.7, 1.0)
    ang = rng.uniform(0, np.pi)
    holes = [Loop(circle(rbolt, (rbc * np.cos(ang + 2 * np.pi * i / nb), rbc * np.sin(ang + 2 * np.pi * i / nb)), 48), True)
             for i in range(nb)]
    levels = [Level([Loop(circle(R, n=160)), Loop(circle(rb, n=96), True), *holes], 0.0, t),
              Level([Loop(circle(rh, n=128)), Loop(circle(rb, n=96), True)], t, t + t * rng.uniform(0.8, 1.4))]
    return levels, {"outer_radius": R, "thickness": t, "bore_radius": rb, "bolt_holes": nb}


def _stepped_shaft(rng):
    r0 = rng.uniform(10, 15)
    lengths = rng.uniform(20, 45, size=3)
    radii = [r0, r0 * rng.uniform(0.75, 0.85), r0 * rng.uniform(0.55, 0.68)]
    w = radii[2] * 0.5
    depth = radii[2] * 0.3
    a = np.arcsin(w / 2 / radii[2])
    t = np.linspace(a, 2 * np.pi - a, 120)
    arc = np.stack([radii[2] * np.cos(t), radii[2] * np.sin(t)], axis=1)
    xin = radii[2] * np.cos(a) - depth
    key = np.concatenate([arc, [[xin, -w / 2], [xin, w / 2]]])
    z = np.concatenate([[0.0], np.cumsum(lengths)])
    levels = [Level([Loop(circle(radii[0], n=128))], z[0], z[1]),
              Level([Loop(circle(radii[1], n=128))], z[1], z[2]),
              Level([Loop(key)], z[2], z[3])]
    return levels, {"radii": radii, "lengths": lengths.tolist(), "keyway_width": w}


def _spur_gear(rng):
    teeth = int(rng.integers(12, 25))
    m = rng.uniform(2.0, 3.0)
    rp = m * teeth / 2
    rt, rr = rp + m, rp - 1.25 * m
    pitch = 2 * np.pi / teeth
    pts = []
    for i in range(teeth):
        a0 = i * pitch
        for frac, r in ((0.0, rr), (0.2, rr), (0.35, rt), (0.65, rt), (0.8, rr)):
            pts.append((r * np.cos(a0 + frac * pitch), r * np.sin(a0 + frac * pitch)))
        pts.extend((rr * np.cos(a0 + f * pitch), rr * np.sin(a0 + f * pitch)) for f in (0.87, 0.94))
    bore = rr * rng.uniform(0.25, 0.4)
    thick = rng.uniform(8, 15)
    levels = [Level([Loop(np.array(pts)), Loop(circle(bore, n=64), True)], 0.0, thick)]
    return levels, {"teeth": teeth, "module": m, "thickness": thick}


def _hex_bolt(rng):
    d = rng.uniform(8, 16)
    s = 1.6 * d
    k = 0.65 * d
    length = d * rng.uniform(3, 5)
    hexagon = np.array([[s / np.sqrt(3) * np.cos(np.pi / 3 * i), s / np.sqrt(3) * np.sin(np.pi / 3 * i)] for i in range(6)])
    levels = [Level([Loop(hexagon)], 0.0, k), Level([Loop(circle(d / 2, n=96))], k, k + length)]
    return levels, {"diameter": d, "head_height": k, "length": length}


def _plate_pockets(rng):
    W, H = rng.uniform(80, 120), rng.uniform(50, 80)
    t = rng.uniform(8, 12)
    depth = t * rng.uniform(0.35, 0.55)
    r = min(W, H) * 0.06
    holes = [Loop(circle(r, (sx * (W / 2 - 2.2 * r), sy * (H / 2 - 2.2 * r)), 48), True) for sx in (-1, 1) for sy in (-1, 1)]
    npk = int(rng.integers(1, 3))
    pw = (W - 10 * r) / npk * 0.7
    pockets = [Loop(rectangle(pw, H * rng.uniform(0.3, 0.45), (-(W - 10 * r) / 2 + (i + 0.5) * (W - 10 * r) / npk, 0.0)), True)
               for i in range(npk)]
    levels = [Level([Loop(rectangle(W, H)), *holes], 0.0, t - depth),
              Level([Loop(rectangle(W, H)), *holes, *pockets], t - depth, t)]
    return levels, {"width": W, "height": H, "thickness": t, "pocket_depth": depth, "pockets": npk}


def _bracket(rng):
    t = rng.uniform(5, 9)
    lx, lz = rng.uniform(50, 80), rng.uniform(40, 70)
    width = rng.uniform(30, 50)
    prof = np.array([[0, 0], [lx, 0], [lx, t], [t, t], [t, lz], [0, lz]], dtype=np.float64)
    levels = [Level([Loop(prof)], 0.0, width)]
    # extrusion axis z -> y; profile (u, v) -> (x, z)
    rot = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    return levels, {"leg_x": lx, "leg_z": lz, "thickness": t, "width": width, "_rotation": rot}


def _pipe_elbow_patches(rng):
    R = rng.uniform(40, 70)
    ro = R * rng.uniform(0.25, 0.35)
    ri = ro * rng.uniform(0.7, 0.85)
    sweep = np.pi / 2

    def tube(r: float, sign: float) -> tuple[float, Sampler]:
        def sample(n, g):
            out_t = np.empty(0)
            while len(out_t) < n:
                t = g.uniform(0, 2 * np.pi, 2 * n)
                keep = g.random(2 * n) < (R + r * np.cos(t)) / (R + r)
                out_t = np.concatenate([out_t, t[keep]])
            th = out_t[:n]
            ph = g.uniform(0, sweep, n)
            rad = R + r * np.cos(th)
            pts = np.stack([rad * np.cos(ph), rad * np.sin(ph), r * np.sin(th)], axis=1)
            nrm = sign * np.stack([np.cos(th) * np.cos(ph), np.cos(th) * np.sin(ph), np.sin(th)], axis=1)
            return pts, nrm, np.full(n, sign < 0)
        return 2 * np.pi * r * R * sweep, sample

    def cap(end: int) -> tuple[float, Sampler]:
        def sample(n, g):
            rho = np.sqrt(g.uniform(ri ** 2, ro ** 2, n))
            th = g.uniform(0, 2 * np.pi, n)
            rad = R + rho * np.cos(th)
            if end == 0:
                pts = np.stack([rad, np.zeros(n), rho * np.sin(th)], axis=1)
                nrm = np.tile([0.0, -1.0, 0.0], (n, 1))
            else:
                pts = np.stack([np.zeros(n), rad, rho * np.sin(th)], axis=1)
                nrm = np.tile([-1.0, 0.0, 0.0], (n, 1))
            return pts, nrm, np.zeros(n, dtype=bool)
        return np.pi * (ro ** 2 - ri ** 2), sample

    patches = [tube(ro, 1.0), tube(ri, -1.0), cap(0), cap(1)]
    return patches, {"bend_radius": R, "outer_radius": ro, "inner_radius": ri}


class _ProductDraws:
    """Stand-in for a Generator inside the part builders: the nominal value of every draw
    comes from the design generator; continuous draws are then scaled by
    ``1 + U(-variation, variation)`` from the part generator, discrete ones are kept."""

    def __init__(self, design: np.random.Generator, part: np.random.Generator, variation: float):
        self.design, self.part, self.variation = design, part, float(variation)

    def uniform(self, low=0.0, high=1.0, size=None):
        nominal = self.design.uniform(low, high, size)
        return nominal * (1.0 + self.part.uniform(-self.variation, self.variation, size))

    def integers(self, *args, **kwargs):
        return self.design.integers(*args, **kwargs)

    def choice(self, *args, **kwargs):
        return self.design.choice(*args, **kwargs)


PART_BUILDERS = {
    "flange": _flange,
    "bracket": _bracket,
    "stepped_shaft": _stepped_shaft,
    "spur_gear": _spur_gear,
    "hex_bolt": _hex_bolt,
    "plate_pockets": _plate_pockets,
    "pipe_elbow": None,
}
PART_NAMES = tuple(PART_BUILDERS)


def make_part(name: str, n_points: int = 20000, rng: np.random.Generator | int | None = 0, *,
              design: int | None = None, variation: float = 0.02) -> PointCloud:
    """Sample the parametric part ``name`` with ``n_points`` points and exact outward normals.

    ``design``: ``None`` draws every dimension from ``rng`` (each call a different part);
    an integer seed fixes the nominal design (dimensions and discrete counts) of one
    product, and ``rng`` then varies the continuous dimensions by up to ``variation``
    (relative, uniform) and samples the points (see the module docstring).
    ``meta`` holds ``part``, the drawn dimensions (``params``, mm), ``design`` and per-point
    region ``tags`` (indices into :data:`TAG_NAMES`).
    """
    if name not in PART_BUILDERS:
        raise ConfigError(f"unknown part {name!r}; choose one of {', '.join(PART_NAMES)}")
    if n_points < 100:
        raise ConfigError(f"part {name!r}: n_points must be at least 100, got {n_points}")
    if not 0.0 <= variation < 0.5:
        raise ConfigError(f"part {name!r}: variation must be in [0, 0.5), got {variation}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    draws = rng if design is None else _ProductDraws(np.random.default_rng(int(design)), rng, variation)
    if name == "pipe_elbow":
        patches, params = _pipe_elbow_patches(draws)
        rot = None
    else:
        levels, params = PART_BUILDERS[name](draws)
        rot = params.pop("_rotation", None)
        patches = stacked_extrusion(levels, rng)
    pts, nrm, hole = _sample_patches(patches, n_points, rng)
    if rot is not None:
        pts, nrm = pts @ rot.T, nrm @ rot.T
    tags = np.where(hole, 3, np.where(nrm[:, 2] > 0.8, 0, np.where(nrm[:, 2] < -0.8, 1, 2))).astype(np.int8)
    params = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in params.items()}
    meta = {"part": name, "params": params, "tags": tags, "tag_names": TAG_NAMES}
    if design is not None:
        meta["design"] = int(design)
    return PointCloud(pts, nrm, None, meta)
