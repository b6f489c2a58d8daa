"""Set-level quality of synthetic defects: KID and precision/recall/density/coverage.

Both work on any embedding (rows = samples). defectforge computes them on the bundled
EfficientNet-Lite0 features of defect crops (:func:`set_quality`), so no Inception weights
are needed; values are therefore **not** comparable to published Inception-based KID/FID.
FID is not implemented (unstable below ~1k samples, and it needs Inception weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from defectforge.errors import ConfigError, InputError


def _as2d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise InputError(None, f"{name} must be a non-empty 2-D array (samples x features), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(None, f"{name} contains NaN or infinite values")
    return a


def _poly_mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef: float) -> float:
    kxx = (gamma * x @ x.T + coef) ** degree
    kyy = (gamma * y @ y.T + coef) ** degree
    kxy = (gamma * x @ y.T + coef) ** degree
    m, n = len(x), len(y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(real: Any, fake: Any, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Kernel Inception Distance on given features (Binkowski et al. 2018).

    Unbiased MMD^2 with the polynomial kernel ``k(x, y) = (gamma x.y + coef)^degree``
    (``gamma = 1/d`` by default), averaged over ``subsets`` random subsets of
    ``min(subset_size, n_real, n_fake)`` rows drawn without replacement from each set.
    Returns ``{"kid_mean", "kid_std", "subset_size", "subsets"}``. Same distribution -> about
    0 (it can be slightly negative: the estimator is unbiased).
    """
    x, y = _as2d(real, "real features"), _as2d(fake, "fake features")
    if x.shape[1] != y.shape[1]:
        raise InputError(None, f"feature sizes differ: real {x.shape[1]}, fake {y.shape[1]}")
    m = min(int(subset_size), len(x), len(y))
    if m < 2:
        raise InputError(None, f"KID needs at least 2 samples per set (real {len(x)}, fake {len(y)})")
    if subsets < 1:
        raise ConfigError(f"subsets must be >= 1, got {subsets}")
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    rng = np.random.default_rng(seed)
    vals = np.empty(int(subsets))
    for i in range(int(subsets)):
        xi = x[rng.choice(len(x), m, replace=False)]
        yi = y[rng.choice(len(y), m, replace=False)]
        vals[i] = _poly_mmd2_unbiased(xi, yi, degree, g, coef)
    return {"kid_mean": float(vals.mean()), "kid_std": float(vals.std()), "subset_size": m, "subsets": int(subsets)}


def _pdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def prdc(real: Any, fake: Any, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` w.r.t. ``real`` (Naeem et al. 2020).

    Each set's manifold is the union of balls around its points with radius = distance to
    the k-th nearest neighbour in the same set. precision: share of fake points inside the
    real manifold; recall: share of real points inside the fake manifold; density: mean
    number of real balls containing a fake point, divided by k; coverage: share of real
    points whose ball contains at least one fake point. Identical sets give precision =
    recall = coverage = 1.
    """
    x, y = _as2d(real, "real features"), _as2d(fake, "fake features")
    if x.shape[1] != y.shape[1]:
        raise InputError(None, f"feature sizes differ: real {x.shape[1]}, fake {y.shape[1]}")
    if k < 1 or k >= min(len(x), len(y)):
        raise ConfigError(f"k must be in [1, {min(len(x), len(y)) - 1}] for {len(x)} real / {len(y)} fake samples, got {k}")
    dxx, dyy, dxy = _pdist(x, x), _pdist(y, y), _pdist(x, y)
    rx = np.sort(dxx, axis=1)[:, k]  # column 0 is the point itself
    ry = np.sort(dyy, axis=1)[:, k]
    inside = dxy <= rx[:, None]  # [real i, fake j]: fake j within real ball i
    precision = float(inside.any(axis=0).mean())
    recall = float((dxy <= ry[None, :]).any(axis=1).mean())
    density = float(inside.sum() / (k * len(y)))
    coverage = float((dxy.min(axis=1) <= rx).mean())
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage, "k": int(k)}


def set_quality(real_samples: Any, synth_samples: Any, embedder: Any = None, k: int = 5,
                kid_subsets: int = 100, seed: int = 0, context: float = 0.5, crop_size: int = 128) -> dict[str, Any]:
    """KID and PRDC between real and synthetic **defect crops** (one crop per instance box
    plus context), embedded with ``embedder`` (default: the bundled EfficientNet-Lite0)."""
    from defectforge.filter.embed import default_embedder
    from defectforge.filter.scores import sample_crops

    emb = embedder or default_embedder()
    rc = [c for s in real_samples for c in sample_crops(s, context, crop_size)]
    sc = [c for s in synth_samples for c in sample_crops(s, context, crop_size)]
    if len(rc) < 2 or len(sc) < 2:
        raise InputError(None, f"set quality needs at least 2 defect crops per set (real {len(rc)}, synthetic {len(sc)})")
    fr, fs = emb.embed(rc), emb.embed(sc)
    kk = max(1, min(k, len(rc) - 1, len(sc) - 1))
    out: dict[str, Any] = {"n_real_crops": len(rc), "n_synth_crops": len(sc)}
    out.update(kid(fr, fs, subsets=kid_subsets, seed=seed))
    out.update(prdc(fr, fs, k=kk))
    return out
