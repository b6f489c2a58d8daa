"""Generators fitted to the real defects: appearance, shape and where they occur; matched
transplant blending. Toy "parts" (no BSData): a striped band on a flat surface, the real
defects dark spots on the band."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.data.sample import Sample
from defectforge.synth2d import get_generator, real_defects_from
from defectforge.synth2d.appearance import luminance
from defectforge.synth2d.fit import DefectProfile, defect_appearance

H, W = 96, 160


def _part(seed: int, band: tuple[int, int] = (30, 52)) -> np.ndarray:
    """Flat noisy surface with one band of strong vertical stripes (e.g. a thread flank)."""
    rng = np.random.default_rng(seed)
    img = 150 + rng.normal(0, 3, (H, W))
    xx = np.arange(W)[None, :]
    img[band[0]:band[1]] = 110 + 35 * np.sin(xx / 2.0 + seed) + rng.normal(0, 3, (band[1] - band[0], W))
    return np.clip(img, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)


def _real_samples(n: int = 6, ratio: float = 0.5) -> list[Sample]:
    out = []
    for i in range(n):
        img = _part(100 + i)
        m = np.zeros((H, W), bool)
        cy, cx = 41, 20 + 22 * i
        yy, xx = np.mgrid[0:H, 0:W]
        m[((yy - cy) / 4.0) ** 2 + ((xx - cx) / 5.0) ** 2 <= 1] = True
        img[m] = (img[m] * ratio).astype(np.uint8)
        out.append(Sample(label="pit", image_array=img, mask_array=m, meta={"name": f"real{i}"}))
    return out


def _centroid_rows(gen, band, n=24, seed0=0):
    rows = []
    for i in range(n):
        img = _part(i, band)
        r = gen.generate(img, np.random.default_rng(seed0 + i))
        ys, _ = np.nonzero(r.mask)
        rows.append((ys.mean(), r, img))
    return rows


@pytest.fixture(scope="module")
def reals():
    return real_defects_from(_real_samples())


def test_profile_measures_appearance_relative_to_surround(reals):
    rd, _ = reals
    prof = DefectProfile.fit(rd)
    assert len(prof) == 6 and prof.contexts.shape == (6, 5)
    # real spots are about half as bright as their surround, sharp-edged, grey
    assert 0.35 < float(np.median(prof.rel_intensity)) < 0.75
    assert float(np.median(prof.edge_sigma)) < 1.5
    assert np.allclose(np.median(prof.colour, 0), 1.0, atol=0.05)
    # a blurred copy of the same defect is measured as softer
    r = rd[0]
    import cv2

    soft = cv2.GaussianBlur(r.image, (0, 0), 2.5)
    assert defect_appearance(soft, r.mask)["edge_sigma"] > defect_appearance(r.image, r.mask)["edge_sigma"]


def test_fitted_defects_look_like_the_real_ones(reals):
    rd, st = reals
    g = get_generator("fitted", defect_type="pit", strength=(1.0, 1.0)).fit(rd)
    g.stats = st
    ratios, areas = [], []
    for _, r, img in _centroid_rows(g, (30, 52), n=10):
        assert np.array_equal(r.image[~r.mask], img[~r.mask])
        core = r.mask
        ratios.append(float(luminance(r.image)[core].mean() / luminance(img)[core].mean()))
        areas.append(int(core.sum()))
    real_area = float(np.median([x.mask.sum() for x in rd]))
    # darker than the host, like the real ones (soft edges make the mean ratio a bit higher)
    assert np.median(ratios) < 0.85
    assert 0.4 * real_area < np.median(areas) < 3.0 * real_area


def test_defects_go_where_real_ones_are_and_follow_the_host_texture(reals):
    rd, st = reals
    band = (30, 52)
    guided = get_generator("fitted", defect_type="pit", placement="prior").fit(rd)
    guided.stats = st
    blind = get_generator("fitted", defect_type="pit", placement="prior", prior_weight=0.0, similarity=0.0).fit(rd)
    blind.stats = st
    inside = lambda rows, b: np.mean([b[0] <= y < b[1] for y, _, _ in rows])  # noqa: E731
    g_in = inside(_centroid_rows(guided, band), band)
    b_in = inside(_centroid_rows(blind, band), band)
    assert g_in >= 0.7 and b_in <= 0.6 and g_in > b_in + 0.25
    # on a part whose striped band sits elsewhere, host similarity alone finds it
    moved = (62, 84)
    host_only = get_generator("fitted", defect_type="pit", placement="prior", prior_weight=0.0, similarity=2.0).fit(rd)
    host_only.stats = st
    assert inside(_centroid_rows(host_only, moved), moved) >= 0.7


def test_matched_transplant_blends_into_a_darker_host():
    bright = np.full((60, 60, 3), 200, np.uint8) + np.random.default_rng(0).integers(0, 6, (60, 60, 3)).astype(np.uint8)
    m = np.zeros((60, 60), bool)
    m[25:35, 24:36] = True
    bright[m] = 90
    samples = [Sample(label="d", image_array=bright, mask_array=m, meta={"name": "r"})]
    rd, _ = real_defects_from(samples)
    host = np.full((H, W, 3), 70, np.uint8) + np.random.default_rng(1).integers(0, 6, (H, W, 3)).astype(np.uint8)
    means = {}
    for blend in ("alpha", "matched"):
        g = get_generator("transplant", defect_type="d", blend=blend, color=0.0, scale=(1.0, 1.0), rotate=0.0).fit(rd)
        r = g.generate(host, np.random.default_rng(3))
        assert np.array_equal(r.image[~r.mask], host[~r.mask])
        means[blend] = float(r.image[r.mask].mean())
    host_mean = float(host.mean())
    # a plain paste keeps absolute grey levels: the dark defect reads brighter than this host
    assert means["alpha"] > host_mean + 5
    # matched: darker than its new surround, as it was in its own
    assert means["matched"] < host_mean - 10
