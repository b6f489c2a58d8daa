"""Appearance helpers shared by the procedural renderers: local image statistics, the
image's own lighting direction, and Lambertian shading of a height map.

Defects take their look from the surface they are put on (local mean, contrast and
colour, light direction), so they read as part of the surface rather than a sticker.
"""

from __future__ import annotations

import cv2
import numpy as np


def luminance(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float32)
    return 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]


def local_stats(crop: np.ndarray) -> dict[str, float]:
    """Mean and standard deviation of the luminance of a crop (after removing its smooth
    shading), and a robust grain level (median absolute Laplacian)."""
    y = luminance(crop)
    smooth = cv2.GaussianBlur(y, (0, 0), 3)
    grain = float(np.median(np.abs(y - smooth))) + 0.5
    return {"mean": float(y.mean()), "std": float(y.std()) + 1.0, "grain": grain}


def light_direction(image: np.ndarray) -> tuple[float, float]:
    """Estimated in-plane light direction (dy, dx), unit length, pointing **towards** the
    light: the mean gradient of the heavily smoothed luminance (surfaces are brighter on
    the side the light comes from). Falls back to top-left when the image is flat."""
    small = cv2.resize(image, (64, max(8, int(64 * image.shape[0] / max(1, image.shape[1])))), interpolation=cv2.INTER_AREA)
    y = cv2.GaussianBlur(luminance(small), (0, 0), 4)
    gy, gx = np.gradient(y)
    v = np.array([gy.mean(), gx.mean()])
    n = float(np.hypot(*v))
    if n < 1e-3:
        return (-0.7071, -0.7071)
    return (float(v[0] / n), float(v[1] / n))


def shade(height: np.ndarray, light: tuple[float, float], elevation: float = 0.6, strength: float = 1.0) -> np.ndarray:
    """Change in Lambertian brightness (relative, 0 = flat surface) of a height map lit
    from the in-plane direction ``light`` (dy, dx) at ``elevation`` (sine of the angle)."""
    gy, gx = np.gradient(height.astype(np.float32) * strength)
    nz = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny = -gx * nz, -gy * nz
    c = np.sqrt(max(1e-6, 1 - elevation ** 2))
    lx, ly, lz = light[1] * c, light[0] * c, elevation
    return (nx * lx + ny * ly + nz * lz) / lz - 1.0
