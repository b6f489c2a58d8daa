"""Pure functions that turn arrays into pictures (nothing is written to disk here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from defectforge.data.image_io import as_rgb8

if TYPE_CHECKING:
    from defectforge.report.panels import MapScale


def line_width(shape: tuple[int, ...], display_width: int = 480) -> int:
    """Contour width in pixels that stays at least ~1.5 px when the image is shown
    ``display_width`` wide (a 1-px outline vanishes when a 1130-px image is shrunk)."""
    return max(1, int(np.ceil(1.5 * max(shape[:2]) / display_width)))


def mask_overlay(image: np.ndarray, mask: np.ndarray | None, color=(255, 40, 40), alpha: float = 0.45,
                 contour: bool = True, thickness: int | None = None) -> np.ndarray:
    """The image with the mask filled translucent and outlined (outline width from
    :func:`line_width` unless ``thickness``)."""
    import cv2

    out = as_rgb8(image).copy()
    if mask is None:
        return out
    m = np.asarray(mask) > 0
    if m.shape != out.shape[:2]:
        raise ValueError(f"mask shape {m.shape} differs from image shape {out.shape[:2]}")
    col = np.array(color, dtype=np.float32)
    out[m] = np.clip(out[m].astype(np.float32) * (1 - alpha) + col * alpha, 0, 255).astype(np.uint8)
    if contour and m.any():
        cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, cnts, -1, tuple(int(c) for c in color), thickness or line_width(out.shape))
    return out


def heatmap_overlay(image: np.ndarray, amap: np.ndarray, vmin: float | None = None, vmax: float | None = None,
                    alpha: float = 0.5, mask: np.ndarray | None = None, scale: "MapScale | None" = None) -> np.ndarray:
    """The image blended with the coloured anomaly map.

    Pass one ``scale`` (:class:`~defectforge.report.panels.MapScale`) for every image of a
    report or a predict run, so colours compare across images; ``vmin``/``vmax`` are the
    older spelling of the same; with neither, the map is stretched to its own min-max
    (only for a lone picture). ``mask`` is outlined in white.
    """
    import cv2

    from defectforge.report.panels import MapScale, colorize

    base = as_rgb8(image)
    a = np.asarray(amap, dtype=np.float32)
    if a.shape != base.shape[:2]:
        a = cv2.resize(a, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    if scale is None:
        lo = float(np.min(a)) if vmin is None else vmin
        hi = float(np.max(a)) if vmax is None else vmax
        scale = MapScale(lo, hi if hi > lo else lo + 1.0)
    colored = colorize(a, scale)
    out = (base.astype(np.float32) * (1 - alpha) + colored.astype(np.float32) * alpha).astype(np.uint8)
    if mask is not None and np.any(mask):
        cnts, _ = cv2.findContours((np.asarray(mask) > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        out = np.ascontiguousarray(out)
        cv2.drawContours(out, cnts, -1, (255, 255, 255), line_width(out.shape))
    return out


def side_by_side(*images: np.ndarray, gap: int = 4) -> np.ndarray:
    """Images of the same height next to each other (resized to the first's height)."""
    import cv2

    ims = [as_rgb8(im) for im in images]
    h = ims[0].shape[0]
    ims = [im if im.shape[0] == h else cv2.resize(im, (max(1, round(im.shape[1] * h / im.shape[0])), h)) for im in ims]
    spacer = np.full((h, gap, 3), 255, np.uint8)
    parts = []
    for i, im in enumerate(ims):
        if i:
            parts.append(spacer)
        parts.append(im)
    return np.concatenate(parts, axis=1)


def draw_boxes(image: np.ndarray, gt: list | None = None, pred: list | None = None, min_score: float = 0.0,
               gt_color=(40, 220, 40), pred_color=(255, 140, 0)) -> np.ndarray:
    """Predicted boxes (orange, those with ``score >= min_score``, highest first, the score
    written where it does not overlap an earlier label) and ground-truth boxes on top
    (green); line widths survive a report's shrinking."""
    import cv2

    out = as_rgb8(image).copy()
    lw = line_width(out.shape)
    fs = max(0.4, lw * 0.35)
    kept = [b for b in pred or [] if b.score is None or b.score >= min_score]
    kept.sort(key=lambda b: -(b.score if b.score is not None else np.inf))
    taken: list[tuple[int, int, int, int]] = []
    for b in kept:
        p0 = (int(round(b.x0)), int(round(b.y0)))
        cv2.rectangle(out, p0, (int(round(b.x1)) - 1, int(round(b.y1)) - 1), pred_color, lw)
        text = b.label if b.score is None else f"{b.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, max(1, lw // 2))
        org = (p0[0], max(th + 2, p0[1] - 3))
        rect = (org[0], org[1] - th, org[0] + tw, org[1])
        if any(not (rect[2] < r[0] or r[2] < rect[0] or rect[3] < r[1] or r[3] < rect[1]) for r in taken):
            continue
        taken.append(rect)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, fs, pred_color, max(1, lw // 2), cv2.LINE_AA)
    for b in gt or []:
        cv2.rectangle(out, (int(round(b.x0)), int(round(b.y0))), (int(round(b.x1)) - 1, int(round(b.y1)) - 1),
                      gt_color, lw)
    return out
