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


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of size ``2 * int(4 sigma + 0.5) + 1``."""
    r = int(4.0 * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, H, W)`` float maps, reflect padding (float, never
    quantised). ``sigma <= 0`` returns the input."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma)
    r = (len(k) - 1) // 2
    x = maps[:, None]
    h, w = x.shape[-2:]
    mode = "reflect" if r < h and r < w else "replicate"
    x = F.pad(x, (r, r, r, r), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0]


def patch_maps_to_input(patch_maps: np.ndarray, size: tuple[int, int], mode: str = "bilinear",
                        sigma: float = 4.0) -> np.ndarray:
    """``(B, h, w)`` patch maps -> ``(B, H, W)`` float32 maps at the model input size,
    upsampled (``bilinear`` or ``nearest``) then Gaussian-smoothed."""
    t = torch.from_numpy(np.ascontiguousarray(patch_maps, dtype=np.float32))[:, None]
    kw = {"align_corners": False} if mode == "bilinear" else {}
    t = F.interpolate(t, size=tuple(size), mode=mode, **kw)[:, 0]
    return gaussian_blur(t, sigma).numpy()
