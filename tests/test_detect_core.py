"""Building blocks of the 2D detectors: coreset, nearest neighbours, ExDD / PatchCore
weights, smoothing, patch features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from defectforge.detect.base import Prediction, available_detectors, get_detector
from defectforge.bank.coreset import coreset_size, greedy_kcenter, greedy_kcenter_bruteforce
from defectforge.bank.features import embed, input_size_for, mask_to_grid, random_projection
from defectforge.bank.knn import NearestNeighbors
from defectforge.detect.scoring import exdd_ratio, gaussian_blur, patchcore_weight
from defectforge.errors import ConfigError


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("block", [2, 32])
def test_coreset_matches_bruteforce_greedy(seed, block):
    rng = np.random.default_rng(seed)
    # clustered data: the interesting case for farthest-first traversal
    centers = rng.normal(0, 5, (12, 6))
    x = (centers[rng.integers(12, size=900)] + rng.normal(0, 1, (900, 6))).astype(np.float32)
    fast = greedy_kcenter(x, 80, seed=seed, block=block)
    ref = greedy_kcenter_bruteforce(x, 80, seed=seed)
    assert np.array_equal(fast, ref)
    assert len(set(fast.tolist())) == 80


def test_coreset_covering_radius_beats_random_and_is_seeded():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    idx = greedy_kcenter(x, 50, seed=5)
    rnd = rng.choice(2000, 50, replace=False)

    def radius(sel):
        d = np.linalg.norm(x[:, None, :] - x[sel][None], axis=2).min(1)
        return d.max()

    assert radius(idx) < radius(rnd)
    assert np.array_equal(idx, greedy_kcenter(x, 50, seed=5))
    assert not np.array_equal(idx, greedy_kcenter(x, 50, seed=6))


def test_coreset_stops_on_duplicates_and_sizes():
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)  # 3 distinct rows
    idx = greedy_kcenter(x, 10, seed=0)
    assert len(idx) == 3 and len({tuple(x[i]) for i in idx}) == 3
    assert coreset_size(1000, 0.01) == 10
    assert coreset_size(50, 0.01) == 1
    assert coreset_size(50, 0.01, minimum=1000) == 50
    assert coreset_size(0, 0.1) == 0


@pytest.mark.parametrize("backend", ["faiss", "torch", "pruned", "screened", "auto"])
def test_nearest_neighbors_match_bruteforce(backend):
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(257, 16)).astype(np.float32)
    d, i = NearestNeighbors(bank, backend, chunk=100).search(q, 3)
    full = np.linalg.norm(q[:, None, :].astype(np.float64) - bank[None], axis=2)
    ref_i = np.argsort(full, axis=1)[:, :3]
    assert np.array_equal(i, ref_i)
    np.testing.assert_allclose(d, np.take_along_axis(full, ref_i, 1), rtol=1e-4, atol=1e-4)


def test_nearest_neighbors_bad_backend_and_empty():
    with pytest.raises(ConfigError):
        NearestNeighbors(np.zeros((2, 2), np.float32), "annoy")
    with pytest.raises(ConfigError):
        NearestNeighbors(np.zeros((0, 2), np.float32), "torch").search(np.zeros((1, 2), np.float32))


def test_exdd_weight_follows_the_formulas():
    """r = exp(s*/tau) / sum over the k-1 other neighbours of exp(||p*-n||/tau), tau = sqrt(D)."""
    rng = np.random.default_rng(0)
    D = 10
    p = rng.normal(size=D)
    m_star = p + rng.normal(scale=0.3, size=D)
    others = p + rng.normal(scale=1.0, size=(2, D))
    s = float(np.linalg.norm(p - m_star))
    tau = math.sqrt(D)
    direct = math.exp(s / tau) / sum(math.exp(float(np.linalg.norm(p - n)) / tau) for n in others)
    assert exdd_ratio(p, s, others, tau) == pytest.approx(direct, rel=1e-12)
    # m* nearest to p* => every other distance >= s* => r <= 1/(k-1)
    assert exdd_ratio(p, s, others, tau) <= 0.5 + 1e-12
    assert exdd_ratio(p, s, others[:0], tau) == 0.0


def test_patchcore_weight_follows_the_formula():
    rng = np.random.default_rng(1)
    p = rng.normal(size=5)
    support = rng.normal(size=(9, 5))
    d = np.linalg.norm(support - p, axis=1)
    direct = 1.0 - math.exp(d[0]) / np.exp(d).sum()
    assert patchcore_weight(p, support) == pytest.approx(direct, rel=1e-12)
    assert patchcore_weight(p, support[:1]) == 1.0


def test_gaussian_blur_matches_scipy_everywhere():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    a = rng.random((2, 80, 90)).astype(np.float32)
    ours = gaussian_blur(a, 4.0)
    assert ours.shape == (2, 80, 90) and ours.dtype == np.float32
    for i in range(2):  # mirror padding, borders included
        ref = gaussian_filter(a[i].astype(np.float64), 4.0, mode="mirror", truncate=4.0)
        np.testing.assert_allclose(ours[i], ref, atol=1e-5)
    # a map narrower than the kernel: edge replication
    small = rng.random((1, 10, 40)).astype(np.float32)
    ref = gaussian_filter(small[0].astype(np.float64), 4.0, mode="nearest", truncate=4.0)
    np.testing.assert_allclose(gaussian_blur(small, 4.0)[0], ref, atol=1e-5)
    assert np.array_equal(gaussian_blur(a, 0.0), a)


def test_embed_averages_neighbourhood_and_upsamples():
    f1 = torch.zeros(1, 2, 8, 12)
    f1[0, 0, 4, 6] = 9.0
    f2 = torch.ones(1, 3, 4, 6)
    e = embed([f1, f2])
    assert e.shape == (1, 5, 8, 12)
    # 3x3 mean spreads the spike over its neighbourhood (zero padding counted)
    assert torch.allclose(e[0, 0, 3:6, 5:8], torch.ones(3, 3))
    assert e[0, 0, 0, 0] == 0
    # deeper layer: pooled (interior stays 1) then bilinearly upsampled to the 8x12 grid
    assert torch.allclose(e[0, 2:, 3:5, 3:9], torch.ones(3, 2, 6))
    assert e[0, 2, 0, 0] < 1.0


def test_input_size_keeps_aspect_and_grid_fractions():
    assert input_size_for((460, 1130), 256) == (256, 632)
    assert input_size_for((1130, 460), 224) == (552, 224)
    assert input_size_for((100, 100), 64) == (64, 64)
    m = np.zeros((16, 16), bool)
    m[:8, :8] = True
    frac = mask_to_grid(m, (2, 2))
    np.testing.assert_allclose(frac, [[1, 0], [0, 0]])


def test_random_projection_is_seeded_and_normalised():
    p = random_projection(20, 5, seed=3)
    assert p.shape == (20, 5)
    np.testing.assert_allclose(np.linalg.norm(p, axis=0), 1.0, rtol=1e-5)
    assert np.array_equal(p, random_projection(20, 5, seed=3))
    assert not np.array_equal(p, random_projection(20, 5, seed=4))


def test_registry_and_prediction_concat():
    assert {"exdd", "patchcore"} <= set(available_detectors())
    det = get_detector("PatchCore", random_init=True)
    assert det.config.weighting == "patchcore" and det.config.num_neighbors == 9
    assert get_detector("exdd", random_init=True).config.weighting == "exdd"
    with pytest.raises(ConfigError, match="unknown detector"):
        get_detector("padim")
    with pytest.raises(ConfigError, match="unknown parameter"):
        get_detector("exdd", coreset=0.1)
    with pytest.raises(ConfigError, match="weighting"):
        get_detector("exdd", weighting="softmax")
    a = Prediction(np.array([1.0]), [np.zeros((2, 2), np.float32)], np.array([True]), [np.zeros((2, 2), bool)])
    b = Prediction(np.array([2.0, 3.0]), [np.ones((3, 3), np.float32)] * 2, np.array([False, True]),
                   [np.ones((3, 3), bool)] * 2)
    c = Prediction.concat([a, b])
    assert len(c) == 3 and c.pred_label.tolist() == [True, False, True] and len(c.anomaly_map) == 3
