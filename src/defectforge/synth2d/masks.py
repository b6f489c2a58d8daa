"""Mask makers (where a defect goes and what shape it has) and placement.

Shapes are made as small patches (a float ``alpha`` in [0, 1] whose support is the mask)
and then placed into the image inside a region of interest (ROI). Makers:

- :func:`perlin_blob` thresholded fractal noise (DRAEM-style blobs),
- :func:`stroke` tapered polyline (scratch), :func:`crack` branching random walk,
- :func:`pit_cluster` clusters of small irregular blobs (pitting) with a height map,
- :func:`ellipse`,
- :class:`RealMaskBank` real masks reused as they are or jittered (affine + elastic).

:class:`MaskStats` fits area, aspect, count per image and position from real masks and
drives sampling when real defects exist. :func:`auto_roi` finds the part (foreground)
automatically; :func:`place` picks a position whose whole patch lies inside the ROI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from defectforge.errors import InputError
from defectforge.synth2d.noise import fractal


# -- patches ------------------------------------------------------------------------------
@dataclass
class Patch:
    """A defect shape: ``alpha`` (float32 h x w in [0, 1], mask = alpha > 0), an optional
    ``height`` map (float32, negative = pit) and free shape parameters."""

    alpha: np.ndarray
    height: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        return self.alpha > 0.02

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha.shape[:2]


def _trim(p: Patch, pad: int = 2) -> Patch:
    m = p.mask
    if not m.any():
        return p
    ys, xs = np.nonzero(m)
    y0, y1 = max(0, ys.min() - pad), min(m.shape[0], ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(m.shape[1], xs.max() + 1 + pad)
    h = None if p.height is None else p.height[y0:y1, x0:x1]
    return Patch(p.alpha[y0:y1, x0:x1], h, p.params)


def ellipse(rng: np.random.Generator, size: tuple[float, float] = (6, 40), aspect: tuple[float, float] = (0.3, 1.0),
            soft: float = 1.0) -> Patch:
    """A rotated ellipse, major axis length drawn from ``size`` (px)."""
    a = float(rng.uniform(*size)) / 2
    b = max(1.0, a * float(rng.uniform(*aspect)))
    ang = float(rng.uniform(0, 180))
    r = int(np.ceil(a)) + 3
    m = np.zeros((2 * r + 1, 2 * r + 1), np.uint8)
    cv2.ellipse(m, ((r, r), (2 * a, 2 * b), ang), 255, -1, lineType=cv2.LINE_AA)
    alpha = m.astype(np.float32) / 255
    if soft > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), soft) * (alpha > 0)
    return _trim(Patch(alpha, None, {"shape": "ellipse", "a": a, "b": b, "angle": ang}))


def perlin_blob(rng: np.random.Generator, size: tuple[int, int] = (64, 64), scale: tuple[int, int] = (0, 4),
                threshold: float = 0.5, min_pixels: int = 16) -> Patch:
    """Fractal noise thresholded inside a window of ``size`` (h, w); lattice resolution
    2**randint(scale) per axis as in DRAEM; the window edge is tapered so blobs close."""
    h, w = int(size[0]), int(size[1])
    for _ in range(10):
        ry, rx = 2 ** int(rng.integers(*scale)), 2 ** int(rng.integers(*scale))
        n = fractal((h, w), (ry, rx), rng, octaves=2)
        yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
        xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
        taper = np.clip(1.6 * (1 - np.maximum(np.abs(yy), np.abs(xx))), 0, 1) ** 0.5
        v = n * taper
        m = v > threshold
        if m.sum() >= min_pixels:
            alpha = np.clip((v - threshold) * 4, 0, 1).astype(np.float32)
            alpha = np.where(m, np.maximum(alpha, 0.25), 0).astype(np.float32)
            return _trim(Patch(alpha, None, {"shape": "perlin", "res": [ry, rx], "threshold": threshold}))
        threshold *= 0.8
    m = np.zeros((h, w), np.float32)
    cv2.ellipse(m, ((w / 2, h / 2), (w / 2, h / 2), 0), 1.0, -1)
    return Patch(m, None, {"shape": "perlin-fallback"})


def _polyline(rng: np.random.Generator, length: float, curvature: float, step: float = 2.0) -> np.ndarray:
    n = max(3, int(length / step))
    ang0 = rng.uniform(0, 2 * np.pi)
    dang = np.cumsum(rng.normal(0, curvature, n))
    dang = cv2.GaussianBlur(dang.reshape(1, -1).astype(np.float64), (0, 0), 3).ravel()
    ang = ang0 + dang
    pts = np.cumsum(np.stack([np.sin(ang), np.cos(ang)], 1) * step, axis=0)
    return pts - pts.mean(0)


def stroke(rng: np.random.Generator, length: tuple[float, float] = (40, 200), width: tuple[float, float] = (1.0, 4.0),
           curvature: float = 0.03, taper: bool = True, ss: int = 4) -> Patch:
    """A scratch: a smooth polyline of random length with a width that tapers to both
    ends, rasterised at ``ss`` x and area-downsampled (anti-aliased, sub-pixel widths)."""
    L = float(rng.uniform(*length))
    wmax = float(rng.uniform(*width))
    pts = _polyline(rng, L, curvature)
    pad = wmax + 4
    lo = pts.min(0) - pad
    hw = np.ceil(pts.max(0) - lo + pad).astype(int)
    H, W = int(hw[0]) + 1, int(hw[1]) + 1
    canvas = np.zeros((H * ss, W * ss), np.uint8)
    p = ((pts - lo) * ss).astype(np.int32)
    n = len(p)
    t = np.linspace(0, 1, n)
    prof = np.sin(np.pi * t) ** 0.5 if taper else np.ones(n)
    for i in range(n - 1):
        th = max(1, int(round(wmax * ss * max(prof[i], 0.15))))
        cv2.line(canvas, (int(p[i, 1]), int(p[i, 0])), (int(p[i + 1, 1]), int(p[i + 1, 0])), 255, th, cv2.LINE_AA)
    alpha = cv2.resize(canvas, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return _trim(Patch(alpha, None, {"shape": "stroke", "length": L, "width": wmax}))


def crack(rng: np.random.Generator, length: tuple[float, float] = (60, 220), width: tuple[float, float] = (1.0, 3.0),
          branch_prob: tuple[float, float] = (0.05, 0.2), ss: int = 3) -> Patch:
    """A crack: a jagged random walk with branches (each branch thinner and shorter)."""
    L = float(rng.uniform(*length))
    w0 = float(rng.uniform(*width))
    bp = float(rng.uniform(*branch_prob))
    segs: list[tuple[np.ndarray, float]] = []
    stack = [(np.zeros(2), rng.uniform(0, 2 * np.pi), L, w0, 0)]
    while stack and len(segs) < 12:
        start, ang, ln, w, depth = stack.pop()
        n = max(3, int(ln / 3))
        a = ang + np.cumsum(rng.normal(0, 0.35, n)) * 0.5
        pts = start + np.cumsum(np.stack([np.sin(a), np.cos(a)], 1) * 3.0, axis=0)
        pts = np.vstack([start, pts])
        segs.append((pts, w))
        if depth < 2:
            for k in range(2, n - 2):
                if rng.random() < bp / 3:
                    stack.append((pts[k], a[k] + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1),
                                  ln * rng.uniform(0.2, 0.5), max(0.6, w * 0.6), depth + 1))
    allp = np.vstack([s for s, _ in segs])
    pad = w0 + 4
    lo = allp.min(0) - pad
    H = int(np.ceil(allp[:, 0].max() - lo[0] + pad)) + 1
    W = int(np.ceil(allp[:, 1].max() - lo[1] + pad)) + 1
    canvas = np.zeros((H * ss, W * ss), np.uint8)
    for pts, w in segs:
        p = ((pts - lo) * ss).astype(np.int32)
        n = len(p)
        for i in range(n - 1):
            th = max(1, int(round(w * ss * (1 - 0.7 * i / n))))
            cv2.line(canvas, (int(p[i, 1]), int(p[i, 0])), (int(p[i + 1, 1]), int(p[i + 1, 0])), 255, th, cv2.LINE_AA)
    alpha = cv2.resize(canvas, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return _trim(Patch(alpha, None, {"shape": "crack", "length": L, "width": w0, "branch_prob": bp,
                                     "branches": len(segs) - 1}))


def irregular_blob(rng: np.random.Generator, area: float, aspect: float = 1.0, roughness: float = 0.35,
                   angle: float | None = None) -> np.ndarray:
    """A filled irregular blob of about ``area`` px (polar radius perturbed by smooth
    noise), as float32 coverage in [0, 1] (anti-aliased)."""
    area = max(3.0, float(area))
    a = np.sqrt(area / (np.pi * max(aspect, 0.05)))  # semi-axis along x
    b = a * aspect
    ang = rng.uniform(0, np.pi) if angle is None else angle
    k = 48
    th = np.linspace(0, 2 * np.pi, k, endpoint=False)
    harm = np.zeros(k)
    for f in range(2, 14):
        harm += rng.normal(0, roughness / f ** 1.1) * np.cos(f * th + rng.uniform(0, 2 * np.pi))
    r = np.clip(1 + harm, 0.35, 1.8)
    x = a * r * np.cos(th)
    y = b * r * np.sin(th)
    ca, sa = np.cos(ang), np.sin(ang)
    xr, yr = ca * x - sa * y, sa * x + ca * y
    ss = 4
    R = int(np.ceil(max(np.abs(xr).max(), np.abs(yr).max()))) + 2
    canvas = np.zeros(((2 * R + 1) * ss, (2 * R + 1) * ss), np.uint8)
    poly = np.stack([(xr + R + 0.5) * ss, (yr + R + 0.5) * ss], 1).astype(np.int32)
    cv2.fillPoly(canvas, [poly], 255, lineType=cv2.LINE_AA)
    return cv2.resize(canvas, (2 * R + 1, 2 * R + 1), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def pit_cluster(rng: np.random.Generator, area: tuple[float, float] = (80, 2500), count: tuple[int, int] = (1, 6),
                aspect: tuple[float, float] = (0.45, 1.0), spread: float = 1.0, angle: float | None = None,
                total_area: float | None = None) -> Patch:
    """Pitting: a Thomas-like cluster of irregular pits around a centre. The total area is
    drawn log-uniformly from ``area`` (or given), split over 1 main pit and satellites.
    Returns alpha (coverage) and a height map (negative: a pit, deepest in the middle)."""
    A = float(total_area) if total_area else float(np.exp(rng.uniform(np.log(area[0]), np.log(area[1]))))
    n = int(rng.integers(count[0], count[1] + 1))
    w = rng.dirichlet(np.full(n, 0.6)) if n > 1 else np.ones(1)
    w = np.sort(w)[::-1]
    w[0] = max(w[0], 0.5)
    w = w / w.sum()
    main_r = np.sqrt(A * w[0] / np.pi)
    ang = rng.uniform(0, np.pi) if angle is None else angle
    blobs = []
    for i in range(n):
        ai = max(4.0, A * w[i])
        asp = float(rng.uniform(*aspect))
        b = irregular_blob(rng, ai, asp, roughness=0.45, angle=ang + rng.normal(0, 0.3))
        if i == 0:
            off = np.zeros(2)
        else:
            d = main_r * spread * rng.uniform(0.9, 1.8)
            t = ang + rng.normal(0, 0.6) + (np.pi if rng.random() < 0.5 else 0)
            off = np.array([np.sin(t) * d, np.cos(t) * d])
        blobs.append((b, off))
    R = int(max(np.abs(o).max() + bb.shape[0] / 2 for bb, o in blobs)) + 4
    S = 2 * R + 1
    alpha = np.zeros((S, S), np.float32)
    height = np.zeros((S, S), np.float32)
    for b, off in blobs:
        h0, w0 = b.shape
        y0 = int(round(R + off[0] - h0 / 2))
        x0 = int(round(R + off[1] - w0 / 2))
        alpha[y0:y0 + h0, x0:x0 + w0] = np.maximum(alpha[y0:y0 + h0, x0:x0 + w0], b)
        # depth: distance transform of the blob -> rounded bowl
        dt = cv2.distanceTransform((b > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
        depth = np.sqrt(dt / (dt.max() + 1e-6)) if dt.max() > 0 else b
        height[y0:y0 + h0, x0:x0 + w0] = np.minimum(height[y0:y0 + h0, x0:x0 + w0], -depth * np.sqrt(b.sum() / 50))
    return _trim(Patch(alpha, height, {"shape": "pit_cluster", "area": A, "pits": n, "angle": float(ang)}))


# -- real masks -----------------------------------------------------------------------------
def jitter_mask(mask: np.ndarray, rng: np.random.Generator, rotate: float = 30.0, scale: tuple[float, float] = (0.8, 1.25),
                flip: bool = True, elastic: float = 2.0, image: np.ndarray | None = None,
                interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Affine (rotation, scale, flip) + smooth elastic jitter of a mask patch (and of the
    matching image patch, if given, resampled with ``interpolation``). Returns (mask, image, params).

    The patch turns about its centre pixel and lands on a square canvas at a whole-pixel
    offset, so without rotation, scaling and elastic jitter the patch is copied exactly (no
    resampling blur); with elastic jitter the affine and the displacement are composed into
    one map, so the pixels are resampled once, not twice."""
    m = mask.astype(np.float32)
    img = None if image is None else image.astype(np.float32)
    fl = bool(flip and rng.random() < 0.5)
    if fl:
        m = m[:, ::-1]
        img = None if img is None else img[:, ::-1]
    ang = float(rng.uniform(-rotate, rotate))
    sc = float(rng.uniform(*scale))
    h, w = m.shape
    diag = int(np.ceil(np.hypot(h, w) * sc)) + 4
    M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), ang, sc)
    M[:, 2] += ((diag - w) // 2, (diag - h) // 2)
    m = np.ascontiguousarray(m)
    img = None if img is None else np.ascontiguousarray(img)
    if elastic > 0:
        dy = cv2.GaussianBlur(rng.normal(0, 1, (diag, diag)).astype(np.float32), (0, 0), 4) * elastic * 8
        dx = cv2.GaussianBlur(rng.normal(0, 1, (diag, diag)).astype(np.float32), (0, 0), 4) * elastic * 8
        gy, gx = np.mgrid[0:diag, 0:diag].astype(np.float32)
        inv = cv2.invertAffineTransform(M)
        px, py = gx + dx, gy + dy  # canvas pixel -> displaced canvas point -> patch point
        mx = (inv[0, 0] * px + inv[0, 1] * py + inv[0, 2]).astype(np.float32)
        my = (inv[1, 0] * px + inv[1, 1] * py + inv[1, 2]).astype(np.float32)
        m = cv2.remap(m, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if img is not None:
            img = cv2.remap(img, mx, my, interpolation, borderMode=cv2.BORDER_REFLECT)
    else:
        m = cv2.warpAffine(m, M, (diag, diag), flags=cv2.INTER_LINEAR)
        if img is not None:
            img = cv2.warpAffine(img, M, (diag, diag), flags=interpolation, borderMode=cv2.BORDER_REFLECT)
    out = m > 0.5
    if not out.any():
        out = cv2.resize(mask.astype(np.uint8), (diag, diag)) > 0
    return out, (None if img is None else np.clip(img, 0, 255).astype(np.uint8)), {"flip": fl, "rotate": ang, "scale": sc}


def components(mask: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """8-connected components of a mask as (component patch, (y0, x0, y1, x1))."""
    n, lab, st, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, _ = st[i]
        out.append((lab[y:y + h, x:x + w] == i, (int(y), int(x), int(y + h), int(x + w))))
    return out


def check_real_mask(mask: np.ndarray | None, image_shape: tuple[int, ...], where: Any) -> np.ndarray:
    """A real defect mask must exist, be non-empty and match its image size."""
    if mask is None:
        raise InputError(where, "real defect has no mask")
    m = np.asarray(mask) > 0
    if m.shape != tuple(image_shape[:2]):
        raise InputError(where, f"real mask is {m.shape[1]}x{m.shape[0]} (WxH) but the image is "
                                f"{image_shape[1]}x{image_shape[0]}")
    if not m.any():
        raise InputError(where, "real mask is empty (no defect pixels)")
    return m


# -- statistics ------------------------------------------------------------------------------
@dataclass
class MaskStats:
    """Per-component area, aspect (minor/major) and relative centroid, plus the number of
    components per image, fitted from real masks. ``sample_*`` draw from the empirical
    distributions with a little multiplicative jitter."""

    areas: np.ndarray
    aspects: np.ndarray
    angles: np.ndarray
    positions: np.ndarray  # (n, 2) relative (y, x)
    counts: np.ndarray

    @classmethod
    def fit(cls, masks: Sequence[np.ndarray], reals: Sequence["Any"] | None = None) -> "MaskStats":
        areas, aspects, angles, pos, counts = [], [], [], [], []
        for k, m in enumerate(masks):
            m = np.asarray(m) > 0
            n, lab, st, cen = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
            counts.append(max(0, n - 1))
            H, W = m.shape
            for i in range(1, n):
                areas.append(float(st[i, 4]))
                ys, xs = np.nonzero(lab == i)
                if len(ys) >= 3:
                    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
                    ev, evec = np.linalg.eigh(cov)
                    aspects.append(float(np.sqrt(max(ev[0], 1e-3) / max(ev[1], 1e-3))))
                    angles.append(float(np.arctan2(evec[1, 1], evec[0, 1])))
                else:
                    aspects.append(1.0)
                    angles.append(0.0)
                if reals is not None and k < len(reals) and getattr(reals[k], "image_shape", (0, 0))[0]:
                    pos.append(reals[k].center_yx)
                else:
                    pos.append((cen[i][1] / H, cen[i][0] / W))
        if not areas:
            raise InputError(None, "no real mask holds any defect pixels: cannot fit mask statistics")
        return cls(np.array(areas), np.array(aspects), np.array(angles), np.array(pos, dtype=np.float64),
                   np.array(counts if counts else [1]))

    def sample_area(self, rng: np.random.Generator) -> float:
        return float(self.areas[rng.integers(len(self.areas))] * np.exp(rng.normal(0, 0.25)))

    def sample_aspect(self, rng: np.random.Generator) -> float:
        return float(np.clip(self.aspects[rng.integers(len(self.aspects))] * np.exp(rng.normal(0, 0.1)), 0.1, 1.0))

    def sample_angle(self, rng: np.random.Generator) -> float:
        return float(self.angles[rng.integers(len(self.angles))] + rng.normal(0, 0.2))

    def sample_position(self, rng: np.random.Generator) -> tuple[float, float]:
        y, x = self.positions[rng.integers(len(self.positions))]
        return float(np.clip(y + rng.normal(0, 0.05), 0, 1)), float(np.clip(x + rng.normal(0, 0.08), 0, 1))

    def sample_count(self, rng: np.random.Generator) -> int:
        return int(max(1, self.counts[rng.integers(len(self.counts))]))

    def summary(self) -> dict[str, Any]:
        q = lambda a: [round(float(v), 3) for v in np.percentile(a, [5, 50, 95])]  # noqa: E731
        return {"components": int(len(self.areas)), "area_p5_50_95": q(self.areas),
                "aspect_p5_50_95": q(self.aspects), "count_p5_50_95": q(self.counts),
                "pos_y_p5_50_95": q(self.positions[:, 0]), "pos_x_p5_50_95": q(self.positions[:, 1])}


# -- region of interest and placement ----------------------------------------------------------
def border_roi(shape: tuple[int, int], margin: int = 8) -> np.ndarray:
    roi = np.zeros(shape[:2], bool)
    h, w = shape[:2]
    if h > 2 * margin and w > 2 * margin:
        roi[margin:h - margin, margin:w - margin] = True
    return roi


def auto_roi(image: np.ndarray, margin: int = 8) -> np.ndarray:
    """Automatic foreground (part) mask: pixels whose colour differs from the image
    border colour, when the border is homogeneous background; otherwise the whole image.
    Always minus a ``margin`` px frame. Cheap: computed at 1/4 resolution."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(8, w // 4), max(8, h // 4)), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    frame = np.concatenate([lab[:2].reshape(-1, 3), lab[-2:].reshape(-1, 3), lab[:, :2].reshape(-1, 3),
                            lab[:, -2:].reshape(-1, 3)])
    med = np.median(frame, 0)
    spread = np.median(np.linalg.norm(frame - med, axis=1))
    roi = border_roi((h, w), margin)
    if spread > 12:  # border is part of the object, not plain background
        return roi
    d = np.linalg.norm(lab - med, axis=2)
    thr = max(3 * spread + 6, 15.0)
    fg = (d > thr).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    frac = fg.mean()
    if frac < 0.05 or frac > 0.995:
        return roi
    fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return fg & roi


def place(patch_mask: np.ndarray, roi: np.ndarray, rng: np.random.Generator, prefer: tuple[float, float] | None = None,
          min_inside: float = 1.0, tries: int = 60) -> tuple[int, int]:
    """Top-left (y, x) where ``patch_mask`` fits inside the image with at least
    ``min_inside`` of its pixels in ``roi``. ``prefer`` = relative (y, x) position to try
    first (from real-mask statistics). Raises InputError when the patch does not fit."""
    ph, pw = patch_mask.shape
    H, W = roi.shape
    if ph > H or pw > W:
        raise InputError(None, f"image {W}x{H} is smaller than the defect ({pw}x{ph}); use larger images or smaller defects")
    if not roi.any():
        raise InputError(None, "region of interest is empty: no place to put a defect")
    area = max(1, int(patch_mask.sum()))
    ys = xs = None
    for t in range(tries):
        if prefer is not None and t < tries // 2:
            cy = prefer[0] * H + rng.normal(0, 0.03 * H)
            cx = prefer[1] * W + rng.normal(0, 0.03 * W)
        else:
            if ys is None:
                ys, xs = np.nonzero(roi[::2, ::2])
                ys, xs = ys * 2, xs * 2
                if len(ys) == 0:
                    ys, xs = np.nonzero(roi)
            k = int(rng.integers(len(ys)))
            cy, cx = ys[k], xs[k]
        y0 = int(np.clip(round(cy - ph / 2), 0, H - ph))
        x0 = int(np.clip(round(cx - pw / 2), 0, W - pw))
        inside = roi[y0:y0 + ph, x0:x0 + pw][patch_mask].sum() / area
        if inside >= min_inside - 1e-9:
            return y0, x0
    raise InputError(None, f"no position found where a {pw}x{ph} defect fits inside the region of interest "
                           f"({int(roi.sum())} px); make the region larger or the defects smaller")
