"""AUPRO: exact against a slow brute-force reference, hand-computed cases, conventions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from skimage.measure import label as sk_label

from defectforge.metrics import aupro, pro_curve


def brute_force_aupro(masks, maps, fpr_limit=0.3):
    """Slow reference: one threshold at a time, per-region overlap counted directly.

    Regions come from skimage (connectivity=2, i.e. 8-neighbours) per image; the area is
    integrated segment by segment, cutting the segment that crosses ``fpr_limit``.
    """
    regions, bg = [], []
    for m, a in zip(masks, maps):
        m = np.zeros(a.shape, bool) if m is None else np.asarray(m, bool)
        lab = sk_label(m, connectivity=2)
        for r in range(1, lab.max() + 1):
            regions.append(a[lab == r])
        bg.append(a[~m])
    bg = np.concatenate(bg)
    points = [(0.0, 0.0)]
    for t in np.unique(np.concatenate([a.ravel() for a in maps]))[::-1]:
        fpr = np.mean(bg >= t)
        pro = np.mean([np.mean(r >= t) for r in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += np.trapezoid([y0, y1], [x0, x1])
    return area / fpr_limit, points


@st.composite
def masks_and_maps(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_img = draw(st.integers(1, 3))
    levels = draw(st.sampled_from([3, 8, 1000]))  # few levels = many ties
    masks, maps = [], []
    for i in range(n_img):
        h, w = draw(st.integers(3, 12)), draw(st.integers(3, 12))
        kind = "blobs" if i == 0 else draw(st.sampled_from(["good", "blobs", "none-mask"]))
        if kind == "none-mask":
            masks.append(None)
        elif kind == "good":
            masks.append(np.zeros((h, w), bool))
        else:
            masks.append(rng.random((h, w)) > draw(st.sampled_from([0.6, 0.85])))
        a = rng.integers(0, levels, (h, w)).astype(np.float64)
        if masks[-1] is not None:
            a += masks[-1] * draw(st.sampled_from([0, 1, levels // 2]))  # some signal
        maps.append(a)
    return masks, maps


@settings(max_examples=80, deadline=None)
@given(masks_and_maps(), st.sampled_from([0.05, 0.3, 1.0]))
def test_aupro_matches_brute_force(data, limit):
    masks, maps = data
    has_fg = any(m is not None and m.any() for m in masks)
    has_bg = any(m is None or (~m).any() for m in masks)
    assume(has_fg and has_bg)
    ref, points = brute_force_aupro(masks, maps, limit)
    got = aupro(masks, maps, fpr_limit=limit)
    assert got == pytest.approx(ref, abs=1e-9)
    assert 0.0 <= got <= 1.0
    fpr, pro = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [p[0] for p in points], atol=1e-12)
    np.testing.assert_allclose(pro, [p[1] for p in points], atol=1e-12)
    assert fpr[0] == 0.0 and pro[0] == 0.0
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == pytest.approx(1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)


def test_perfect_map_gives_one_and_uniform_noise_is_low():
    rng = np.random.default_rng(0)
    masks = [rng.random((16, 16)) > 0.9 for _ in range(3)] + [None]
    perfect = [m + rng.random(m.shape) * 0.5 if m is not None else rng.random((16, 16)) * 0.5
               for m in masks]
    assert aupro(masks, perfect) == 1.0
    noise = [rng.random((16, 16)) for _ in masks]
    assert aupro(masks, noise) < 0.3  # random scores: PRO ~ FPR, area/limit ~ limit/2


def test_hand_computed_curve_and_interpolation_at_limit():
    # one 1-pixel region at column 0; background scores 0.9, 0.1, 0.1, 0.1, 0.1
    mask = np.array([[True, False, False, False, False, False]])
    # region above one background pixel: points (0,0) (0.2,0) (0.2,1) (1,1)
    amap = np.array([[0.5, 0.9, 0.1, 0.1, 0.1, 0.1]])
    fpr, pro = pro_curve([mask], [amap])
    np.testing.assert_allclose(fpr, [0, 0.2, 0.2, 1.0])
    np.testing.assert_allclose(pro, [0, 0, 1.0, 1.0])
    assert aupro([mask], [amap], 0.3) == pytest.approx(0.1 / 0.3)  # PRO 1 on [0.2, 0.3]
    # region tied with the four low background pixels: (0,0) (0.2,0) (1,1), cut at 0.3
    # where PRO is interpolated to 0.125: area 0.1 * 0.125 / 2, divided by 0.3
    tied = np.array([[0.1, 0.9, 0.1, 0.1, 0.1, 0.1]])
    fpr, pro = pro_curve([mask], [tied])
    np.testing.assert_allclose(fpr, [0, 0.2, 1.0])
    np.testing.assert_allclose(pro, [0, 0, 1.0])
    assert aupro([mask], [tied], 0.3) == pytest.approx(0.1 * 0.125 / 2 / 0.3)


def test_regions_are_eight_connected():
    # diagonal pixels (0,0),(1,1) form ONE region under 8-connectivity; (3,3) is another.
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[1, 1] = mask[3, 3] = True
    amap = np.full((5, 5), 0.5)
    amap[0, 0] = 1.0
    amap[1, 1] = amap[3, 3] = 0.0
    fpr, pro = pro_curve([mask], [amap])
    # top threshold: half of region {(0,0),(1,1)}, none of {(3,3)} -> (0.5 + 0) / 2
    assert (fpr[1], pro[1]) == (0.0, pytest.approx(0.25))  # 4-connectivity would give 1/3


def test_region_labels_are_unique_across_images():
    # image A: one 1-pixel region scored high; image B: one 3-pixel region scored low.
    # Separate regions -> PRO (1 + 0) / 2 = 0.5; merged labels would give 1/4.
    ma = np.zeros((3, 3), bool)
    ma[1, 1] = True
    mb = np.zeros((3, 3), bool)
    mb[0, :] = True
    aa = np.where(ma, 1.0, 0.5)
    ab = np.where(mb, 0.0, 0.5)
    fpr, pro = pro_curve([ma, mb], [aa, ab])
    assert fpr[1] == 0.0 and pro[1] == pytest.approx(0.5)


def test_normal_images_only_add_background():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    amap = np.where(mask, 2.0, 0.0) + np.arange(16).reshape(4, 4) * 0.01
    base = aupro([mask], [amap])
    # a good image whose scores sit below every defect pixel leaves PRO untouched but
    # stretches the FPR axis; one scoring above them costs area
    low = aupro([mask, None], [amap, np.full((4, 4), -1.0)])
    high = aupro([mask, None], [amap, np.full((4, 4), 5.0)])
    assert base == low == 1.0
    assert high < base
    fpr, pro = pro_curve([mask, None], [amap, np.full((4, 4), 5.0)])
    assert (fpr[1], pro[1]) == (pytest.approx(16 / 28), 0.0)  # 16 of 12 + 16 background


def test_list_and_stack_inputs_agree_and_float32_is_accepted():
    rng = np.random.default_rng(2)
    m = rng.random((3, 10, 10)) > 0.8
    a = rng.random((3, 10, 10)).astype(np.float32)
    assert aupro(m, a) == pytest.approx(aupro(list(m), list(a.astype(np.float64))), abs=1e-12)


def test_evaluate_hands_back_the_pro_curve_of_its_one_sort(monkeypatch):
    """``evaluate_anomaly(curves=d)`` gives the exact ``pro_curve`` of the same maps, and the
    evaluation's exact path (``ExactSink``) takes its curve from there: one global sort, not two."""
    from defectforge.detect.eval_sinks import ExactSink
    from defectforge.metrics import anomaly, evaluate_anomaly, pixel

    rng = np.random.default_rng(3)
    masks = [rng.random((12, 10)) > 0.85 for _ in range(3)] + [None, None]
    maps = [rng.random((12, 10)) + (0.6 * m if m is not None else 0) for m in masks]
    labels = [m is not None for m in masks]
    scores = [float(a.max()) for a in maps]
    curves: dict = {}
    out = evaluate_anomaly(labels, scores, masks, maps, curves=curves)
    fpr, pro = pro_curve(masks, maps)
    assert np.array_equal(curves["pro"][0], fpr) and np.array_equal(curves["pro"][1], pro)
    assert out["aupro"] == aupro(masks, maps)
    sorts = []
    for mod in (anomaly, pixel):
        real = mod._pixel_counts
        monkeypatch.setattr(mod, "_pixel_counts", lambda px, real=real: sorts.append(1) or real(px))
    sink = ExactSink(len(masks))
    sink.add(0, np.asarray(scores), maps, masks)
    sink.finish(np.asarray(labels), np.asarray(scores), None, None)
    got = sink.pro_curve()
    assert len(sorts) == 1 and np.array_equal(got[0], fpr) and np.array_equal(got[1], pro)
    # without defect pixels there is no curve, as before
    none = ExactSink(2)
    none.add(0, np.zeros(2), [np.zeros((4, 4)), np.ones((4, 4))], [None, None])
    none.finish(np.array([False, True]), np.array([0.0, 1.0]), None, None)
    assert none.pro_curve() is None
