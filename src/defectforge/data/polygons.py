"""Polygons <-> masks, in one convention for every format.

Coordinates are pixel coordinates with the **centre** of pixel ``(col, row)`` at
``(x=col, y=row)`` (labelme's and PIL's convention). Rasterising follows labelme's own
``shape_to_mask``: PIL ``ImageDraw.polygon`` with fill and outline, so a polygon covers
every pixel its outline passes through. This reproduces BSData's ``masks/*.png`` from its
``labelme/*.json`` exactly (tested on all 167 pairs).

:func:`mask_to_polygons` traces the outer boundary of each 8-connected component through
the centres of its boundary pixels; rasterising those polygons gives back the component
exactly when it has no holes (holes are filled: polygons cannot express them, use RLE).
"""

from __future__ import annotations

import base64
import io
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

Polygon = np.ndarray  # (N, 2) float array of (x, y)


def _draw(shape: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    h, w = int(shape[0]), int(shape[1])
    im = Image.new("L", (w, h), 0)
    return im, ImageDraw.Draw(im)


def _xy(points: Sequence[Sequence[float]] | np.ndarray) -> list[tuple[float, float]]:
    arr = np.asarray(points, dtype=float).reshape(-1, 2)
    return [(float(x), float(y)) for x, y in arr]


def draw_polygon(draw: ImageDraw.ImageDraw, points: Sequence[Sequence[float]] | np.ndarray) -> None:
    """Fill a polygon and its outline; 1 point draws a pixel and 2 points a line."""
    xy = _xy(points)
    if len(xy) == 0:
        return
    if len(xy) == 1:
        draw.point(xy, fill=1)
    elif len(xy) == 2:
        draw.line(xy, fill=1, width=1)
    else:
        draw.polygon(xy, fill=1, outline=1)


def polygons_to_mask(polygons: Iterable[Sequence[Sequence[float]] | np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Union of the filled polygons as a boolean ``H x W`` mask (``shape`` = (H, W))."""
    im, draw = _draw(shape)
    for poly in polygons:
        draw_polygon(draw, poly)
    return np.asarray(im, dtype=np.uint8) > 0


def draw_shape(draw: ImageDraw.ImageDraw, shape_type: str, points: Sequence[Sequence[float]],
               line_width: int = 10, point_size: int = 5, mask_b64: str | None = None,
               canvas: Image.Image | None = None) -> None:
    """Draw one labelme shape (polygon, rectangle, circle, line, linestrip, point, mask).

    Line widths and point sizes are labelme's defaults (10 and 5 pixels).
    """
    xy = _xy(points)
    if shape_type in ("polygon", "") or shape_type is None:
        draw_polygon(draw, xy)
    elif shape_type == "rectangle":
        (x0, y0), (x1, y1) = xy[0], xy[-1]
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=1, outline=1)
    elif shape_type == "circle":
        (cx, cy), (px, py) = xy[0], xy[1]
        r = float(np.hypot(px - cx, py - cy))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1, outline=1)
    elif shape_type in ("line", "linestrip"):
        draw.line(xy, fill=1, width=line_width)
    elif shape_type == "point":
        cx, cy = xy[0]
        r = point_size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1, outline=1)
    elif shape_type == "mask":
        if mask_b64 is None or canvas is None:
            raise ValueError("a 'mask' shape needs its base64 PNG and the canvas")
        try:
            sub = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask_b64))))
        except OSError as exc:  # PIL's UnidentifiedImageError, a truncated PNG
            raise ValueError(f"the 'mask' shape's base64 data is not an image ({exc.__class__.__name__})") from None
        if sub.ndim == 3:
            sub = sub.max(axis=2)
        x0, y0 = int(round(xy[0][0])), int(round(xy[0][1]))
        piece = Image.fromarray((sub > 0).astype(np.uint8))
        canvas.paste(1, (x0, y0), piece.point(lambda v: 255 if v else 0).convert("1"))
    else:
        raise ValueError(f"unsupported shape_type {shape_type!r}")


def mask_to_polygons(mask: np.ndarray) -> list[Polygon]:
    """One outer polygon per 8-connected component of ``mask`` (integer pixel centres)."""
    import cv2

    m = (np.asarray(mask) > 0).astype(np.uint8)
    if not m.any():
        return []
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = [c.reshape(-1, 2).astype(float) for c in contours]
    # findContours' order is bottom-up; sort top-left first for stable files.
    out.sort(key=lambda p: (p[:, 1].min(), p[:, 0].min()))
    return out


def component_masks(mask: np.ndarray, connectivity: int = 8) -> list[np.ndarray]:
    """Each connected component of ``mask`` as its own boolean mask, top-left first."""
    import cv2

    m = (np.asarray(mask) > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=connectivity)
    order = sorted(range(1, n), key=lambda i: (stats[i][1], stats[i][0]))
    return [labels == i for i in order]


def polygon_bbox(poly: np.ndarray) -> tuple[float, float, float, float]:
    """Pixel box ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive, of a centre-convention polygon."""
    p = np.asarray(poly, dtype=float).reshape(-1, 2)
    x0, y0 = np.floor(p.min(axis=0) + 0.5)
    x1, y1 = np.floor(p.max(axis=0) + 0.5) + 1
    return float(x0), float(y0), float(x1), float(y1)
