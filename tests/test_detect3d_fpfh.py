"""FPFH features: agreement with a slow reference, rigid-motion and scale invariance."""

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from defectforge.detect3d.common import farthest_point_sampling, idw_interpolate, topk_mean
from defectforge.detect3d.fpfh import fpfh_from_neighbours, fpfh_reference, multiscale_fpfh, pca_normals_centroid


def _ellipsoid(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return p * np.array([1.0, 0.7, 0.4])


def test_vectorised_fpfh_matches_slow_reference():
    pts = _ellipsoid(60, 1)
    nrm = pca_normals_centroid(pts, 10)
    d, i = cKDTree(pts).query(pts, k=9)
    fast = fpfh_from_neighbours(pts, nrm, i[:, 1:], d[:, 1:])
    slow = fpfh_reference(pts, nrm, 8)
    assert fast.shape == (60, 33)
    np.testing.assert_allclose(fast, slow, atol=1e-3)
    # each 11-bin block is a histogram scaled to 100
    np.testing.assert_allclose(fast.reshape(60, 3, 11).sum(axis=2), 100.0, atol=1e-3)


def test_multiscale_fpfh_is_invariant_to_rotation_translation_and_scale():
    pts = _ellipsoid(800, 2)
    f0 = multiscale_fpfh(pts, ks=(10, 20, 30))
    assert f0.shape == (800, 99)
    R = Rotation.from_euler("xyz", [30, -50, 75], degrees=True).as_matrix()
    moved = (pts @ R.T) * 250.0 + np.array([5.0, -3.0, 40.0])
    f1 = multiscale_fpfh(moved, ks=(10, 20, 30))
    # entries can only change where a pair feature, a normal sign or the source/target
    # choice sits within float error of a decision boundary
    diff = np.abs(f0 - f1)
    assert np.mean(diff < 1e-3) > 0.97
    assert diff.mean() < 0.05
    # a different shape does give different features
    other = multiscale_fpfh(_ellipsoid(800, 2) * np.array([1.0, 1.0, 2.5]), ks=(10, 20, 30))
    assert np.abs(f0 - other).mean() > 10 * diff.mean() + 0.1


def test_fps_idw_topk():
    rng = np.random.default_rng(0)
    pts = rng.random((500, 3))
    idx = farthest_point_sampling(pts, 50, np.random.default_rng(1))
    assert len(set(idx.tolist())) == 50
    again = farthest_point_sampling(pts, 50, np.random.default_rng(1))
    np.testing.assert_array_equal(idx, again)
    # FPS spreads points: its minimum pairwise distance beats a random subset's
    from scipy.spatial.distance import pdist

    assert pdist(pts[idx]).min() > pdist(pts[rng.choice(500, 50, replace=False)]).min()
    vals = pts[:, 0] * 2.0
    est = idw_interpolate(pts, vals, pts[:20] + 1e-9)
    np.testing.assert_allclose(est, vals[:20], atol=1e-4)
    assert topk_mean(np.array([1.0, 5.0, 3.0, 4.0]), 2) == 4.5
