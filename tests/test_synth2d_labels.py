"""Label derivation, mask makers, real-mask statistics and placement."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.errors import InputError
from defectforge.synth2d import MaskStats, derive_label
from defectforge.synth2d import masks as mk


def _img(h=80, w=100, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(120 + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)


def test_no_change_is_rejected():
    img = _img()
    m = np.zeros(img.shape[:2], bool)
    m[30:40, 30:40] = True
    lab = derive_label(img, img.copy(), m)
    assert not lab.accepted and "no visible change" in lab.reason
    assert not lab.mask.any() and lab.boxes == []


def test_invisible_change_is_rejected():
    img = _img()
    out = img.copy()
    m = np.zeros(img.shape[:2], bool)
    m[30:40, 30:40] = True
    out[m] = np.clip(out[m].astype(int) + 1, 0, 255).astype(np.uint8)  # +1 grey level: not visible
    lab = derive_label(img, out, m)
    assert not lab.accepted and "no visible change" in lab.reason


def test_leak_is_rejected():
    img = _img()
    out = img.copy()
    m = np.zeros(img.shape[:2], bool)
    m[30:40, 30:40] = True
    out[30:40, 30:40] = 20
    out[60:75, 60:95] = 250  # a change far outside the intended mask
    lab = derive_label(img, out, m)
    assert not lab.accepted and "leak" in lab.reason and lab.leak > 0.1


def test_visible_change_gives_exact_label_and_instances():
    img = _img()
    out = img.copy()
    m = np.zeros(img.shape[:2], bool)
    m[20:60, 20:80] = True  # intended region, only parts of it change
    out[25:30, 25:30] = 30
    out[25:30, 32:37] = 30  # 2 px from the first: same cluster
    out[50:55, 70:76] = 30  # far: own instance
    lab = derive_label(img, out, m, merge_radius=3, min_fill=0.01)
    assert lab.accepted, lab.reason
    truth = (out != img).any(axis=2)
    assert np.array_equal(lab.mask, truth)
    assert lab.leak == 0.0 and 0 < lab.fill < 0.1 + 1e-9
    assert len(lab.boxes) == 2 and lab.instances.max() == 2
    b = sorted(lab.boxes, key=lambda b: b.x0)
    assert (b[0].x0, b[0].y0, b[0].x1, b[0].y1) == (25, 25, 37, 30)
    assert (b[1].x0, b[1].y0, b[1].x1, b[1].y1) == (70, 50, 76, 55)
    lab0 = derive_label(img, out, m, merge_radius=0, min_fill=0.01)
    assert len(lab0.boxes) == 3


def test_label_never_leaves_intended_mask():
    img = _img()
    out = img.copy()
    out[10:50, 10:50] = 0
    m = np.zeros(img.shape[:2], bool)
    m[10:50, 10:49] = True  # one column of change is outside (a tiny leak, tolerated)
    lab = derive_label(img, out, m)
    assert lab.accepted and not (lab.mask & ~m).any()


def test_mask_stats_fit_and_sample():
    a = np.zeros((100, 200), bool)
    a[10:20, 10:30] = True  # 200 px, aspect 0.5
    a[60:70, 150:160] = True  # 100 px
    b = np.zeros((100, 200), bool)
    b[40:60, 90:110] = True  # 400 px
    st = MaskStats.fit([a, b])
    assert sorted(st.areas.tolist()) == [100, 200, 400]
    assert sorted(st.counts.tolist()) == [1, 2]
    assert st.positions.shape == (3, 2)
    assert np.allclose(sorted(st.positions[:, 0]), [0.145, 0.495, 0.645], atol=0.01)
    rng = np.random.default_rng(0)
    areas = [st.sample_area(rng) for _ in range(200)]
    assert 50 < np.median(areas) < 500
    assert all(1 <= st.sample_count(rng) <= 2 for _ in range(50))
    y, x = st.sample_position(rng)
    assert 0 <= y <= 1 and 0 <= x <= 1
    with pytest.raises(InputError, match="no real mask"):
        MaskStats.fit([np.zeros((5, 5), bool)])


def test_real_mask_checks():
    with pytest.raises(InputError, match="empty"):
        mk.check_real_mask(np.zeros((10, 10), bool), (10, 10, 3), "m.png")
    with pytest.raises(InputError, match="m.png: real mask is 5x10"):
        mk.check_real_mask(np.ones((10, 5), bool), (10, 10, 3), "m.png")
    with pytest.raises(InputError, match="no mask"):
        mk.check_real_mask(None, (10, 10, 3), "x.jpg")


def test_jitter_mask_keeps_area_roughly():
    m = np.zeros((30, 30), bool)
    m[10:20, 8:22] = True
    rng = np.random.default_rng(0)
    j, img, p = mk.jitter_mask(m, rng, rotate=30, scale=(1.0, 1.0), elastic=0.5, image=np.zeros((30, 30, 3), np.uint8))
    assert 0.6 * m.sum() < j.sum() < 1.5 * m.sum()
    assert img is not None and img.shape[:2] == j.shape


def test_jitter_mask_without_jitter_is_an_exact_copy():
    """No rotation, scale or elastic jitter: the mask and the image land on the canvas at a
    whole-pixel offset, unresampled (odd and even sides)."""
    rng = np.random.default_rng(3)
    for h, w in ((13, 20), (14, 21), (30, 30), (7, 9)):
        m = rng.random((h, w)) > 0.5
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        j, out, p = mk.jitter_mask(m, np.random.default_rng(1), rotate=0, scale=(1, 1), flip=False, elastic=0, image=img)
        oy, ox = np.argwhere(j).min(0) - np.argwhere(m).min(0)
        assert j.sum() == m.sum() and np.array_equal(j[oy:oy + h, ox:ox + w], m)
        assert np.array_equal(out[oy:oy + h, ox:ox + w], img)


def test_jitter_mask_resamples_the_image_once_with_the_given_interpolation():
    """Rotation, scale and elastic jitter are one map: with nearest-neighbour interpolation
    every pixel of the jittered image is one of the patch's own pixels (two resamplings, or a
    bilinear elastic step, would mix neighbours into new values)."""
    import cv2

    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (24, 31, 3), dtype=np.uint8)
    m = np.ones((24, 31), bool)
    own = {tuple(v) for v in img.reshape(-1, 3)}
    for seed in range(4):
        j, out, p = mk.jitter_mask(m, np.random.default_rng(seed), rotate=40, scale=(0.8, 1.3), elastic=2.0,
                                   image=img, interpolation=cv2.INTER_NEAREST)
        assert j.any() and abs(p["rotate"]) > 0
        assert {tuple(v) for v in out[j].reshape(-1, 3)} <= own


def test_mask_makers_nonempty_and_seeded():
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    for make in (lambda r: mk.perlin_blob(r, (40, 60)), lambda r: mk.stroke(r), lambda r: mk.crack(r),
                 lambda r: mk.pit_cluster(r, (50, 300)), lambda r: mk.ellipse(r)):
        p1, p2 = make(rng()), make(rng())
        assert p1.mask.any()
        assert np.array_equal(p1.alpha, p2.alpha)
    pc = mk.pit_cluster(rng(), (50, 300))
    assert pc.height is not None and pc.height.min() < 0


def test_place_inside_roi_and_errors():
    roi = np.zeros((50, 80), bool)
    roi[10:40, 40:75] = True
    pm = np.ones((8, 8), bool)
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, x = mk.place(pm, roi, rng)
        assert roi[y:y + 8, x:x + 8].all()
    with pytest.raises(InputError, match="smaller than the defect"):
        mk.place(np.ones((60, 10), bool), roi, rng)
    with pytest.raises(InputError, match="no position found"):
        mk.place(np.ones((35, 10), bool), roi, rng)
    with pytest.raises(InputError, match="empty"):
        mk.place(pm, np.zeros_like(roi), rng)


def test_auto_roi_finds_part_on_plain_background():
    img = np.full((60, 90, 3), 230, np.uint8)
    img[15:45, 20:70] = 90
    roi = mk.auto_roi(img, margin=2)
    assert roi[30, 45] and not roi[5, 5] and not roi[30, 10]
    assert roi.sum() < 0.5 * roi.size
