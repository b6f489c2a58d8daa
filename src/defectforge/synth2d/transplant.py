"""Generators that move pixels instead of painting them:

- ``texture``: DRAEM-style Perlin blob filled with a foreign texture (the image itself,
  scikit-image's bundled CC0 textures, or a user folder) at a random opacity;
- ``cutpaste`` and ``cutpaste_scar``: a rectangle / thin rotated strip cut from the same
  image, colour-jittered and pasted elsewhere (Li et al. 2021);
- ``transplant``: a real defect cut by its mask, jittered (scale, rotation, flip,
  colour) and Poisson-blended (``cv2.seamlessClone``) into a good image (NSA-style), or
  pasted with its surround matched to the host's local mean and contrast (``matched``);
  placed at random or, with ``placement: context``, where the host looks like the
  defect's own surround (:mod:`defectforge.synth2d.placement`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from defectforge.errors import InputError
from defectforge.synth2d import masks as mk
from defectforge.synth2d import placement as PL
from defectforge.synth2d.base import Generator, GeneratorConfig, register_generator
from defectforge.synth2d.procedural import _embed, _finish, _paste_crop, _roi_or_all

Range = tuple[float, float]
RESAMPLE = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


@lru_cache(maxsize=8)
def _skimage_texture(name: str) -> np.ndarray:
    import skimage.data

    t = getattr(skimage.data, name)()
    return np.ascontiguousarray(np.repeat(t[..., None], 3, axis=2) if t.ndim == 2 else t[..., :3])


@lru_cache(maxsize=4)
def _folder_textures(folder: str) -> tuple[np.ndarray, ...]:
    from defectforge.data.image_io import as_rgb8, is_image_file, read_image

    p = Path(folder)
    if not p.is_dir():
        raise InputError(p, "texture folder not found")
    files = sorted(f for f in p.iterdir() if is_image_file(f))
    if not files:
        raise InputError(p, "texture folder holds no images")
    return tuple(as_rgb8(read_image(f)) for f in files[:200])


def _random_crop(src: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    sh, sw = src.shape[:2]
    if sh < h or sw < w:
        f = max(h / sh, w / sw) * 1.01
        src = cv2.resize(src, (int(np.ceil(sw * f)), int(np.ceil(sh * f))), interpolation=cv2.INTER_LINEAR)
        sh, sw = src.shape[:2]
    y = int(rng.integers(0, sh - h + 1))
    x = int(rng.integers(0, sw - w + 1))
    return src[y:y + h, x:x + w]


def mk_disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _color_jitter(patch: np.ndarray, rng: np.random.Generator, amount: float) -> tuple[np.ndarray, dict]:
    b = float(rng.uniform(1 - amount, 1 + amount))
    c = float(rng.uniform(1 - amount, 1 + amount))
    p = patch.astype(np.float32)
    m = p.mean()
    p = (p - m) * c + m * b
    return p, {"brightness": b, "contrast": c}


# -- texture (DRAEM) --------------------------------------------------------------------------
class TextureConfig(GeneratorConfig):
    limits = {"size": (0.0, 2.0), "opacity": (0.0, 1.0)}
    """Bounds: blob window <= 2 shorter image sides, opacity in [0, 1]."""
    path_fields = ("folder",)
    defect_type: str = "texture"
    source: Literal["self", "skimage", "folder"] = "self"
    folder: str | None = None
    size: Range = (0.15, 0.6)  # blob window, fraction of the shorter image side
    opacity: Range = (0.2, 1.0)  # 1 - DRAEM's beta
    threshold: float = 0.5
    roi_margin: int = Field(8, ge=0)


@register_generator("texture")
class Texture(Generator):
    """Perlin blob filled with a texture (rotated/flipped), alpha-blended at an opacity
    drawn from ``opacity``."""

    Config = TextureConfig

    def _render(self, image, rng, roi):
        c: TextureConfig = self.config  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        side = min(image.shape[:2])
        h = int(max(8, rng.uniform(*c.size) * side))
        w = int(max(8, h * rng.uniform(0.6, 2.0)))
        w = min(w, image.shape[1])
        p = mk.perlin_blob(rng, (h, w), scale=(0, 4), threshold=c.threshold)
        y0, x0 = mk.place(p.mask, roi, rng, min_inside=0.95)
        ph, pw = p.shape
        if c.source == "skimage":
            name = ["brick", "grass", "gravel"][int(rng.integers(3))]
            src = _skimage_texture(name)
        elif c.source == "folder":
            if not c.folder:
                raise InputError(None, "texture source 'folder' needs a folder")
            tx = _folder_textures(str(c.folder))
            name = f"folder[{int(rng.integers(len(tx)))}]"
            src = tx[int(name[7:-1])]
        else:
            name, src = "self", image
        tex = _random_crop(src, ph, pw, rng)
        k = int(rng.integers(4))
        tex = np.rot90(tex, k) if ph == pw else (tex[::-1, ::-1] if k >= 2 else tex)
        tex = np.ascontiguousarray(tex)
        tex, jit = _color_jitter(tex, rng, 0.2)
        op = float(rng.uniform(*c.opacity))
        crop = image[y0:y0 + ph, x0:x0 + pw].astype(np.float32)
        a = (p.alpha > 0.02).astype(np.float32) * op
        new = crop * (1 - a[..., None]) + tex * a[..., None]
        out, mask = _finish(image, slice(y0, y0 + ph), slice(x0, x0 + pw), new, p.mask)
        return out, mask, {**p.params, "yx": [y0, x0], "texture": name, "opacity": op, **jit}


# -- CutPaste ---------------------------------------------------------------------------------
class CutPasteConfig(GeneratorConfig):
    limits = {"area": (0.0, 1.0), "aspect": (0.01, 100.0)}
    """Bounds: area a fraction of the image area (<= 1)."""
    defect_type: str = "cutpaste"
    area: Range = (0.02, 0.15)  # fraction of the image area
    aspect: Range = (0.3, 3.3)
    jitter: float = 0.1
    roi_margin: int = Field(8, ge=0)


@register_generator("cutpaste")
class CutPaste(Generator):
    """A rectangle cut from the same image, colour-jittered, pasted elsewhere."""

    Config = CutPasteConfig

    def _render(self, image, rng, roi):
        c: CutPasteConfig = self.config  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        H, W = image.shape[:2]
        area = rng.uniform(*c.area) * H * W
        asp = float(np.exp(rng.uniform(np.log(c.aspect[0]), np.log(c.aspect[1]))))
        h = int(np.clip(np.sqrt(area / asp), 2, H - 1))
        w = int(np.clip(np.sqrt(area * asp), 2, W - 1))
        src = _random_crop(image, h, w, rng)
        src, jit = _color_jitter(src, rng, c.jitter)
        pm = np.ones((h, w), bool)
        y0, x0 = mk.place(pm, roi, rng, min_inside=0.9)
        out, mask = _finish(image, slice(y0, y0 + h), slice(x0, x0 + w), src, pm)
        return out, mask, {"yx": [y0, x0], "hw": [h, w], **jit}


class ScarConfig(GeneratorConfig):
    limits = {"width": (0.0, 1000.0), "length": (0.0, 1000.0)}
    """Bounds: width and length <= 1000 px."""
    defect_type: str = "scar"
    width: Range = (2.0, 16.0)
    length: Range = (10.0, 25.0)
    rotation: Range = (-45.0, 45.0)
    jitter: float = 0.1
    roi_margin: int = Field(8, ge=0)


@register_generator("cutpaste_scar")
class CutPasteScar(Generator):
    """CutPaste-scar: a thin strip from the same image, rotated, jittered, pasted."""

    Config = ScarConfig

    def _render(self, image, rng, roi):
        c: ScarConfig = self.config  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        w = int(round(rng.uniform(*c.width)))
        L = int(round(rng.uniform(*c.length)))
        strip = _random_crop(image, L, w, rng).astype(np.float32)
        strip, jit = _color_jitter(strip, rng, c.jitter)
        ang = float(rng.uniform(*c.rotation))
        D = int(np.ceil(np.hypot(L, w))) + 2
        M = cv2.getRotationMatrix2D((w / 2, L / 2), ang, 1.0)
        M[:, 2] += (D / 2 - w / 2, D / 2 - L / 2)
        rs = cv2.warpAffine(np.ascontiguousarray(strip), M, (D, D), flags=cv2.INTER_LINEAR)
        rm = cv2.warpAffine(np.ones((L, w), np.float32), M, (D, D), flags=cv2.INTER_LINEAR) > 0.5
        y0, x0 = mk.place(rm, roi, rng, min_inside=1.0)
        out, mask = _finish(image, slice(y0, y0 + D), slice(x0, x0 + D), rs, rm)
        return out, mask, {"yx": [y0, x0], "width": w, "length": L, "rotation": ang, **jit}


# -- real-defect transplant -------------------------------------------------------------------
class TransplantConfig(GeneratorConfig, PL.ContextOptions):
    limits = {"scale": (0.01, 10.0)}
    """Bounds: the real defect scaled by at most 10x."""
    defect_type: str = "defect"
    scale: Range = (0.8, 1.25)
    rotate: float = 20.0
    flip: bool = True
    color: float = 0.1
    blend: Literal["normal", "mixed", "alpha", "matched"] = "normal"
    """normal/mixed: Poisson (``cv2.seamlessClone``); alpha: feathered paste; matched: the
    defect's surround is matched to the host's local mean and contrast per channel, then
    feathered (keeps the defect's own contrast against its surround)."""
    context: int = Field(4, ge=1, le=32, description="px of the real surround blended with the defect")
    resample: Literal["linear", "cubic"] = "linear"
    """interpolation of the jittered defect's pixels (cubic keeps its edges sharper)"""
    use_real_stats: bool = True
    roi_margin: int = Field(8, ge=0)
    placement: Literal["random", "context"] = "random"
    """random: anywhere in the ROI (near the real defects' relative positions first); context:
    where the host looks like the defect's own surround (:mod:`defectforge.synth2d.placement`)."""
    orient: int = Field(1, ge=1, le=8, description="context: jitter draws scored per defect (the best place decides)")
    candidates: int = Field(1, ge=1, le=16, description="context: real defects scored per sample (best place wins)")


@register_generator("transplant")
class Transplant(Generator):
    """A real defect (crop + mask from the user's labelled images) jittered and
    Poisson-blended into a good image; the pasted mask is the label."""

    Config = TransplantConfig
    needs_real = True

    def _render(self, image, rng, roi):
        c: TransplantConfig = self.config  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        if c.placement == "context":
            ks = rng.choice(len(self.real), min(c.candidates, len(self.real)), replace=False)
            got = self._context_place(image, [self.real[int(k)] for k in ks], roi, rng)
        else:
            ks, got = [int(rng.integers(len(self.real)))], None
        if got is not None:
            y0, x0, i, m, patch, jp = got
            k = int(ks[i])
        else:
            k = int(ks[0])
            m, patch, jp = self.cut_patch(self.real[k], rng)
            st = self.stats if c.use_real_stats else None
            prefer = st.sample_position(rng) if st is not None else None
            y0, x0 = mk.place(m, roi, rng, prefer=prefer, min_inside=1.0)
            if c.placement == "context":
                jp["context_score"] = None  # no surround or no place matched: placed at random
        out, mask = paste_defect(image, m, patch, y0, x0, c.blend, c.context)
        r = self.real[k]
        return out, mask, {"real": k, "real_source": r.source, "yx": [y0, x0], "blend": c.blend, **jp}

    def _context_place(self, image, reals, roi, rng):
        """``(y0, x0, index into reals, mask, patch, params)`` drawn where the host matches a
        real defect's surround (:mod:`.placement`), pooled over ``orient`` jitter draws of
        each of ``reals``; ``None`` when nothing matched."""
        c: TransplantConfig = self.config  # type: ignore[assignment]
        grey = PL.host_grey(image)
        cands, cuts = [], []
        for i, r in enumerate(reals):
            if r.surround is None:
                continue
            for _ in range(c.orient):
                m, patch, jp = self.cut_patch(r, rng)
                cand = PL.match(grey, r.surround, jp, m, c, c.context + 2)
                if cand is not None:
                    cands.append(cand)
                    cuts.append((i, m, patch, jp))
        got = PL.draw_place(cands, roi, c.top, rng) if cands else None
        if got is None:
            return None
        y0, x0, j, score = got
        i, m, patch, jp = cuts[j]
        return y0, x0, i, m, patch, {**jp, "context_score": round(score, 4)}

    def cut_patch(self, r, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
        """Real defect ``r`` jittered (scale, rotation, flip, colour), trimmed to its mask
        plus ``context + 2`` px: ``(mask, patch, params)``."""
        c: TransplantConfig = self.config  # type: ignore[assignment]
        m, patch, jp = mk.jitter_mask(r.mask, rng, rotate=c.rotate, scale=c.scale, flip=c.flip, elastic=0.0,
                                      image=r.image, interpolation=RESAMPLE[c.resample])
        assert patch is not None
        ys_, xs_ = np.nonzero(m)
        y0_, y1_, x0_, x1_ = ys_.min(), ys_.max() + 1, xs_.min(), xs_.max() + 1
        pad = c.context + 2
        y0_, x0_ = max(0, y0_ - pad), max(0, x0_ - pad)
        y1_, x1_ = min(m.shape[0], y1_ + pad), min(m.shape[1], x1_ + pad)
        m, patch = m[y0_:y1_, x0_:x1_], patch[y0_:y1_, x0_:x1_]
        pf, jit = _color_jitter(patch, rng, c.color)
        return m, np.clip(pf, 0, 255).astype(np.uint8), {**jp, **jit}


def paste_defect(image: np.ndarray, m: np.ndarray, patch: np.ndarray, y0: int, x0: int, blend: str,
                 context: int) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``patch`` (a real defect with its surround, mask ``m``) into ``image`` with its
    top-left at ``(y0, x0)``: Poisson (``normal`` / ``mixed``), feathered (``alpha``) or
    surround-matched (``matched``, :func:`matched_paste`), over ``m`` dilated by ``context``
    px. Returns ``(new image, changed pixels)``."""
    ph, pw = m.shape
    ys, xs, off = _paste_crop(image, y0, x0, ph, pw, 3)
    crop = image[ys, xs]
    blend_mask = cv2.dilate(m.astype(np.uint8), mk_disk(context))
    if blend == "matched":
        new = matched_paste(crop, patch, m, off, context)
    elif blend == "alpha" or min(crop.shape[:2]) < 6:
        a = _embed(cv2.GaussianBlur(m.astype(np.float32), (0, 0), 1.0), crop.shape[:2], off)
        src_full = crop.astype(np.float32).copy()
        src_full[off[0]:off[0] + ph, off[1]:off[1] + pw] = patch
        new = crop * (1 - a[..., None]) + src_full * a[..., None]
    else:
        full = crop.copy()
        full[off[0]:off[0] + ph, off[1]:off[1] + pw] = patch
        bm = np.zeros(crop.shape[:2], np.uint8)
        bm[off[0]:off[0] + ph, off[1]:off[1] + pw] = blend_mask * 255
        bm[:1], bm[-1:], bm[:, :1], bm[:, -1:] = 0, 0, 0, 0
        bx, by, bw, bh = cv2.boundingRect(bm)
        center = (bx + bw // 2, by + bh // 2)
        flag = cv2.MIXED_CLONE if blend == "mixed" else cv2.NORMAL_CLONE
        new = cv2.seamlessClone(full, np.ascontiguousarray(crop), bm, center, flag).astype(np.float32)
    support = _embed(blend_mask.astype(np.float32), crop.shape[:2], off) > 0
    return _finish(image, ys, xs, new, support)


def matched_paste(crop: np.ndarray, patch: np.ndarray, m: np.ndarray, off: tuple[int, int], context: int) -> np.ndarray:
    """Paste ``patch`` (mask ``m``) at ``off`` into ``crop`` after matching the mean and
    standard deviation of the patch's surrounding ring to the host's ring (per channel), so
    the defect keeps its contrast *relative to its surround* while the surround blends in;
    the edge is feathered over ``context`` px. Returns the new crop (float32)."""
    ph, pw = m.shape
    H, W = crop.shape[:2]
    inner = np.zeros((H, W), np.uint8)
    inner[off[0]:off[0] + ph, off[1]:off[1] + pw] = m
    ring = (cv2.dilate(inner, mk_disk(max(2, context))) > 0) & (inner == 0)
    src = crop.astype(np.float32).copy()
    src[off[0]:off[0] + ph, off[1]:off[1] + pw] = patch
    dst = crop.astype(np.float32)
    if ring.any():
        sm, ss = src[ring].mean(0), src[ring].std(0) + 1.0
        dm, ds = dst[ring].mean(0), dst[ring].std(0) + 1.0
        gain = np.clip(ds / ss, 0.5, 2.0)
        src = (src - sm) * gain + dm
    hard = cv2.dilate(inner, mk_disk(max(1, context // 2))).astype(np.float32)
    a = cv2.GaussianBlur(hard, (0, 0), max(0.8, context / 3)) * (cv2.dilate(inner, mk_disk(context)) > 0)
    a = np.maximum(a, inner.astype(np.float32))
    return dst * (1 - a[..., None]) + src * a[..., None]
