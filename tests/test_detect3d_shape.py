"""Local PCA shape descriptors: rotation invariance and sensitivity to a bump."""

import numpy as np

from defectforge.detect3d.fpfh import pca_normals_centroid
from defectforge.detect3d.shape import SHAPE_KS, local_shape_features
from defectforge.synth3d.parts import make_part


def _rot(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_shape_features_are_rotation_and_translation_invariant():
    p = make_part("flange", 2500, 0).points
    p = p / np.abs(p).max()
    f = local_shape_features(p, pca_normals_centroid(p, 10), unit=0.05)
    assert f.shape == (len(p), 5 * len(SHAPE_KS)) and np.all(np.isfinite(f))
    R = _rot(1)
    q = p @ R.T + np.array([0.3, -2.0, 1.0])
    g = local_shape_features(q, pca_normals_centroid(q, 10), unit=0.05)
    np.testing.assert_allclose(g, f, atol=2e-4)
    # eigenvalue shares sum to one per scale
    np.testing.assert_allclose(f[:, 0:3].sum(axis=1), 1.0, atol=1e-5)


def _sheet(amplitude, n=4000):
    """A flat square sheet (normals +z) with a Gaussian bump (> 0) or dent (< 0) at the origin."""
    xy = np.random.default_rng(0).uniform(-1, 1, size=(n, 2))
    z = amplitude * np.exp(-(np.linalg.norm(xy, axis=1) / 0.15) ** 2)
    nrm = np.tile([0.0, 0.0, 1.0], (n, 1))
    return np.column_stack([xy, z]), nrm, np.linalg.norm(xy, axis=1)


def test_shape_features_see_a_bump_with_the_right_sign():
    flat, nf, r = _sheet(0.0)
    f0 = local_shape_features(flat, nf, unit=0.05)
    bump, nb, _ = _sheet(0.05)
    fb = local_shape_features(bump, nb, unit=0.05)
    dent, nd, _ = _sheet(-0.05)
    fd = local_shape_features(dent, nd, unit=0.05)
    inside = r < 0.15
    assert np.abs(f0[:, [2, 7]]).max() < 1e-6  # a plane has no third eigenvalue
    assert fb[inside, 7].mean() > 1e-3 and fd[inside, 7].mean() > 1e-3  # surface variation rises
    centre = r < 0.05
    assert fb[centre, 9].mean() > 0.1 and fd[centre, 9].mean() < -0.1  # signed height: up vs down
