"""What the real defects teach a generator: appearance, shape and where they occur.

:class:`DefectProfile` is fitted from a few real defects (:class:`RealDefect`: crop, mask,
relative position, and optionally a descriptor of the host surface around it) and holds,
per real defect, paired so that one defect's look goes with its own shape:

- **shape**: the real mask outline (reused by :mod:`.fitted` with random scale, rotation
  and elastic jitter), its area and aspect;
- **appearance**: intensity relative to the surrounding ring (``rel_intensity``, 1 = same
  brightness), texture contrast relative to the ring (``texture_ratio``), edge sharpness
  (``edge_sigma``: the Gaussian blur that turns the brightness step at the mask border into
  the measured border gradient), colour shift (``colour``: per-channel ratio left after the
  brightness change), and the high-pass detail inside the defect;
- **where**: the normalised centroid (the location prior is a kernel density over them)
  and a small texture descriptor of the host surface around the defect, taken with the
  defect in-painted away (:func:`host_descriptors`); candidate host regions of a good image
  are scored by their similarity to these descriptors (:func:`similarity_map`).

Nothing here knows a dataset: every number is measured from the user's own defects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from defectforge.errors import InputError
from defectforge.synth2d.appearance import luminance

#: the host descriptor maps are computed at 1/DOWN of the image size
DOWN = 4
FEATURES = ("brightness", "contrast", "gradient", "orientation_cos", "orientation_sin")


# -- host surface descriptors ----------------------------------------------------------------
def host_descriptors(image: np.ndarray, hole: np.ndarray | None = None) -> np.ndarray:
    """Per-location texture descriptors of a surface, ``h x w x 5`` at 1/``DOWN`` size:
    local brightness, local contrast and gradient energy (each relative to the image's
    own level, so lighting changes between images cancel) and the structure tensor's
    orientation weighted by its coherence (cos 2θ, sin 2θ). ``hole`` (bool, image size):
    pixels to in-paint first (the defect itself), so a descriptor describes the host."""
    H, W = image.shape[:2]
    h, w = max(4, H // DOWN), max(4, W // DOWN)
    y = cv2.resize(luminance(image), (w, h), interpolation=cv2.INTER_AREA)
    if hole is not None and hole.any():
        small = cv2.resize(hole.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        small = cv2.dilate(small, np.ones((3, 3), np.uint8))
        y8 = np.clip(y, 0, 255).astype(np.uint8)
        y = cv2.inpaint(y8, small, 3, cv2.INPAINT_TELEA).astype(np.float32)
    s = max(1.5, min(h, w) / 40.0)
    mean = cv2.GaussianBlur(y, (0, 0), s)
    var = np.maximum(cv2.GaussianBlur(y * y, (0, 0), s) - mean * mean, 0)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3) / 8
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3) / 8
    jxx = cv2.GaussianBlur(gx * gx, (0, 0), s)
    jyy = cv2.GaussianBlur(gy * gy, (0, 0), s)
    jxy = cv2.GaussianBlur(gx * gy, (0, 0), s)
    energy = jxx + jyy
    # coherence-weighted orientation (cos 2θ, sin 2θ) of the structure tensor
    c2, s2 = (jxx - jyy) / (energy + 1e-6), 2 * jxy / (energy + 1e-6)
    ref = float(y.mean()) + 1.0
    std = np.sqrt(var)
    grad = np.sqrt(energy)
    feats = [mean / ref, std / (float(std.mean()) + 1e-3), grad / (float(grad.mean()) + 1e-3), c2, s2]
    return np.stack(feats, axis=2).astype(np.float32)


def descriptor_at(maps: np.ndarray, center_yx: tuple[float, float]) -> np.ndarray:
    """The descriptor at a relative position (y, x) in 0..1."""
    h, w = maps.shape[:2]
    iy = int(np.clip(round(center_yx[0] * h - 0.5), 0, h - 1))
    ix = int(np.clip(round(center_yx[1] * w - 0.5), 0, w - 1))
    return maps[iy, ix].copy()


def similarity_map(maps: np.ndarray, contexts: np.ndarray, bandwidth: float = 1.0) -> np.ndarray:
    """How much each location of a host looks like the surroundings of a real defect:
    ``exp(-d^2 / 2 bw^2)`` with ``d`` the distance to the nearest real context, each
    feature in units of its spread over this host (values in 0..1)."""
    h, w, d = maps.shape
    flat = maps.reshape(-1, d)
    scale = flat.std(0) + 1e-3
    a = flat / scale
    b = np.asarray(contexts, np.float32).reshape(-1, d) / scale
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(2).min(1) if len(b) else np.zeros(len(a), np.float32)
    return np.exp(-d2 / (2 * max(bandwidth, 1e-3) ** 2)).reshape(h, w).astype(np.float32)


def location_prior(positions: np.ndarray, shape: tuple[int, int], bandwidth: float = 0.05) -> np.ndarray:
    """Kernel density (max 1) of the real defects' relative centroids on a ``shape`` grid."""
    h, w = shape
    yy = (np.arange(h, dtype=np.float32) + 0.5)[:, None] / h
    xx = (np.arange(w, dtype=np.float32) + 0.5)[None, :] / w
    out = np.zeros((h, w), np.float32)
    for py, px in np.asarray(positions, np.float32).reshape(-1, 2):
        out += np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * bandwidth ** 2))
    return out / (out.max() + 1e-12)


# -- appearance of one real defect -------------------------------------------------------------
def defect_appearance(image: np.ndarray, mask: np.ndarray, ring_px: int = 5) -> dict[str, float | list[float]]:
    """Intensity, texture contrast, edge sharpness and colour of one defect relative to the
    ring of surface around it (``image`` a crop that holds the ring)."""
    m = np.asarray(mask, bool)
    ring = cv2.dilate(m.astype(np.uint8), np.ones((2 * ring_px + 1,) * 2, np.uint8)).astype(bool) & ~m
    if not ring.any() or not m.any():
        raise InputError(None, "a real defect crop has no surrounding surface to compare with")
    img = image.astype(np.float32)
    y = luminance(image)
    detail = y - cv2.GaussianBlur(y, (0, 0), 2)
    mi, mr = float(y[m].mean()), float(y[ring].mean())
    rel = (mi + 1) / (mr + 1)
    tex = (float(detail[m].std()) + 0.5) / (float(detail[ring].std()) + 0.5)
    ch_in, ch_ring = img[m].mean(0) + 1, img[ring].mean(0) + 1
    colour = (ch_in / ch_ring) / rel
    gmag = np.hypot(cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3) / 8, cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3) / 8)
    border = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~cv2.erode(
        m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    step = abs(mi - mr)
    g = float(np.percentile(gmag[border], 90)) if border.any() else 0.0
    sigma = step / (g * np.sqrt(2 * np.pi)) if g > 1e-3 else 2.0
    return {"rel_intensity": rel, "texture_ratio": tex, "edge_sigma": float(np.clip(sigma, 0.3, 4.0)),
            "colour": [float(v) for v in np.clip(colour, 0.7, 1.4)]}


@dataclass
class DefectProfile:
    """Per-real-defect shape, appearance and host statistics (index ``k`` = one real defect)."""

    shapes: list[np.ndarray]
    crops: list[np.ndarray]
    rel_intensity: np.ndarray
    texture_ratio: np.ndarray
    edge_sigma: np.ndarray
    colour: np.ndarray  # (n, 3)
    positions: np.ndarray  # (n, 2) relative (y, x)
    contexts: np.ndarray  # (m, 5) host descriptors of the defects that have one (m may be 0)

    @classmethod
    def fit(cls, reals: Sequence, ring_px: int = 5) -> "DefectProfile":
        if not reals:
            raise InputError(None, "no real defects to fit a defect profile to")
        app = [defect_appearance(r.image, r.mask, ring_px) for r in reals]
        ctx = [np.asarray(r.context, np.float32) for r in reals if getattr(r, "context", None) is not None]
        return cls(shapes=[np.asarray(r.mask, bool) for r in reals], crops=[r.image for r in reals],
                   rel_intensity=np.array([a["rel_intensity"] for a in app]),
                   texture_ratio=np.array([a["texture_ratio"] for a in app]),
                   edge_sigma=np.array([a["edge_sigma"] for a in app]),
                   colour=np.array([a["colour"] for a in app], np.float32),
                   positions=np.array([r.center_yx for r in reals], np.float64).reshape(-1, 2),
                   contexts=np.stack(ctx) if ctx else np.zeros((0, len(FEATURES)), np.float32))

    def __len__(self) -> int:
        return len(self.shapes)

    def summary(self) -> dict[str, object]:
        q = lambda a: [round(float(v), 3) for v in np.percentile(a, [5, 50, 95])]  # noqa: E731
        return {"defects": len(self), "rel_intensity_p5_50_95": q(self.rel_intensity),
                "texture_ratio_p5_50_95": q(self.texture_ratio), "edge_sigma_p5_50_95": q(self.edge_sigma),
                "colour_median": [round(float(v), 3) for v in np.median(self.colour, 0)],
                "with_host_context": int(len(self.contexts))}
