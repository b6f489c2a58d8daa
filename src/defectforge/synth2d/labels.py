"""Label derivation from the change itself (synthesis-2d.md, section 8).

Given the source ``S``, the output ``O`` and the intended mask ``M``:

1. colour difference ``D = ||Lab(O) - Lab(S)||`` (Gaussian sigma ``sigma``), computed on
   a crop around ``M`` (fast at any image size);
2. threshold ``tau = max(tau_min, mu_ring + k * sigma_ring)`` from a ring around ``M``;
3. ``B = (D > tau) & M & (S != O)`` (the blur suppresses isolated noise but never grows
   the label beyond changed pixels); optional closing / hole filling; drop components
   below ``min_area``;
4. QC: ``fill = |B| / |M|``, ``leak`` = share of raw changed pixels (full image, no blur)
   lying outside ``M`` dilated by ``leak_tolerance``; ``contrast = mean D[B]``; reject when
   fill < ``min_fill`` (nothing visible changed), leak > ``max_leak`` (change outside the
   intended region) or contrast < ``min_contrast``;
5. instances: components of ``B`` after merging those within ``merge_radius`` px
   (clustered pits form one instance), boxes over the undilated pixels.

The returned ``mask`` is the label: what visibly changed, inside the intended region.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from defectforge.data.sample import Box


@dataclass
class LabelResult:
    """Derived label and its quality numbers. ``instances`` is an int32 label map
    (0 = background, 1..n = instance id); ``boxes`` one per instance (x1, y1 exclusive)."""

    mask: np.ndarray
    instances: np.ndarray
    boxes: list[Box]
    fill: float
    leak: float
    contrast: float
    tau: float
    accepted: bool
    reason: str = ""
    extra: dict = field(default_factory=dict)

    def qc(self) -> dict:
        return {"fill": round(self.fill, 4), "leak": round(self.leak, 4), "contrast": round(self.contrast, 3),
                "tau": round(self.tau, 3), "instances": len(self.boxes)}


def _lab(img: np.ndarray) -> np.ndarray:
    # OpenCV 8-bit Lab: L in 0..255 (scaled 255/100), a/b offset 128; rescale L to 0..100
    lab = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0
    return lab


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def derive_label(source: np.ndarray, output: np.ndarray, intended_mask: np.ndarray, *, label: str = "defect",
                 sigma: float = 0.8, tau_min: float = 2.0, k: float = 3.0, ring: tuple[int, int] = (3, 9),
                 min_area: int = 4, min_fill: float = 0.05, max_leak: float = 0.1, min_contrast: float = 0.0,
                 leak_tolerance: int = 2, merge_radius: int = 3, close: int = 0,
                 fill_holes: bool = False) -> LabelResult:
    """Derive the exact label of a synthetic defect from the pixel change (see module doc).
    ``tau_min`` is in Lab Delta-E units (about 2 grey levels per unit on mid greys)."""
    S = np.asarray(source)
    O = np.asarray(output)
    M = np.asarray(intended_mask, dtype=bool)
    if S.shape != O.shape or S.shape[:2] != M.shape:
        raise ValueError(f"shapes differ: source {S.shape}, output {O.shape}, mask {M.shape}")
    if S.ndim == 2:
        S, O = S[..., None].repeat(3, 2), O[..., None].repeat(3, 2)
    H, W = M.shape
    empty = np.zeros((H, W), bool)
    # raw change over the whole image (cheap): used for leak
    raw = (S != O).any(axis=2)
    if not M.any():
        return LabelResult(empty, np.zeros((H, W), np.int32), [], 0.0, 1.0 if raw.any() else 0.0, 0.0, tau_min,
                           False, "empty intended mask")
    ys, xs = np.nonzero(M)
    pad = ring[1] + leak_tolerance + 3
    y0, y1 = max(0, ys.min() - pad), min(H, ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(W, xs.max() + 1 + pad)
    Sc, Oc, Mc = S[y0:y1, x0:x1], O[y0:y1, x0:x1], M[y0:y1, x0:x1]
    D = np.linalg.norm(_lab(Oc) - _lab(Sc), axis=2)
    if sigma > 0:
        D = cv2.GaussianBlur(D, (0, 0), sigma)
    Mu8 = Mc.astype(np.uint8)
    rg = (cv2.dilate(Mu8, _disk(ring[1])) > 0) & ~(cv2.dilate(Mu8, _disk(ring[0])) > 0)
    tau = float(tau_min)
    if rg.any():
        tau = max(tau, float(D[rg].mean() + k * D[rg].std()))
    # a pixel is labelled when the smoothed change is visible AND the pixel itself changed,
    # so the blur only suppresses isolated noise and never grows the label
    B = (D > tau) & Mc & (Sc != Oc).any(axis=2)
    if close > 1:
        B = (cv2.morphologyEx(B.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((close, close), np.uint8)) > 0) & Mc
    if fill_holes:
        B = ndimage.binary_fill_holes(B) & Mc
    n, lab, st, _ = cv2.connectedComponentsWithStats(B.astype(np.uint8), connectivity=8)
    if n > 1:
        keep = np.zeros(n, bool)
        keep[1:] = st[1:, 4] >= min_area
        B = keep[lab]
    nB, nM = int(B.sum()), int(Mc.sum())
    fill = nB / max(1, nM)
    contrast = float(D[B].mean()) if nB else 0.0
    # leak: raw change outside the tolerated neighbourhood of M, over the whole image
    nraw = int(raw.sum())
    if nraw:
        near = np.zeros((H, W), bool)
        near[y0:y1, x0:x1] = cv2.dilate(Mu8, _disk(leak_tolerance)) > 0 if leak_tolerance > 0 else Mc
        leak = float((raw & ~near).sum()) / nraw
    else:
        leak = 0.0
    full = np.zeros((H, W), bool)
    full[y0:y1, x0:x1] = B
    inst_c, boxes = _instances(B, merge_radius, label)
    inst = np.zeros((H, W), np.int32)
    inst[y0:y1, x0:x1] = inst_c
    boxes = [Box(b.x0 + x0, b.y0 + y0, b.x1 + x0, b.y1 + y0, label) for b in boxes]
    reason = ""
    if nB == 0 or fill < min_fill:
        reason = f"no visible change (fill {fill:.3f} < {min_fill})"
    elif leak > max_leak:
        reason = f"change leaks outside the intended region (leak {leak:.3f} > {max_leak})"
    elif contrast < max(min_contrast, 0.0) or (min_contrast > 0 and contrast < tau):
        reason = f"contrast too low ({contrast:.2f})"
    return LabelResult(full, inst, boxes, fill, leak, contrast, tau, reason == "", reason)


def _instances(B: np.ndarray, merge_radius: int, label: str) -> tuple[np.ndarray, list[Box]]:
    if not B.any():
        return np.zeros(B.shape, np.int32), []
    grp = cv2.dilate(B.astype(np.uint8), _disk(merge_radius)) if merge_radius > 0 else B.astype(np.uint8)
    n, lab = cv2.connectedComponents(grp, connectivity=8)
    lab = np.where(B, lab, 0).astype(np.int32)
    boxes = []
    objs = ndimage.find_objects(lab)
    for i, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        boxes.append(Box(float(sl[1].start), float(sl[0].start), float(sl[1].stop), float(sl[0].stop), label))
    # renumber densely in case some groups were empty
    ids = np.unique(lab[lab > 0])
    remap = np.zeros(lab.max() + 1, np.int32)
    remap[ids] = np.arange(1, len(ids) + 1)
    return remap[lab], boxes
