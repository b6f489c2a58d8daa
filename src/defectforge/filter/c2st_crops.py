"""Crops and appearance statistics for the C2ST realism test (:mod:`defectforge.filter.c2st`).

**Defect crops.** One crop per defect instance (connected component of the mask, the largest
``max_per_image`` per image), a square centred on the instance's box (reflected at the image
borders), at the image's own resolution; the backbone resizes it to its input size. Two
sizes:

- ``window=None`` (**defect-centred**, the default of the test): the side is ``DEFECT_SCALE``
  (2) times the instance's longer box side, at least ``DEFECT_MIN`` px. The rule, fixed before
  any measurement and independent of the data: the defect's box spans the central half of the
  crop on each axis, so the defect is the crop's main content and its immediate surround (half
  its size on each side) is still seen. Every defect fills its crop alike, so size is compared
  by the appearance statistics (log area, box sides), not by the backbone.
- ``window=W`` (fixed window): the same ``W`` px square for every instance of both sets
  (:func:`window_from_boxes` picks it from the real boxes), so the backbone also sees size,
  but a small defect is then a small part of a mostly-surface crop.

**Host crops** (:func:`host_crops`): the same kind of crop taken from places *without* a
defect: drawn from the real defects' places (relative position in the image and crop side,
:func:`defect_places`), kept only where the crop and a margin of half its side around it hold
no mask pixel of that image. Real host crops come from the real defect images, synthetic ones
from the synthetic images (their hosts), so a C2ST between them measures how the host
surfaces differ, with no defect in view.

**Appearance statistics** (10 per instance, native resolution): log area, log box width /
height, grey contrast (inside minus a 3 px ring), inside and ring std, edge strength (mean
gradient on the boundary) and the per-channel colour difference inside vs ring.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

APPEARANCE = ("log_area", "log_width", "log_height", "contrast", "std_in", "std_ring", "edge",
              "d_red", "d_green", "d_blue")
DEFECT_SCALE = 2.0  # defect-centred crop side / the instance's longer box side
DEFECT_MIN = 16  # px: the smallest defect-centred crop


def instances(mask: np.ndarray, max_per_image: int) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """``(component mask at the image size, (x0, y0, x1, y1))`` of the largest
    ``max_per_image`` 8-connected components (:func:`defectforge.synth2d.masks.components`;
    equal areas keep their label order)."""
    from defectforge.synth2d.masks import components

    comps = components(mask)
    order = sorted(range(len(comps)), key=lambda i: -int(comps[i][0].sum()))[:max_per_image]
    out = []
    for i in order:
        patch, (y0, x0, y1, x1) = comps[i]
        full = np.zeros(mask.shape[:2], bool)
        full[y0:y1, x0:x1] = patch
        out.append((full, (x0, y0, x1, y1)))
    return out


def instance_boxes(samples: Sequence[Any], max_per_image: int = 4) -> list[tuple[int, int, int, int]]:
    """Boxes of the defect instances of ``samples`` (masks only)."""
    out = []
    for s in samples:
        m = s.mask
        if m is not None and m.any():
            out.extend(b for _, b in instances(m, max_per_image))
    return out


def window_from_boxes(boxes: Sequence[tuple[int, int, int, int]], scale: float = 2.0, minimum: int = 32) -> int:
    """Fixed crop window side (px) from the real instances' boxes: ``scale`` x their 90th
    percentile side, at least ``minimum``."""
    if not boxes:
        return int(minimum)
    sides = [max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes]
    return int(max(minimum, round(scale * float(np.quantile(sides, 0.9)))))


def crop_side(box: tuple[int, int, int, int], window: int | None) -> int:
    """The crop side for an instance box: ``window``, or defect-centred when ``None``."""
    if window is not None:
        return int(window)
    x0, y0, x1, y1 = box
    return int(max(DEFECT_MIN, int(np.ceil(DEFECT_SCALE * max(x1 - x0, y1 - y0)))))


def _reflect101(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices mapped into ``[0, n)`` as OpenCV's ``BORDER_REFLECT_101`` does (``dcb|abcd|cba``)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    i = np.mod(idx, period)
    return np.where(i < n, i, period - i)


def _crop(rgb: np.ndarray, cy: int, cx: int, side: int) -> np.ndarray:
    """``side`` x ``side`` square centred at ``(cy, cx)``, reflected at the borders (only the
    crop's own pixels are gathered; the image is not padded)."""
    half = side // 2
    rows = _reflect101(np.arange(cy - half, cy - half + side), rgb.shape[0])
    cols = _reflect101(np.arange(cx - half, cx - half + side), rgb.shape[1])
    return np.ascontiguousarray(rgb[rows[:, None], cols[None, :]])


def _appearance(rgb: np.ndarray, comp: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    p = 8
    ys, xs = slice(max(0, y0 - p), y1 + p), slice(max(0, x0 - p), x1 + p)
    sub, m = rgb[ys, xs].astype(np.float64), comp[ys, xs]
    grey = sub @ np.array([0.299, 0.587, 0.114])
    ring = cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~m
    if not ring.any():
        ring = ~m if (~m).any() else m
    inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    edge_px = m & ~inner
    gy, gx = np.gradient(grey)
    grad = np.hypot(gx, gy)
    d_col = sub[m].mean(0) - sub[ring].mean(0)
    return np.array([np.log(m.sum()), np.log(x1 - x0), np.log(y1 - y0), grey[m].mean() - grey[ring].mean(),
                     grey[m].std(), grey[ring].std(), grad[edge_px].mean() if edge_px.any() else 0.0, *d_col])


def crops_and_stats(samples: Sequence[Any], window: int | None, max_per_image: int = 4
                    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """``(crops, appearance stats (N, 10), image index per crop)`` for ``samples``: fixed
    ``window`` px crops, or defect-centred ones when ``window`` is ``None`` (module doc);
    samples without mask pixels give nothing."""
    crops, stats, groups = [], [], []
    for k, s in enumerate(samples):
        m = s.mask
        if m is None or not m.any():
            continue
        rgb = s.rgb()
        if m.shape != rgb.shape[:2]:
            continue
        for comp, box in instances(m, max_per_image):
            cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
            crops.append(_crop(rgb, cy, cx, crop_side(box, window)))
            stats.append(_appearance(rgb, comp, box))
            groups.append(k)
    return crops, np.array(stats, np.float64).reshape(-1, len(APPEARANCE)), np.array(groups, np.int64)


def defect_places(samples: Sequence[Any], window: int | None, max_per_image: int = 4
                  ) -> list[tuple[float, float, int]]:
    """``(y / height, x / width, crop side)`` of the defect instances of ``samples`` (box
    centres, relative to the image size): where :func:`host_crops` looks."""
    out = []
    for s in samples:
        m = s.mask
        if m is None or not m.any():
            continue
        h, w = m.shape
        for _, box in instances(m, max_per_image):
            out.append((((box[1] + box[3]) // 2) / h, ((box[0] + box[2]) // 2) / w, crop_side(box, window)))
    return out


def host_crops(samples: Sequence[Any], places: Sequence[tuple[float, float, int]], rng: np.random.Generator,
               per_image: int = 2, tries: int = 50) -> tuple[list[np.ndarray], np.ndarray]:
    """``(crops, image index per crop)``: up to ``per_image`` crops per sample at places drawn
    (seeded by ``rng``) from ``places``, each kept only when the crop and a margin of half its
    side around it hold no mask pixel of that sample (``tries`` draws per crop)."""
    crops, groups = [], []
    if not places:
        return crops, np.zeros(0, np.int64)
    for k, s in enumerate(samples):
        rgb = s.rgb()
        h, w = rgb.shape[:2]
        m = s.mask if s.mask is not None and s.mask.shape == (h, w) else np.zeros((h, w), bool)
        got = 0
        for _ in range(per_image * tries):
            if got == per_image:
                break
            fy, fx, side = places[int(rng.integers(len(places)))]
            cy, cx = min(h - 1, int(round(fy * h))), min(w - 1, int(round(fx * w)))
            if m[max(0, cy - side):cy + side + 1, max(0, cx - side):cx + side + 1].any():
                continue
            crops.append(_crop(rgb, cy, cx, side))
            groups.append(k)
            got += 1
    return crops, np.array(groups, np.int64)
