"""``fitted``: a generator whose shape, look and placement are learned from the real defects.

After ``fit(real_defects)`` (a :class:`~defectforge.synth2d.fit.DefectProfile`), each
synthetic defect is made from one real defect ``k``:

1. **shape**: real outline ``k`` with random scale, rotation, flip and elastic jitter;
2. **where** (``placement: context``, the default): among the host's places whose window
   best matches real defect ``k``'s own surround (:mod:`.placement`); where it has none, or
   with ``placement: prior``: a position drawn from ``roi x (prior_weight * location prior +
   1 - prior_weight) x host similarity ** similarity`` (the location prior is the density of
   the real defects' relative positions; host similarity compares the texture descriptor of
   each candidate region with the surroundings of the real defects, e.g. thread flanks);
3. **look**: the host's own smooth shading times defect ``k``'s intensity ratio and colour
   shift (``strength`` scales the log-contrast), plus defect ``k``'s inner high-pass detail
   rescaled to its measured texture contrast against this host, blended with defect ``k``'s
   edge sharpness (``edge`` scales the blur).

Every parameter range is a multiplier around what was measured (1 = as measured), so the
same settings carry over to any part; a recipe search (``defectforge recipe search``) tunes
them on validation data.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from defectforge.synth2d import masks as mk
from defectforge.synth2d import placement as PL
from defectforge.synth2d.appearance import luminance
from defectforge.synth2d.base import Generator, GeneratorConfig, register_generator
from defectforge.synth2d.fit import DefectProfile, host_descriptors, location_prior, similarity_map
from defectforge.synth2d.procedural import _embed, _finish, _paste_crop, _roi_or_all

Range = tuple[float, float]


class FittedConfig(GeneratorConfig, PL.ContextOptions):
    limits = {"scale": (0.01, 10.0)}
    """Bounds: the real outline scaled by at most 10x."""
    scale: Range = (0.8, 1.25)
    rotate: float = Field(15.0, ge=0, le=180, description="max rotation of a real outline, degrees (+-)")
    flip: bool = True
    elastic: float = Field(0.5, ge=0, le=3, description="elastic jitter of the outline")
    strength: Range = (0.8, 1.2)
    detail: float = Field(1.0, ge=0, le=3, description="share of the real defect's inner texture carried over")
    edge: Range = (0.8, 1.25)
    prior_weight: float = Field(0.5, ge=0, le=1, description="weight of the location prior (vs uniform)")
    similarity: float = Field(1.0, ge=0, le=8, description="exponent of the host similarity (0 = ignore the host)")
    bandwidth: float = Field(1.0, gt=0, le=10, description="host-similarity kernel width (feature spreads)")
    max_count: int = Field(4, ge=1, le=50, description="max defects per image (counts follow the real masks)")
    placement: Literal["prior", "context"] = "context"
    """context (default, chosen on validation defects): where the host matches the real
    defect's own surround (:mod:`defectforge.synth2d.placement`, options ``window``, ``top``,
    ``level``), else as ``prior``; prior: location prior x host similarity (above)."""
    roi_margin: int = Field(8, ge=0)


@register_generator("fitted")
class Fitted(Generator):
    """Defects fitted to the user's real ones: real outlines (jittered), their measured
    intensity/contrast/edge/colour relative to the surface, placed where real defects occur
    (location prior x host-texture similarity)."""

    Config = FittedConfig
    needs_real = True

    def fit(self, real):
        super().fit(real)
        self.profile = DefectProfile.fit(self.real) if self.real else None
        self._maps: dict[str, np.ndarray] = {}
        return self

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_maps"] = {}
        return d

    # -- where ----------------------------------------------------------------------------
    def placement_map(self, image: np.ndarray, roi: np.ndarray) -> np.ndarray:
        """Probability (not normalised) of a defect centre per cell of the 1/DOWN grid."""
        c: FittedConfig = self.config  # type: ignore[assignment]
        key = hashlib.sha1(np.ascontiguousarray(image[::7, ::7]).tobytes()).hexdigest() + str(image.shape)
        if key not in self._maps:
            maps = host_descriptors(image)
            h, w = maps.shape[:2]
            p = np.ones((h, w), np.float32)
            prof: DefectProfile = self.profile  # type: ignore[assignment]
            if c.prior_weight > 0 and len(prof.positions):
                p *= c.prior_weight * location_prior(prof.positions, (h, w)) + (1 - c.prior_weight)
            if c.similarity > 0 and len(prof.contexts):
                p *= similarity_map(maps, prof.contexts, c.bandwidth) ** c.similarity
            if len(self._maps) >= 8:
                self._maps.pop(next(iter(self._maps)))
            self._maps[key] = p
        p = self._maps[key]
        r = cv2.resize(roi.astype(np.uint8), (p.shape[1], p.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        return p * r

    def _position(self, m: np.ndarray, roi: np.ndarray, taken: np.ndarray, prob: np.ndarray,
                  rng: np.random.Generator) -> tuple[int, int, bool]:
        H, W = roi.shape
        ph, pw = m.shape
        free = roi & ~taken
        flat = prob.ravel().astype(np.float64)
        if flat.sum() > 0:
            flat = flat / flat.sum()
            h, w = prob.shape
            for _ in range(30):
                i = int(rng.choice(len(flat), p=flat))
                cy, cx = (i // w + rng.random()) * H / h, (i % w + rng.random()) * W / w
                y0 = int(np.clip(round(cy - ph / 2), 0, max(0, H - ph)))
                x0 = int(np.clip(round(cx - pw / 2), 0, max(0, W - pw)))
                if ph <= H and pw <= W and free[y0:y0 + ph, x0:x0 + pw][m].all():
                    return y0, x0, True
        y0, x0 = mk.place(m, free, rng, min_inside=1.0)
        return y0, x0, False

    # -- shape and look -------------------------------------------------------------------
    def _render(self, image, rng, roi):
        c: FittedConfig = self.config  # type: ignore[assignment]
        prof: DefectProfile = self.profile  # type: ignore[assignment]
        roi = _roi_or_all(image, roi, c.roi_margin)
        n = min(c.max_count, self.stats.sample_count(rng)) if self.stats is not None else 1
        prob = None  # the prior placement map: only needed when context placement is off or fails
        grey = PL.host_grey(image) if c.placement == "context" else None
        out, mask = image, np.zeros(image.shape[:2], bool)
        metas = []
        for _ in range(n):
            k = int(rng.integers(len(prof)))
            m, patch, jp = mk.jitter_mask(prof.shapes[k], rng, rotate=c.rotate, scale=c.scale, flip=c.flip,
                                          elastic=c.elastic, image=prof.crops[k])
            sig = float(prof.edge_sigma[k] * rng.uniform(*c.edge))
            m, patch = _trim(m, patch, int(np.ceil(2 * sig)) + 2)
            got = None
            if grey is not None and self.real[k].surround is not None:
                cand = PL.match(grey, self.real[k].surround, jp, m, c, int(np.ceil(2 * sig)) + 2)
                got = PL.draw_place([cand], roi & ~mask, c.top, rng) if cand is not None else None
            if got is not None:
                y0, x0, guided = got[0], got[1], True
            else:
                if prob is None:
                    prob = self.placement_map(image, roi)
                y0, x0, guided = self._position(m, roi, mask, prob, rng)
            ph, pw = m.shape
            ys, xs, off = _paste_crop(out, y0, x0, ph, pw, 0)
            crop = out[ys, xs].astype(np.float32)
            shp = crop.shape[:2]
            mm = _embed(m.astype(np.float32), shp, off)
            alpha = cv2.GaussianBlur(mm, (0, 0), sig)
            st = float(rng.uniform(*c.strength))
            rel = float(np.exp(np.log(prof.rel_intensity[k]) * st))
            col = prof.colour[k] ** st
            smooth = cv2.GaussianBlur(crop, (0, 0), 2)
            y = luminance(crop)
            host_detail = float((y - cv2.GaussianBlur(y, (0, 0), 2)).std()) + 0.5
            rp = np.zeros_like(crop)
            rp[off[0]:off[0] + ph, off[1]:off[1] + pw] = patch
            ry = luminance(rp)
            rd = ry - cv2.GaussianBlur(ry, (0, 0), 2)
            inside = mm > 0.5
            rd_std = float(rd[inside].std()) + 0.5 if inside.any() else 1.0
            rd = rd / rd_std * prof.texture_ratio[k] * host_detail * c.detail
            new = smooth * rel * col[None, None, :] + rd[..., None]
            blended = crop * (1 - alpha[..., None]) + new * alpha[..., None]
            out, changed = _finish(out, ys, xs, blended, alpha > 0.02)
            mask |= changed
            metas.append({"real": k, "yx": [y0, x0], "guided": guided, "strength": st, "rel_intensity": rel,
                          "edge_sigma": sig, **jp})
        return out, mask, {"defects": metas}


def _trim(m: np.ndarray, img: np.ndarray | None, pad: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(m)
    y0, y1 = max(0, ys.min() - pad), min(m.shape[0], ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(m.shape[1], xs.max() + 1 + pad)
    m2 = np.zeros((ys.max() + 1 - ys.min() + 2 * pad, xs.max() + 1 - xs.min() + 2 * pad), bool)
    p2 = np.zeros(m2.shape + (3,), np.uint8)
    oy, ox = pad - (ys.min() - y0), pad - (xs.min() - x0)
    m2[oy:oy + y1 - y0, ox:ox + x1 - x0] = m[y0:y1, x0:x1]
    if img is not None:
        p2[oy:oy + y1 - y0, ox:ox + x1 - x0] = img[y0:y1, x0:x1]
    return m2, p2


__all__ = ["Fitted", "FittedConfig"]
