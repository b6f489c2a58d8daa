"""Image scores and pixel maps from nearest-neighbour distances (PatchCore / ExDD).

Notation (docs/detection-2d.md, sections 5, 6 and 9): for a test image with patch rows
``p``, ``d(p)`` is the distance to the nearest row of a bank. ``s* = max_p d(p)`` is
attained at patch ``p*`` whose nearest bank row is ``m*``.

- ExDD weight (k neighbours, temperature ``tau = sqrt(D)``): with ``N`` the k nearest rows
  of ``m*`` in its own bank without ``m*`` itself,
  ``r = exp(s*/tau) / sum_{n in N} exp(||p* - n|| / tau)``;
  normal bank ``w- = 1 - r``, defect bank ``w+ = r``; ``S = w- s-* / (w+ s+* + eps)``.
- PatchCore weight (b neighbours including ``m*``): ``w = 1 - softmax(||p* - n_j||)_0``.
- ``none``: ``w = 1``.

With an empty defect bank the ratio's denominator is 1, i.e. PatchCore.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WEIGHTINGS = ("exdd", "patchcore", "none")


def exdd_ratio(p_star: np.ndarray, s_star: float, others: np.ndarray, tau: float) -> float:
    """``r = exp(s*/tau) / sum_n exp(||p* - n||/tau)`` over the neighbour rows ``others``
    (the k nearest rows of ``m*`` without ``m*``), computed stably as
    ``1 / sum_n exp((||p* - n|| - s*)/tau)``. Returns 0 when ``others`` is empty."""
    if len(others) == 0:
        return 0.0
    d = np.linalg.norm(others.astype(np.float64) - p_star.astype(np.float64), axis=1)
    return float(1.0 / np.sum(np.exp((d - float(s_star)) / tau)))


def patchcore_weight(p_star: np.ndarray, support: np.ndarray) -> float:
    """``1 - softmax(d)_0`` with ``d_j = ||p* - n_j||`` over ``support`` (``m*`` first)."""
    if len(support) <= 1:
        return 1.0
    d = np.linalg.norm(support.astype(np.float64) - p_star.astype(np.float64), axis=1)
    e = np.exp(d - d.max())
    return float(1.0 - e[0] / e.sum())


def gaussian_kernel1d(sigma: float) -> np.ndarray:
    """Normalised 1-D float32 Gaussian of size ``2 * int(4 sigma + 0.5) + 1``."""
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def gaussian_blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``(B, H, W)`` float32 maps (float, never quantised), with
    mirror padding (the edge pixel not repeated, as ``scipy.ndimage``'s ``"mirror"``), or
    edge replication when the kernel is wider than the map. OpenCV's separable filter:
    ~15x faster than a one-channel torch convolution on the CPU. ``sigma <= 0`` returns the
    input."""
    import cv2

    maps = np.asarray(maps, dtype=np.float32)
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma)
    r = (len(k) - 1) // 2
    h, w = maps.shape[-2:]
    border = cv2.BORDER_REFLECT_101 if r < h and r < w else cv2.BORDER_REPLICATE
    out = np.empty_like(maps)
    for i, m in enumerate(maps):
        out[i] = cv2.sepFilter2D(np.ascontiguousarray(m), cv2.CV_32F, k, k, borderType=border)
    return out


def patch_maps_to_input(patch_maps: np.ndarray, size: tuple[int, int], mode: str = "bilinear",
                        sigma: float = 4.0) -> np.ndarray:
    """``(B, h, w)`` patch maps -> ``(B, H, W)`` float32 maps at the model input size,
    upsampled (``bilinear`` or ``nearest``) then Gaussian-smoothed."""
    t = torch.from_numpy(np.ascontiguousarray(patch_maps, dtype=np.float32))[:, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    t = F.interpolate(t, size=tuple(size), mode=mode, **kw)[:, 0]
    return gaussian_blur(t.numpy(), sigma)
