"""Context-matched placement: put a real defect where the host looks like the defect's own surround.

A real defect is seen together with the surface around it. Pasted at a random place its
surround no longer matches (a pit from a dark thread flank lands on a bright crest), and a
realism test (C2ST) picks that up even when the defect's own pixels are untouched. This module
scores candidate places in a host image by how much the host's window there looks like the
defect's own surround, and draws a place among the best. Used by ``transplant`` with
``placement: context``.

**Surround** (:class:`Surround`, cut once per real defect by :func:`cut_surround`): a square
window of ``SURROUND`` x the defect's longer box side (at least ``SURROUND_MIN`` px) centred on
the defect's box, stored at most ``SURROUND_PX`` px wide (only the coarse look of the surface is
compared), as RGBA (alpha = valid: inside the image and not on a defect pixel) with the
defect's own mask (area fraction per stored pixel).

**Score** (:func:`score_places`). The surround is jittered like the defect (flip, rotation,
scale: :func:`warp_surround`) and cut to ``window`` x the jittered defect's longer box side
around it, minus the defect dilated by the blend's reach: only the surface around the defect
is compared (:func:`template`). Host and template are reduced so that the template is about
``MATCH_PX`` px wide (grey, area interpolation); then at every place where the template lies
inside the host:

    score = NCC(host window, template; masked) - level * (|log mean ratio| + |log std ratio|)

NCC (``cv2.TM_CCOEFF_NORMED`` with the template mask) compares the pattern (e.g. the phase and
direction of stripes) whatever the brightness and contrast; the second term compares the
brightness and contrast levels (masked means and standard deviations); ``level`` 0 ignores
them. Nothing here knows a dataset.

**Draw** (:func:`draw_place`): among the places whose defect centre lies in the ROI, one of
the best ``top`` fraction (by score, pooled over the orientation tries) is drawn uniformly
with the generator's ``rng``; it is kept only when the whole defect mask lies in the ROI.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel, Field

from defectforge.synth2d.appearance import luminance

#: the stored surround: side / the defect's longer box side, its minimum side and its
#: largest stored side (px)
SURROUND = 3.0
SURROUND_MIN = 32
SURROUND_PX = 64
#: the template is reduced to about this many px (side) before matching
MATCH_PX = 16


class ContextOptions(BaseModel):
    """The options of context-matched placement, shared by the generators that offer it."""

    window: float = Field(2.0, ge=1.2, le=SURROUND, description="context: surround compared, x the defect's box side")
    top: float = Field(0.05, gt=0, le=1, description="context: draw among this best fraction of the host's places")
    level: float = Field(1.0, ge=0, le=10, description="context: weight of the brightness/contrast mismatch")


@dataclass
class Surround:
    """A real defect's surround: ``rgba`` (uint8 square, alpha 255 = valid surface), ``mask``
    (float32, the defect's area fraction per pixel), ``px`` (image px per stored px); the
    window is centred on the defect's box."""

    rgba: np.ndarray
    mask: np.ndarray
    px: float


@dataclass
class Candidates:
    """The scores of one orientation try: ``scores`` (map; index (i, j) = the template's
    top-left at (i, j) x ``factor`` in the host), ``centre`` (the defect's box centre in the
    template, host px) and ``mask`` (the jittered defect mask of the patch to paste)."""

    scores: np.ndarray
    factor: float
    centre: tuple[float, float]
    mask: np.ndarray


def cut_surround(image: np.ndarray, defects: np.ndarray, comp: np.ndarray, box: tuple[int, int, int, int],
                 scale: float = SURROUND, minimum: int = SURROUND_MIN, stored: int = SURROUND_PX) -> Surround:
    """The surround of one defect component: ``image`` RGB, ``defects`` all defect pixels of
    the image (bool), ``comp`` the component's mask in ``box`` = (y0, x0, y1, x1) (as
    :func:`~defectforge.synth2d.masks.components` gives them)."""
    y0, x0, y1, x1 = box
    H, W = image.shape[:2]
    side = int(max(minimum, np.ceil(scale * max(y1 - y0, x1 - x0))))
    ta, la = (y0 + y1) // 2 - side // 2, (x0 + x1) // 2 - side // 2
    rgba = np.zeros((side, side, 4), np.uint8)
    mask = np.zeros((side, side), np.float32)
    ya, yb, xa, xb = max(0, ta), min(H, ta + side), max(0, la), min(W, la + side)
    rgba[ya - ta:yb - ta, xa - la:xb - la, :3] = image[ya:yb, xa:xb]
    rgba[ya - ta:yb - ta, xa - la:xb - la, 3] = np.where(defects[ya:yb, xa:xb], 0, 255)
    mask[y0 - ta:y1 - ta, x0 - la:x1 - la] = comp
    n = min(side, int(stored))
    if n < side:
        rgba = cv2.resize(rgba, (n, n), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (n, n), interpolation=cv2.INTER_AREA)
    return Surround(rgba, mask, side / n)


def warp_surround(s: Surround, flip: bool, angle: float, scale: float) -> Surround:
    """The surround jittered like the defect (:func:`~defectforge.synth2d.masks.jitter_mask`:
    flip left-right, then rotate by ``angle`` degrees and scale about the window centre)."""
    rgba, mask = (s.rgba[:, ::-1], s.mask[:, ::-1]) if flip else (s.rgba, s.mask)
    n = rgba.shape[0]
    if angle == 0 and scale == 1:
        return Surround(np.ascontiguousarray(rgba), np.ascontiguousarray(mask), s.px)
    M = cv2.getRotationMatrix2D((n / 2, n / 2), angle, scale)
    kw = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return Surround(cv2.warpAffine(np.ascontiguousarray(rgba), M, (n, n), **kw),
                    cv2.warpAffine(np.ascontiguousarray(mask), M, (n, n), **kw), s.px)


def template(s: Surround, side_px: float, reach_px: float) -> tuple[np.ndarray, np.ndarray, tuple[float, float]] | None:
    """``(grey template, mask (float 0/1), defect box centre in the template (host px))``: the
    (jittered) surround cut to ``side_px`` host px around the defect's box, the defect dilated
    by ``reach_px`` and invalid pixels masked out. ``None`` when less than 10 % is left."""
    occ = s.mask > 0.01
    if not occ.any():
        return None
    ys, xs = np.nonzero(occ)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = max(4, int(round(side_px / s.px)))
    ta, la = int(round(cy - side / 2)), int(round(cx - side / 2))
    n = s.mask.shape[0]
    grey = np.zeros((side, side), np.float32)
    valid = np.zeros((side, side), np.float32)
    hole = np.zeros((side, side), np.uint8)
    ya, yb, xa, xb = max(0, ta), min(n, ta + side), max(0, la), min(n, la + side)
    if yb <= ya or xb <= xa:
        return None
    grey[ya - ta:yb - ta, xa - la:xb - la] = luminance(s.rgba[ya:yb, xa:xb, :3])
    valid[ya - ta:yb - ta, xa - la:xb - la] = s.rgba[ya:yb, xa:xb, 3] > 127
    hole[ya - ta:yb - ta, xa - la:xb - la] = occ[ya:yb, xa:xb]
    r = max(0, int(np.ceil(reach_px / s.px)))
    if r:
        hole = cv2.dilate(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    valid *= hole == 0
    if valid.mean() < 0.1:
        return None
    return grey, valid, ((cy - ta) * s.px, (cx - la) * s.px)


def host_grey(image: np.ndarray) -> np.ndarray:
    """Grey levels (float32) of an RGB host, as the templates are made."""
    return luminance(image)


def score_places(grey: np.ndarray, tmpl: np.ndarray, tmask: np.ndarray, px: float, level: float = 1.0
                 ) -> tuple[np.ndarray, float]:
    """``(score map, factor)``: the score (module doc) of every place where the template
    (``px`` host px per template px) lies inside the host ``grey``, on the host reduced by
    ``factor``."""
    side = tmpl.shape[0] * px  # host px
    f = max(1.0, side / MATCH_PX)
    H, W = grey.shape
    hs = cv2.resize(grey, (max(1, int(round(W / f))), max(1, int(round(H / f)))), interpolation=cv2.INTER_AREA)
    ts = max(2, int(round(side / f)))
    if ts >= min(hs.shape):
        return np.zeros((0, 0), np.float32), f
    t = cv2.resize(tmpl, (ts, ts), interpolation=cv2.INTER_AREA)
    tm = (cv2.resize(tmask, (ts, ts), interpolation=cv2.INTER_AREA) > 0.5).astype(np.float32)
    n = float(tm.sum())
    if n < 4:
        return np.zeros((0, 0), np.float32), f
    ncc = cv2.matchTemplate(hs, t, cv2.TM_CCOEFF_NORMED, mask=tm)
    ncc = np.where(np.isfinite(ncc), ncc, -1.0).astype(np.float32)
    if level <= 0:
        return ncc, f
    mh = cv2.matchTemplate(hs, tm, cv2.TM_CCORR) / n
    sh = np.sqrt(np.maximum(cv2.matchTemplate(hs * hs, tm, cv2.TM_CCORR) / n - mh * mh, 0))
    mt, st = float(t[tm > 0].mean()), float(t[tm > 0].std())
    gap = np.abs(np.log((mh + 1) / (mt + 1))) + np.abs(np.log((sh + 1) / (st + 1)))
    return (ncc - level * gap).astype(np.float32), f


def match(grey: np.ndarray, surround: Surround, jitter: dict, mask: np.ndarray, opts: ContextOptions,
          reach: int) -> Candidates | None:
    """The :class:`Candidates` of one jittered defect (``jitter``: the ``flip`` / ``rotate`` /
    ``scale`` that :func:`~defectforge.synth2d.masks.jitter_mask` applied to give ``mask``) on
    the host ``grey`` (:func:`host_grey`); ``reach``: px of the blend around the mask (left out
    of the comparison). ``None`` when too little of the surround is left to compare."""
    s = warp_surround(surround, jitter["flip"], jitter["rotate"], jitter["scale"])
    ys, xs = np.nonzero(mask)
    t = template(s, opts.window * max(int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1), reach)
    if t is None:
        return None
    scores, f = score_places(grey, t[0], t[1], s.px, opts.level)
    return Candidates(scores, f, t[2], mask)


def draw_place(cands: list[Candidates], roi: np.ndarray, top: float, rng: np.random.Generator,
               tries: int = 30) -> tuple[int, int, int, float] | None:
    """One place among the best ``top`` fraction of all tries' places whose defect centre
    lies in ``roi``: ``(y0, x0, try index, score)`` (the patch's top-left), or ``None`` when
    none with the whole mask in ``roi`` was found in ``tries`` draws."""
    H, W = roi.shape
    pts = []
    for k, c in enumerate(cands):
        if c.scores.size == 0:
            continue
        ii, jj = np.indices(c.scores.shape).reshape(2, -1)
        cy = np.round(ii * c.factor + c.centre[0]).astype(np.int64)
        cx = np.round(jj * c.factor + c.centre[1]).astype(np.int64)
        ok = (cy < H) & (cx < W)
        ok[ok] = roi[cy[ok], cx[ok]]
        pts.append((np.full(int(ok.sum()), k), cy[ok], cx[ok], c.scores.ravel()[ok]))
    if not pts:
        return None
    ks, cys, cxs, sc = (np.concatenate(v) for v in zip(*pts))
    if len(sc) == 0:
        return None
    best = np.argsort(-sc, kind="stable")[: max(1, int(np.ceil(top * len(sc))))]
    for _ in range(tries):
        p = int(best[int(rng.integers(len(best)))])
        m = cands[int(ks[p])].mask
        my, mx = np.nonzero(m)
        y0 = int(round(cys[p] - (my.min() + my.max() + 1) / 2))
        x0 = int(round(cxs[p] - (mx.min() + mx.max() + 1) / 2))
        ph, pw = m.shape
        if 0 <= y0 and 0 <= x0 and y0 + ph <= H and x0 + pw <= W and roi[y0:y0 + ph, x0:x0 + pw][m].all():
            return y0, x0, int(ks[p]), float(sc[p])
    return None
