"""Training items of a LoRA inpainting run: one square crop around each defect region.

:func:`make_items` splits each real defect mask into 8-connected regions (regions closer than
a few px merge), grows each by ``mask_dilate`` and cuts a square :func:`defect_crop` around
it (``context`` x its bounding box, at least ``min_crop``), resized to ``resolution``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from defectforge.errors import InputError

if TYPE_CHECKING:
    from defectforge.synth2d.diffusion.lora_config import LoraTrainConfig


@dataclass
class TrainItem:
    """One training crop: RGB uint8 ``resolution`` square and its bool mask."""

    image: np.ndarray
    mask: np.ndarray
    source: str = ""


def defect_crop(image: np.ndarray, mask: np.ndarray, resolution: int, context: float = 2.0,
                min_crop: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A square crop around the mask (side = ``context`` x bbox side, at least ``min_crop``),
    resized to ``resolution``; reflect-padded when the square leaves the image."""
    m = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(m)
    if len(ys) == 0:
        raise InputError(None, "empty defect mask")
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    side = int(math.ceil(max(min_crop, context * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))))
    y0, x0 = int(round(cy - side / 2)), int(round(cx - side / 2))
    H, W = m.shape
    pad = max(0, -y0, -x0, y0 + side - H, x0 + side - W)
    img = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT) if pad else image
    mk = m.astype(np.uint8)
    if pad:
        mk = cv2.copyMakeBorder(mk, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    crop = img[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
    mcrop = mk[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
    interp = cv2.INTER_AREA if side > resolution else cv2.INTER_CUBIC
    crop = cv2.resize(crop, (resolution, resolution), interpolation=interp)
    mcrop = cv2.resize(mcrop, (resolution, resolution), interpolation=cv2.INTER_NEAREST) > 0
    return np.ascontiguousarray(crop), mcrop


def make_items(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], cfg: LoraTrainConfig,
               sources: Sequence[str] | None = None) -> list[TrainItem]:
    """Training items: one crop per 8-connected defect region (regions closer than a few px merge)."""
    items: list[TrainItem] = []
    for k, (img, m) in enumerate(zip(images, masks)):
        src = sources[k] if sources else f"item{k}"
        m = np.asarray(m, dtype=bool)
        if m.shape != img.shape[:2]:
            raise InputError(src, f"mask {m.shape[1]}x{m.shape[0]} does not match image {img.shape[1]}x{img.shape[0]}")
        if not m.any():
            raise InputError(src, "mask is empty: every training image needs a defect mask")
        merged = cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8))
        n, lab = cv2.connectedComponents(merged, connectivity=8)
        for i in range(1, n):
            part = m & (lab == i)
            if part.sum() < 4:
                continue
            if cfg.mask_dilate:
                k = 2 * cfg.mask_dilate + 1
                part = cv2.dilate(part.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
            crop, mc = defect_crop(img, part, cfg.resolution, cfg.context, cfg.min_crop)
            items.append(TrainItem(crop, mc, src))
    if not items:
        raise InputError(None, "no usable defect regions (masks empty or below 4 px)")
    return items
