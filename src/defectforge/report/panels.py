"""Per-image panels on one colour scale: image | ground truth | anomaly map | predicted mask,
with a colour bar on which the threshold sits at a fixed colour.

One :class:`MapScale` is chosen per report (or per ``detect predict`` run) and used for every
image, so a good image can never look hotter than a defect because its own maximum was
stretched to red. :func:`map_scale` puts the model's pixel threshold at the middle of the
colour map (the same colour in every report), with the range ``[lo, 2 * threshold - lo]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from defectforge.data.image_io import as_rgb8

#: the colour map of every anomaly map (OpenCV's TURBO: perceptually ordered, dark blue -> dark red)
THRESHOLD_POSITION = 0.5
GT_COLOR = (255, 40, 40)
PRED_COLOR = (40, 200, 255)


@dataclass(frozen=True)
class MapScale:
    """Map value ``lo`` -> colour 0, ``hi`` -> colour 1 (values outside are clipped)."""

    lo: float
    hi: float
    threshold: float | None = None

    def normalise(self, amap: np.ndarray) -> np.ndarray:
        span = self.hi - self.lo if self.hi > self.lo else 1.0
        return np.clip((np.asarray(amap, dtype=np.float32) - self.lo) / span, 0.0, 1.0)

    def to_dict(self) -> dict[str, float | None]:
        return {"lo": float(self.lo), "hi": float(self.hi), "threshold": self.threshold}


def map_scale(threshold: float | None, maps: Sequence[np.ndarray] = ()) -> MapScale:
    """The fixed scale of a report or predict run.

    With a finite pixel ``threshold``: ``lo`` = 0 (or the lowest map value if some are
    negative), ``hi = 2 * threshold - lo``, so the threshold lands at colour 0.5. Without one:
    ``lo`` / ``hi`` = the minimum and the 99.9 % quantile of ``maps`` (all of them together)."""
    mins = [float(np.min(m)) for m in maps]
    lo = min([0.0, *mins])
    if threshold is not None and np.isfinite(threshold) and threshold > lo:
        return MapScale(lo, 2 * float(threshold) - lo, float(threshold))
    if not maps:
        return MapScale(0.0, 1.0, None)
    lo = min(mins)
    hi = float(np.quantile(np.concatenate([np.asarray(m, np.float32).reshape(-1)[::7] for m in maps]), 0.999))
    return MapScale(lo, hi if hi > lo else lo + 1.0, None)


def colorize(amap: np.ndarray, scale: MapScale) -> np.ndarray:
    """``H x W x 3`` uint8 RGB colours of ``amap`` on ``scale``."""
    import cv2

    idx = np.rint(scale.normalise(amap) * 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(idx, cv2.COLORMAP_TURBO)[..., ::-1])


def _label(img: np.ndarray, text: str, height: int) -> np.ndarray:
    """``img`` with a white band of ``height`` px on top holding ``text``."""
    import cv2

    band = np.full((height, img.shape[1], 3), 255, np.uint8)
    fs = height / 34.0
    cv2.putText(band, text, (4, int(height * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, fs, (20, 20, 20),
                max(1, int(round(fs * 1.6))), cv2.LINE_AA)
    return np.concatenate([band, img], axis=0)


def colorbar(height: int, scale: MapScale, width: int | None = None, font: float | None = None) -> np.ndarray:
    """A vertical colour bar (high values on top) with the range and the threshold labelled
    (``font``: OpenCV font scale, default from the height)."""
    import cv2

    width = width or max(90, height // 3)
    bar_w = max(12, width // 5)
    out = np.full((height, width, 3), 255, np.uint8)
    fs = font or max(0.35, height / 900.0)
    pad = max(8, int(14 * fs))
    ramp = np.linspace(1.0, 0.0, height - 2 * pad, dtype=np.float32)[:, None].repeat(bar_w, axis=1)
    out[pad:height - pad, 4:4 + bar_w] = colorize(scale.lo + ramp * (scale.hi - scale.lo), scale)
    th = max(1, int(round(fs * 1.8)))

    def y_of(v: float) -> int:
        f = (v - scale.lo) / (scale.hi - scale.lo if scale.hi > scale.lo else 1.0)
        return int(round(pad + (1 - f) * (height - 2 * pad - 1)))

    ticks = [(scale.hi, f"{scale.hi:.3g}"), (scale.lo, f"{scale.lo:.3g}")]
    if scale.threshold is not None:
        ticks.append((scale.threshold, f"thr {scale.threshold:.3g}"))
    for v, text in ticks:
        y = y_of(v)
        cv2.line(out, (2, y), (8 + bar_w, y), (0, 0, 0), th)
        cv2.putText(out, text, (10 + bar_w, min(height - 3, max(12, y + int(5 * fs * 2)))),
                    cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), th, cv2.LINE_AA)
    return out


def panel(image: np.ndarray, amap: np.ndarray, scale: MapScale, gt: np.ndarray | None = None,
          pred: np.ndarray | None = None, gap: int = 6, with_gt: bool = True) -> np.ndarray:
    """``image | ground truth | anomaly map | predicted mask | colour bar`` as one RGB array.

    The ground truth is filled translucent red with a thick outline (it survives the
    shrinking of a report gallery); the predicted mask (``map >= threshold`` unless given)
    is filled cyan with the ground-truth outline on top, so misses and false alarms show.
    ``with_gt=False`` leaves the ground-truth tile out (``detect predict`` has none).
    """
    import cv2

    from defectforge.report.visual import heatmap_overlay, line_width, mask_overlay

    rgb = as_rgb8(image)
    h, w = rgb.shape[:2]
    a = np.asarray(amap, dtype=np.float32)
    if a.shape != (h, w):
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
    if pred is None and scale.threshold is not None:
        pred = a >= scale.threshold
    gt_b = None if gt is None else np.asarray(gt) > 0
    tiles = [("image", rgb)]
    if with_gt:
        tiles.append(("ground truth", mask_overlay(rgb, gt_b, GT_COLOR, alpha=0.4)))
    tiles.append(("anomaly map", heatmap_overlay(rgb, a, scale=scale, alpha=0.6)))
    pm = mask_overlay(rgb, pred, PRED_COLOR, alpha=0.5)
    if gt_b is not None and gt_b.any():
        cnts, _ = cv2.findContours(gt_b.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(pm, cnts, -1, GT_COLOR, line_width(pm.shape))
    tiles.append(("predicted mask" + (" (thr)" if scale.threshold is not None else ""), pm))
    # wide images (BSData is 1130 x 460) as 2 x 2, others in a row; text sized for ~1000 px display
    cols = 2 if w > 1.5 * h and len(tiles) == 4 else len(tiles)
    bar_w = max(110, w // 3)
    fs = max(0.45, (cols * w + bar_w) / 1500.0)
    band = int(34 * fs)
    labelled = [_label(t, name, band) for name, t in tiles]
    labelled += [np.full_like(labelled[0], 255)] * (-len(labelled) % cols)  # fill the last row
    rows = [labelled[i:i + cols] for i in range(0, len(labelled), cols)]
    grid = [np.concatenate(_join(r, np.full((h + band, gap, 3), 255, np.uint8)), axis=1) for r in rows]
    body = np.concatenate(_join(grid, np.full((gap, grid[0].shape[1], 3), 255, np.uint8)), axis=0)
    bar = _label(colorbar(body.shape[0] - band, scale, width=bar_w, font=fs), "map", band)
    return np.concatenate([body, np.full((body.shape[0], gap, 3), 255, np.uint8), bar], axis=1)


def _join(items: list[np.ndarray], spacer: np.ndarray) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for it in items:
        if out:
            out.append(spacer)
        out.append(it)
    return out


def run_thresholds(model, threshold: float | None = None, pixel_threshold: float | None = None,
                   maps: Sequence[np.ndarray] | None = None) -> tuple[float | None, float | None, MapScale | None]:
    """``(image threshold, pixel threshold, colour scale)`` of a predict run: the given
    values, else the model's (chosen on validation at fit time). The scale is ``None`` until
    it can be fixed: at once with a pixel threshold, else from the first chunk's ``maps``
    (then kept for the whole run)."""

    def finite(v):
        return None if v is None or not np.isfinite(v) else float(v)

    from defectforge.errors import ConfigError
    from defectforge.report.threshold import model_thresholds

    for name, v in (("threshold", threshold), ("pixel_threshold", pixel_threshold)):
        if v is not None and not np.isfinite(v):  # given NaN would flag nothing, silently
            raise ConfigError(f"{name} must be a finite number, got {v}")
    m_thr, m_pthr = model_thresholds(model)
    thr = finite(threshold if threshold is not None else m_thr)
    pthr = finite(pixel_threshold if pixel_threshold is not None else m_pthr)
    scale = map_scale(pthr) if pthr is not None else (map_scale(None, maps) if maps else None)
    return thr, pthr, scale


def prediction_panel(image: np.ndarray, amap: np.ndarray, scale: MapScale, mask: np.ndarray | None) -> np.ndarray:
    """``image | anomaly map | predicted mask | colour bar`` of one ``detect predict`` image."""
    return panel(image, amap, scale, pred=mask, with_gt=False)
