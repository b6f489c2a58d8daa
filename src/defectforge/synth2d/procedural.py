"""Procedural defect renderers: pitting, scratch, crack, stain, dent.

Each renderer makes a shape (:mod:`defectforge.synth2d.masks`), places it inside the
region of interest, and changes only a padded crop around it, with an appearance drawn
from the local surface (brightness, contrast, colour, grain) and shading lit from the
image's own estimated light direction. The returned mask is the support of the change,
so it is exact by construction.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from defectforge.synth2d import masks as mk
from defectforge.synth2d.appearance import light_direction, local_stats, shade
from defectforge.synth2d.base import Generator, GeneratorConfig, register_generator
from defectforge.synth2d.noise import fractal

Range = tuple[float, float]


def _roi_or_all(image: np.ndarray, roi: np.ndarray | None, margin: int) -> np.ndarray:
    return roi if roi is not None else mk.border_roi(image.shape[:2], margin)


def _paste_crop(image: np.ndarray, y0: int, x0: int, ph: int, pw: int, pad: int) -> tuple[slice, slice, tuple[int, int]]:
    H, W = image.shape[:2]
    ya, xa = max(0, y0 - pad), max(0, x0 - pad)
    yb, xb = min(H, y0 + ph + pad), min(W, x0 + pw + pad)
    return slice(ya, yb), slice(xa, xb), (y0 - ya, x0 - xa)


def _embed(arr: np.ndarray, shape: tuple[int, int], off: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    h, w = arr.shape
    out[off[0]:off[0] + h, off[1]:off[1] + w] = arr
    return out


def _place_patch(image: np.ndarray, p: mk.Patch, roi: np.ndarray, rng: np.random.Generator, pad: int,
                 min_inside: float = 0.98, prefer: tuple[float, float] | None = None):
    """Place patch ``p`` inside ``roi``; returns (ys, xs, crop float32, alpha in crop coords,
    (y0, x0), offset of the patch inside the crop)."""
    y0, x0 = mk.place(p.mask, roi, rng, prefer=prefer, min_inside=min_inside)
    ph, pw = p.shape
    ys, xs, off = _paste_crop(image, y0, x0, ph, pw, pad)
    crop = image[ys, xs].astype(np.float32)
    return ys, xs, crop, _embed(p.alpha, crop.shape[:2], off), (y0, x0), off


def _polarity(polarity: str, rng: np.random.Generator) -> float:
    return {"bright": 1.0, "dark": -1.0}.get(polarity, float(rng.choice([-1.0, 1.0])))


def _finish(image: np.ndarray, ys: slice, xs: slice, new_crop: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write ``new_crop`` (float) into a copy of ``image``; the mask is where the rounded
    result differs from the source inside ``support``."""
    out = image.copy()
    src = image[ys, xs]
    new = np.clip(np.rint(new_crop), 0, 255).astype(np.uint8)
    new = np.where(support[..., None], new, src)
    out[ys, xs] = new
    mask = np.zeros(image.shape[:2], bool)
    mask[ys, xs] = (new != src).any(axis=2)
    return out, mask


class ProceduralConfig(GeneratorConfig):
    roi_margin: int = Field(8, ge=0, description="px kept free along the image border when no ROI is given")
    use_real_stats: bool = Field(True, description="sample size/position from real-mask statistics when available")


# -- pitting ----------------------------------------------------------------------------------
class PittingConfig(ProceduralConfig):
    limits = {"area": (1.0, 1e6), "clusters": (1, 50), "pits_per_cluster": (1, 100), "aspect": (0.01, 100.0),
              "blur": (0.0, 50.0)}
    """Bounds: area in px^2 (<= 1e6), at most 50 clusters of at most 100 pits, blur sigma <= 50 px."""
    defect_type: str = "pitting"
    mask: Literal["cluster", "real", "ellipse"] = "cluster"
    jitter: bool = Field(True, description="with mask='real': jitter real masks (affine + elastic) or reuse as is")
    area: Range = (80.0, 2500.0)
    clusters: tuple[int, int] = (1, 2)
    pits_per_cluster: tuple[int, int] = (1, 4)
    aspect: Range = (0.4, 1.0)
    darkness: Range = (0.25, 0.5)
    grain: Range = (0.15, 0.3)
    lip: Range = (0.0, 0.25)
    blur: Range = (0.6, 1.1)
    specks: float = Field(0.004, ge=0, le=0.2, description="density of bright specks on the pit floor")


@register_generator("pitting")
class Pitting(Generator):
    """Pitting as on BSData: clusters of small irregular pits, dark bowl with granular
    bottom, a faint bright lip on the side facing the light. Sizes, counts and positions
    follow the real masks when real defects are attached."""

    Config = PittingConfig

    def _patch(self, rng: np.random.Generator) -> mk.Patch:
        c: PittingConfig = self.config  # type: ignore[assignment]
        st = self.stats if c.use_real_stats else None
        if c.mask == "real" and self.real:
            r = self.real[int(rng.integers(len(self.real)))]
            if c.jitter:
                m, _, jp = mk.jitter_mask(r.mask, rng, rotate=20, scale=(0.85, 1.2), elastic=1.0)
            else:
                m, jp = r.mask.copy(), {}
            dt = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3)
            depth = np.sqrt(dt / (dt.max() + 1e-6))
            alpha = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 0.7) * m
            return mk._trim(mk.Patch(alpha, -depth * np.sqrt(m.sum() / 50), {"shape": "real", "source": r.source, **jp}))
        if c.mask == "ellipse":
            a = st.sample_area(rng) if st else float(np.exp(rng.uniform(*np.log(c.area))))
            d = 2 * np.sqrt(a / np.pi)
            p = mk.ellipse(rng, (d, d * 1.3), c.aspect, soft=0.7)
            dt = cv2.distanceTransform((p.alpha > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
            p.height = -np.sqrt(dt / (dt.max() + 1e-6)) * np.sqrt(p.alpha.sum() / 50)
            return p
        total = 0.8 * st.sample_area(rng) if st else None
        angle = st.sample_angle(rng) if st else None
        asp = (max(0.2, st.sample_aspect(rng) * 0.8), 1.0) if st else c.aspect
        return mk.pit_cluster(rng, c.area, c.pits_per_cluster, asp, angle=angle, total_area=total)

    def _render(self, image, rng, roi):
        c: PittingConfig = self.config  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        st = self.stats if c.use_real_stats else None
        n = st.sample_count(rng) if st else int(rng.integers(c.clusters[0], c.clusters[1] + 1))
        light = light_direction(image)
        out = image
        mask = np.zeros(image.shape[:2], bool)
        metas = []
        for _ in range(n):
            p = self._patch(rng)
            prefer = st.sample_position(rng) if st else None
            y0, x0 = mk.place(p.mask, roi & ~mask, rng, prefer=prefer, min_inside=1.0)
            ph, pw = p.shape
            ys, xs, off = _paste_crop(image, y0, x0, ph, pw, 2)
            crop = out[ys, xs].astype(np.float32)
            shp = crop.shape[:2]
            alpha = _embed(p.alpha, shp, off)
            height = _embed(p.height if p.height is not None else -p.alpha, shp, off)
            s = local_stats(out[ys, xs])
            dark = float(rng.uniform(*c.darkness))
            grain = float(rng.uniform(*c.grain))
            lip = float(rng.uniform(*c.lip))
            blur = float(rng.uniform(*c.blur))
            hs = cv2.GaussianBlur(height, (0, 0), 0.8)
            lit = shade(hs, light, elevation=0.55, strength=1.5)
            tex = fractal(shp, (max(1, shp[0] // 6), max(1, shp[1] // 6)), rng, octaves=2)
            core = (alpha > 0.5).astype(np.uint8)
            dt = cv2.distanceTransform(core, cv2.DIST_L2, 3)
            inner = np.clip(dt / 3.0, 0, 1)  # 0 at the rim, 1 from 3 px inside
            # rim darkest (shadowed walls), floor a little lighter and grainy, lit walls brighter
            factor = 1.0 - alpha * dark * (1.0 - 0.2 * inner) * (1.0 + grain * tex)
            factor += alpha * np.clip(lit, -1, 1) * 0.15 * dark
            # a few bright specks on the pit floor (exposed metal grains)
            specks = (rng.random(shp) < c.specks) & (inner > 0.5)
            if specks.any():
                sp = cv2.GaussianBlur(specks.astype(np.float32), (0, 0), 0.7)
                factor += sp / (sp.max() + 1e-6) * dark * 0.6
            factor = np.clip(factor, 0.08, 1.6)
            # colour images: pit bottoms read slightly warmer (oxide/shadow); grey stays grey
            chroma = float(np.abs(crop - crop.mean(axis=2, keepdims=True)).mean())
            warm = np.array([1.0, 0.96, 0.88], np.float32) if chroma > 2 else np.ones(3, np.float32)
            a3 = alpha[..., None]
            new = (crop * (1 - a3) + crop * warm * a3) * factor[..., None]
            # bright lip: a thin ring just outside the pit on the lit side
            if lip > 0.01:
                ring = cv2.GaussianBlur(alpha, (0, 0), 1.2) * (1 - alpha)
                lipw = ring * np.clip(-np.gradient(hs)[0] * light[0] - np.gradient(hs)[1] * light[1] + 0.3, 0, 1)
                new += (lip * 255 * 0.5) * (lipw / (lipw.max() + 1e-6))[..., None] * (s["std"] / 30)
            new = cv2.GaussianBlur(new, (0, 0), blur)
            support = cv2.dilate((alpha > 0.02).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            out, m = _finish(out, ys, xs, new, support)
            mask |= m
            metas.append({**p.params, "yx": [y0, x0], "darkness": dark, "grain": grain, "lip": lip, "blur": blur})
        return out, mask, {"clusters": metas, "light": light}


# -- scratch ----------------------------------------------------------------------------------
class ScratchConfig(ProceduralConfig):
    limits = {"length": (0.0, 2.0), "width": (0.0, 500.0)}
    """Bounds: length <= 2 image diagonals, width <= 500 px."""
    defect_type: str = "scratch"
    length: Range = (0.05, 0.3)  # fraction of the image diagonal
    width: Range = (1.0, 4.0)
    curvature: float = 0.03
    contrast: Range = (0.6, 2.0)  # in local luminance standard deviations
    polarity: Literal["random", "bright", "dark"] = "random"
    groove: Range = (0.2, 0.6)  # strength of the directional-light groove shading


@register_generator("scratch")
class Scratch(Generator):
    """A tapered scratch (smooth polyline), brighter or darker than the surface, with a
    groove shaded by the image's light direction."""

    Config = ScratchConfig

    def _render(self, image, rng, roi):
        c: ScratchConfig = self.config  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        diag = float(np.hypot(*image.shape[:2]))
        p = mk.stroke(rng, (c.length[0] * diag, c.length[1] * diag), c.width, c.curvature)
        ys, xs, crop, alpha, (y0, x0), _ = _place_patch(image, p, roi, rng, 2)
        s = local_stats(image[ys, xs])
        pol = _polarity(c.polarity, rng)
        k = float(rng.uniform(*c.contrast)) * s["std"] * pol
        g = float(rng.uniform(*c.groove))
        lit = shade(-cv2.GaussianBlur(alpha, (0, 0), 0.7) * 3, light_direction(image), 0.6)
        new = crop + (alpha * k)[..., None] + (alpha > 0.02)[..., None] * (lit * g * s["std"] * 2)[..., None]
        support = alpha > 0.02
        out, mask = _finish(image, ys, xs, new, support)
        return out, mask, {**p.params, "yx": [y0, x0], "contrast": k, "groove": g}


# -- crack ------------------------------------------------------------------------------------
class CrackConfig(ProceduralConfig):
    limits = {"length": (0.0, 2.0), "width": (0.0, 500.0), "branch_prob": (0.0, 1.0)}
    """Bounds: length <= 2 image diagonals, width <= 500 px, branch probability in [0, 1]."""
    defect_type: str = "crack"
    length: Range = (0.06, 0.25)
    width: Range = (1.0, 3.0)
    branch_prob: Range = (0.05, 0.2)
    darkness: Range = (0.35, 0.75)


@register_generator("crack")
class Crack(Generator):
    """A dark, jagged, branching crack; darkness relative to the local brightness."""

    Config = CrackConfig

    def _render(self, image, rng, roi):
        c: CrackConfig = self.config  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        diag = float(np.hypot(*image.shape[:2]))
        p = mk.crack(rng, (c.length[0] * diag, c.length[1] * diag), c.width, c.branch_prob)
        ys, xs, crop, alpha, (y0, x0), _ = _place_patch(image, p, roi, rng, 1)
        d = float(rng.uniform(*c.darkness))
        new = crop * (1 - d * alpha)[..., None]
        out, mask = _finish(image, ys, xs, new, alpha > 0.02)
        return out, mask, {**p.params, "yx": [y0, x0], "darkness": d}


# -- stain ------------------------------------------------------------------------------------
class StainConfig(ProceduralConfig):
    limits = {"size": (0.0, 2.0)}
    """Bounds: size <= 2 shorter image sides."""
    defect_type: str = "stain"
    size: Range = (0.05, 0.2)  # fraction of the shorter image side
    offset: Range = (8.0, 35.0)  # grey levels
    polarity: Literal["random", "bright", "dark"] = "random"
    tint: float = 0.15


@register_generator("stain")
class Stain(Generator):
    """A stain or white mark: a soft low-frequency Perlin blob that shifts brightness
    (and slightly tints) the surface; texture underneath stays visible."""

    Config = StainConfig

    def _render(self, image, rng, roi):
        c: StainConfig = self.config  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        side = min(image.shape[:2])
        sz = int(max(12, rng.uniform(*c.size) * side))
        p = mk.perlin_blob(rng, (sz, int(sz * rng.uniform(1.0, 2.0))), scale=(1, 3), threshold=0.3)
        p.alpha = cv2.GaussianBlur(p.alpha, (0, 0), 2) * (p.alpha > 0)
        ys, xs, crop, alpha, (y0, x0), _ = _place_patch(image, p, roi, rng, 0)
        pol = _polarity(c.polarity, rng)
        off_v = float(rng.uniform(*c.offset)) * pol
        tint = (1 + rng.uniform(-c.tint, c.tint, 3)).astype(np.float32)
        new = crop + alpha[..., None] * (off_v * tint)[None, None, :]
        out, mask = _finish(image, ys, xs, new, alpha > 0.02)
        return out, mask, {**p.params, "yx": [y0, x0], "offset": off_v, "tint": tint.tolist()}


# -- dent -------------------------------------------------------------------------------------
class DentConfig(ProceduralConfig):
    limits = {"size": (0.0, 2.0), "aspect": (0.01, 100.0)}
    """Bounds: size <= 2 shorter image sides."""
    defect_type: str = "dent"
    size: Range = (0.04, 0.15)
    depth: Range = (1.5, 5.0)
    aspect: Range = (0.4, 1.0)


@register_generator("dent")
class Dent(Generator):
    """A dent: a smooth elliptic depression shaded from its height map with the image's
    estimated light direction (brightness change only, no colour change)."""

    Config = DentConfig

    def _render(self, image, rng, roi):
        c: DentConfig = self.config  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        side = min(image.shape[:2])
        a = max(4.0, rng.uniform(*c.size) * side / 2)
        b = a * rng.uniform(*c.aspect)
        ang = rng.uniform(0, np.pi)
        R = int(np.ceil(a * 1.3)) + 2
        yy, xx = np.mgrid[-R:R + 1, -R:R + 1].astype(np.float32)
        u = (np.cos(ang) * xx + np.sin(ang) * yy) / a
        v = (-np.sin(ang) * xx + np.cos(ang) * yy) / b
        r2 = u * u + v * v
        depth = float(rng.uniform(*c.depth))
        height = -depth * np.clip(1 - r2, 0, 1) ** 2
        light = light_direction(image)
        d = shade(height, light, 0.6)
        alpha = (np.abs(d) * 255 > 1.0).astype(np.float32)
        p = mk._trim(mk.Patch(alpha, d, {"a": a, "b": b, "angle": ang}))
        ys, xs, crop, alpha, (y0, x0), off = _place_patch(image, p, roi, rng, 0)
        dd = _embed(p.height, crop.shape[:2], off)
        new = crop * (1 + dd)[..., None]
        out, mask = _finish(image, ys, xs, new, alpha > 0)
        return out, mask, {"a": a, "b": b, "angle": ang, "depth": depth, "yx": [y0, x0], "light": light}


__all__ = ["Pitting", "Scratch", "Crack", "Stain", "Dent"]
_ = Any
