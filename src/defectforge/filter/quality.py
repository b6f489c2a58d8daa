"""Set-level quality of synthetic defects: KID, precision/recall/density/coverage, FID.

All work on any embedding (rows = samples). defectforge computes KID and PRDC on the bundled
EfficientNet-Lite0 features of defect crops (:func:`set_quality`), so no Inception weights
are needed; those values are therefore **not** comparable to published Inception-based
KID/FID. With a local Inception-v3 weights file (:mod:`defectforge.filter.inception`),
:func:`set_quality` adds FID (:func:`frechet_distance`) and KID on Inception pool features;
those are comparable across our runs, but not to published FID numbers unless the weights
are the TF-FID ones (see that module). FID is biased for small sets: prefer KID there.
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


def _cov(a: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.cov(a, rowvar=False, ddof=1))


def _imag_too_large(m: np.ndarray, tol: float) -> bool:
    if not np.iscomplexobj(m):
        return False
    d = np.diagonal(m)
    return float(np.abs(d.imag).max()) > tol * max(1.0, float(np.abs(d.real).max()))


def _trace_sqrt_product_sqrtm(s1: np.ndarray, s2: np.ndarray, eps: float, imag_tol: float) -> float:
    """``tr sqrtm(s1 s2)`` with scipy's Schur square root; near-singular fix: when the root
    is not finite (or has a large imaginary part), retry on ``(s1 + eps I)(s2 + eps I)``."""
    import warnings

    from scipy.linalg import sqrtm

    def root(a: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "matrix is singular": handled below
            return np.asarray(sqrtm(a))

    covmean = root(s1 @ s2)
    if not np.isfinite(covmean).all() or _imag_too_large(covmean, imag_tol):
        off = eps * np.eye(s1.shape[0])
        covmean = root((s1 + off) @ (s2 + off))
        if not np.isfinite(covmean).all():
            raise InputError(None, f"FID: the covariance square root is not finite even with eps={eps:g} added; "
                                   "the features are degenerate (use KID, or more samples)")
    if np.iscomplexobj(covmean):
        if _imag_too_large(covmean, imag_tol):
            d = np.diagonal(covmean)
            raise InputError(None, f"FID: the covariance square root has a large imaginary part "
                                   f"({float(np.abs(d.imag).max()):.3g}); the covariances are too ill-conditioned "
                                   "for FID (use KID, more samples, or a larger eps)")
        covmean = covmean.real  # tiny imaginary parts are rounding noise
    return float(np.trace(covmean))


def frechet_distance(feats_a: Any, feats_b: Any, eps: float = 1e-6, method: str = "auto",
                     imag_tol: float = 1e-3) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID on Inception features).

    ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with means and covariances
    (``ddof=1``) in float64. Rows are samples; both sets need at least 2 rows and the same
    number of columns.

    ``method``: ``"sqrtm"`` takes the matrix square root with ``scipy.linalg.sqrtm``; when the
    result is not finite (near-singular covariances) it retries with ``eps * I`` added to both
    covariances, drops an imaginary part that is rounding noise, and raises
    :class:`InputError` when it is large (``> imag_tol`` relative to the diagonal).
    ``"svd"`` uses the exact identity ``tr (S_a S_b)^(1/2) = ||A B^T||_*`` (nuclear norm, with
    ``A``, ``B`` the centred rows over ``sqrt(n - 1)``): ``S_a S_b`` has the same non-zero
    eigenvalues as ``(A B^T)(A B^T)^T``. It costs ``O(n_a n_b d)`` instead of ``O(d^3)`` and
    needs no ``eps``, so it is exact and fast when a set has fewer samples than dimensions,
    which is exactly when the covariances are singular. ``"auto"`` (default) picks ``"svd"``
    when ``min(n_a, n_b) <= d``, else ``"sqrtm"``.

    **Small sets:** FID is biased (its expected value depends on N and shrinks as N grows), so
    values are comparable only at equal N; report N with it (:func:`set_quality` does), and
    prefer :func:`kid` (unbiased) below roughly a thousand samples.
    """
    x, y = _as2d(feats_a, "first feature set"), _as2d(feats_b, "second feature set")
    if x.shape[1] != y.shape[1]:
        raise InputError(None, f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise InputError(None, f"FID needs at least 2 samples per set (got {len(x)} and {len(y)}); "
                               "it is strongly biased for small sets: use KID there")
    if method not in ("auto", "sqrtm", "svd"):
        raise ConfigError(f"method must be auto, sqrtm or svd, got {method!r}")
    if eps <= 0:
        raise ConfigError(f"eps must be > 0, got {eps}")
    d = x.shape[1]
    mu_a, mu_b = x.mean(axis=0), y.mean(axis=0)
    diff = float(((mu_a - mu_b) ** 2).sum())
    if method == "svd" or (method == "auto" and min(len(x), len(y)) <= d):
        a = (x - mu_a) / np.sqrt(len(x) - 1)
        b = (y - mu_b) / np.sqrt(len(y) - 1)
        tr_a, tr_b = float((a * a).sum()), float((b * b).sum())
        tr_covmean = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    else:
        s1, s2 = _cov(x), _cov(y)
        tr_a, tr_b = float(np.trace(s1)), float(np.trace(s2))
        tr_covmean = _trace_sqrt_product_sqrtm(s1, s2, eps, imag_tol)
    return diff + tr_a + tr_b - 2.0 * tr_covmean  # not clamped: tiny negatives are rounding


def set_quality(real_samples: Any, synth_samples: Any, embedder: Any = None, k: int = 5,
                kid_subsets: int = 100, seed: int = 0, context: float = 0.5, crop_size: int = 128,
                inception: Any = None) -> dict[str, Any]:
    """KID and PRDC between real and synthetic **defect crops** (one crop per instance box
    plus context), embedded with ``embedder`` (default: the bundled EfficientNet-Lite0).

    With ``inception`` (an embedder of Inception pool features, e.g.
    :func:`defectforge.filter.inception.inception_embedder` on a local weights file), also
    ``fid`` (:func:`frechet_distance`), ``fid_n_real`` / ``fid_n_synth`` (FID depends on N:
    compare only at equal N) and ``kid_inception`` / ``kid_inception_std`` on those features.
    """
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
    if inception is not None:
        ir, is_ = inception.embed(rc), inception.embed(sc)
        out["fid"] = frechet_distance(ir, is_)
        out["fid_n_real"], out["fid_n_synth"] = len(ir), len(is_)
        ki = kid(ir, is_, subsets=kid_subsets, seed=seed)
        out["kid_inception"], out["kid_inception_std"] = ki["kid_mean"], ki["kid_std"]
    return out
