"""MPAS operators: exact masks, locality, determinism, scale invariance, composition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from defectforge.synth3d.operators import LABEL_THRESHOLD, OPERATORS, Surface, SynthesisError, apply, compose
from defectforge.synth3d.parts import make_part

DISPLACING = [op for op in OPERATORS if op != "crack"]


@pytest.fixture(scope="module")
def plate():
    part = make_part("plate_pockets", 8000, np.random.default_rng(11))
    return Surface(part.points, part.normals)


def _run(s: Surface, op: str, seed: int = 0, **kw):
    return apply(op, s.points, s.normals, np.random.default_rng(seed), surface=s, **kw)


@pytest.mark.parametrize("op", DISPLACING)
def test_mask_is_exactly_the_moved_points(plate, op):
    res = _run(plate, op, seed=2, center=_top_center(plate))
    assert res.points.shape == plate.points.shape  # point count preserved
    motion = np.linalg.norm(res.points - plate.points, axis=1)
    thr = res.info["label_threshold_abs"]
    assert thr == pytest.approx(LABEL_THRESHOLD * plate.diag) and res.info["params"]["label_threshold"] == LABEL_THRESHOLD
    # labelled = moved by at least the recorded threshold; every other point moved less
    np.testing.assert_array_equal(res.mask, motion >= thr)
    assert res.mask.sum() == res.info["n_support"] and motion[~res.mask].max() < thr
    assert res.info["max_unlabelled_displacement"] == pytest.approx(motion[~res.mask].max())
    assert res.normals.shape == res.points.shape and np.allclose(np.linalg.norm(res.normals, axis=1), 1.0)
    assert res.info["primitive"].startswith(OPERATORS[op].primitive)


def _top_center(s: Surface) -> int:
    top = np.flatnonzero(s.normals[:, 2] > 0.9)
    return int(top[np.argmin(np.linalg.norm(s.points[top, :2] - s.points[top, :2].mean(0), axis=1))])


@pytest.mark.parametrize("op,reach_key", [("bump", "radius"), ("dent", "radius"), ("pit", "radius"),
                                          ("freeform", "size"), ("bulge", "size"), ("sink", "size")])
def test_points_far_from_a_local_defect_are_untouched(plate, op, reach_key):
    c = _top_center(plate)
    res = _run(plate, op, seed=4, center=c)
    reach = res.info["params"][reach_key] * plate.diag
    far = np.linalg.norm(plate.points - plate.points[c], axis=1) > reach
    assert not res.mask[far].any()
    np.testing.assert_array_equal(res.points[far], plate.points[far])
    # the displacement is along the outward normal: bumps/bulges go out, dents/pits/sinks in
    d = (res.points - plate.points)[res.mask] @ np.asarray(res.info["normal"])
    assert (np.sign(d.mean()) > 0) == (op in ("bump", "bulge", "freeform"))  # freeform: sign=+1 by default


@pytest.mark.parametrize("op", ["scratch", "groove"])
def test_scratch_follows_a_surface_path_and_stays_in_its_tube(plate, op):
    res = _run(plate, op, seed=5, center=_top_center(plate), length=0.2)
    path = np.asarray(res.info["path"])
    assert res.info["geodesic"] and len(path) > 3
    # the path lies on the surface: every vertex is a cloud point
    assert np.all(cKDTree(plate.points).query(path)[0] < 1e-9)
    width = res.info["params"]["width"] * plate.diag
    seg = np.linspace(0, 1, 20)[:, None, None]
    dense = (path[:-1][None] * (1 - seg) + path[1:][None] * seg).reshape(-1, 3)
    dist = cKDTree(dense).query(plate.points)[0]
    assert not res.mask[dist > width * 1.001].any()
    assert (np.linalg.norm(res.points - plate.points, axis=1)[res.mask] > 0).all()
    assert res.info["max_displacement_ratio"] == pytest.approx(res.info["params"]["depth"], rel=0.05)


def test_bend_moves_one_side_smoothly_and_masks_all_of_it(plate):
    res = _run(plate, "bend", seed=1, angle=20.0, position=0.7)
    e1, h = np.asarray(res.info["hinge_normal"]), np.asarray(res.info["center"])
    s = (plate.points - h) @ e1
    disp = np.linalg.norm(res.points - plate.points, axis=1)
    # the bent side moves; it is labelled where it moved by at least the threshold
    np.testing.assert_array_equal(res.mask, (s > 0) & (disp >= res.info["label_threshold_abs"]))
    assert res.mask.sum() > 0.9 * (s > 0).sum()
    np.testing.assert_array_equal(res.points[s <= 0], plate.points[s <= 0])
    # continuity: displacement grows smoothly from the hinge (no tearing)
    near = (s > 0) & (s < 0.005 * plate.diag)
    assert disp[near].max() < 0.01 * plate.diag
    assert len(res.info["hinge_band"]) > 0 and res.mask[res.info["hinge_band"]].mean() > 0.5


def test_crack_removes_points_and_labels_the_walls(plate):
    res = _run(plate, "crack", seed=3, center=_top_center(plate), gap=0.02, length=0.3)
    kept, removed = res.info["kept"], res.info["removed"]
    assert len(res.points) == len(plate) - len(removed) and len(removed) > 0
    np.testing.assert_array_equal(res.points, plate.points[kept])
    assert len(np.intersect1d(kept, removed)) == 0
    # every removed point's nearest remaining neighbours are labelled
    _, nb = cKDTree(res.points).query(plate.points[removed], k=3)
    assert res.mask[nb].all()
    # far from the crack nothing is labelled
    far = np.linalg.norm(res.points - plate.points[res.info["center_index"]], axis=1) > 0.3 * plate.diag
    assert not res.mask[far].any()


@pytest.mark.parametrize("op", list(OPERATORS))
def test_deterministic_per_seed(plate, op):
    kw = {"radius": 0.04} if op == "pit" else {}
    a, b = _run(plate, op, seed=9, **kw), _run(plate, op, seed=9, **kw)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.mask, b.mask)
    c = _run(plate, op, seed=10, **kw)
    assert not (len(c.points) == len(a.points) and np.array_equal(c.points, a.points))


@pytest.mark.parametrize("op", ["dent", "scratch", "bend", "crack", "freeform"])
def test_parameters_are_relative_to_the_part_size(plate, op):
    big = Surface(plate.points * 10.0, plate.normals)
    a, b = _run(plate, op, seed=7), _run(big, op, seed=7)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(b.points, a.points * 10.0, rtol=1e-9, atol=1e-9 * big.diag)


def test_compose_ors_masks_through_removals(plate):
    steps = [("dent", {"center": _top_center(plate), "radius": 0.05}), ("crack", {"gap": 0.02}),
             ("scratch", {"length": 0.2})]
    res = compose(plate.points, plate.normals, np.random.default_rng(0), steps, surface=plate)
    kept = res.info["kept"]
    assert len(res.points) == len(kept) < len(plate)
    dent_mask = res.info["steps"][0]["n_support"]
    crack_walls = res.info["steps"][1]["n_support"]
    assert res.mask.sum() >= max(dent_mask, crack_walls)
    # the dent's points that survived are still labelled in the final output
    first = apply("dent", plate.points, plate.normals, np.random.default_rng(0), surface=plate,
                  center=_top_center(plate), radius=0.05)
    assert res.mask[np.isin(kept, np.flatnonzero(first.mask))].all()


def test_operator_errors_are_clear(plate):
    with pytest.raises(SynthesisError, match="moves only"):
        _run(plate, "dent", radius=1e-5)
    with pytest.raises(SynthesisError, match="outside the cloud"):
        _run(plate, "bump", center=10**7)
    with pytest.raises(SynthesisError, match="unknown field"):
        _run(plate, "freeform", field="waves")
    from defectforge.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown operator"):
        _run(plate, "melt")


@pytest.mark.parametrize("op", ["dent", "bump", "scratch", "sink"])
def test_thin_wall_back_face_is_not_dragged_along(op):
    """A defect wider than a thin wall moves only the face it is on (normal gating)."""
    part = make_part("bracket", 8000, np.random.default_rng(1))
    s = Surface(part.points, part.normals)
    top = np.flatnonzero(part.normals[:, 2] > 0.9)
    c = int(top[np.argmin(np.abs(part.points[top, 0] - 0.6 * part.points[:, 0].max()) +
                          np.abs(part.points[top, 1] - part.points[:, 1].mean()))])
    size = {"dent": {"radius": 0.12}, "bump": {"radius": 0.12}, "scratch": {"width": 0.1, "length": 0.1},
            "sink": {"size": 0.15}}[op]
    res = _run(s, op, seed=0, center=c, **size)
    back = part.normals[:, 2] < -0.9
    near = np.linalg.norm(part.points - part.points[c], axis=1) < 0.1 * s.diag
    assert (back & near).sum() > 10  # the bottom face really is within reach
    assert not res.mask[back].any()


@pytest.mark.parametrize("part_name", ["flange", "spur_gear", "pipe_elbow"])
def test_masks_exact_over_many_random_draws(part_name):
    """Default parameters, random centres and directions: the mask is always exactly the
    moved points (displacements) or covers every removed point's nearest survivors (crack)."""
    part = make_part(part_name, 5000, np.random.default_rng(4))
    s = Surface(part.points, part.normals)
    for seed in range(4):
        for op in OPERATORS:
            kw = {"radius": 0.04} if op == "pit" else {}
            try:
                res = _run(s, op, seed=seed, **kw)
            except SynthesisError as exc:  # allowed only as a clear "too small" refusal
                assert "increase" in str(exc) or "part ends" in str(exc)
                continue
            assert res.mask.shape == (len(res.points),) and res.mask.any()
            if op == "crack":
                _, nb = cKDTree(res.points).query(s.points[res.info["removed"]], k=2)
                assert res.mask[nb].all()
                np.testing.assert_array_equal(res.points, s.points[res.info["kept"]])
            else:
                motion = np.linalg.norm(res.points - s.points, axis=1)
                np.testing.assert_array_equal(res.mask, motion >= res.info["label_threshold_abs"])
                assert motion[res.mask].min() >= LABEL_THRESHOLD * s.diag


@pytest.mark.parametrize("op", DISPLACING)
def test_threshold_zero_labels_every_moved_point(plate, op):
    res = _run(plate, op, seed=2, center=_top_center(plate), label_threshold=0.0)
    np.testing.assert_array_equal(res.mask, np.linalg.norm(res.points - plate.points, axis=1) > 0)
    assert res.info["max_unlabelled_displacement"] == 0.0


def test_labels_cover_real_motion_not_the_falloff(plate):
    """With the default threshold no labelled point moves less than 0.1 % of the diagonal,
    although the raised-cosine falloff moves many points by less (they stay unlabelled)."""
    c = _top_center(plate)
    lab = _run(plate, "dent", seed=1, center=c, radius=0.05, depth=0.006)
    every = _run(plate, "dent", seed=1, center=c, radius=0.05, depth=0.006, label_threshold=0.0)
    motion = np.linalg.norm(lab.points - plate.points, axis=1)
    assert motion[lab.mask].min() >= 0.001 * plate.diag
    assert every.mask.sum() > lab.mask.sum()  # the falloff points are really there
    np.testing.assert_array_equal(lab.points, every.points)  # same geometry, only the labels differ


def test_line_records_achieved_length(plate):
    res = _run(plate, "scratch", seed=5, center=_top_center(plate), length=0.2)
    ach = res.info["achieved"]
    assert res.info["length_abs"] == pytest.approx(0.2 * plate.diag)
    assert ach["length_abs"] == pytest.approx(res.info["path_length_abs"])
    assert ach["length_ratio"] == pytest.approx(ach["length_abs"] / (0.2 * plate.diag))
    assert 0.5 <= ach["length_ratio"] <= 2.0
    # the labelled span is the extent of the labelled points along the path (within the tube width)
    pts = res.points[res.mask]
    extent = np.linalg.norm(pts.max(0) - pts.min(0))
    w = res.info["params"]["width"] * plate.diag
    assert ach["labelled_length_abs"] <= ach["length_abs"] + 1e-9
    assert extent - 2 * w <= ach["labelled_length_abs"] * 1.05 and ach["labelled_length_abs"] <= 1.5 * extent


def test_line_cut_short_is_refused(plate):
    """A scratch whose path ends at the plate's edge after a fraction of its length is refused."""
    top = np.flatnonzero(plate.normals[:, 2] > 0.9)
    start = int(top[np.argmax(plate.points[top, 0])])  # the last top point towards +x
    with pytest.raises(SynthesisError, match="requested length"):
        _run(plate, "scratch", seed=0, center=start, length=0.5, direction=[1.0, 0.0, 0.0])


def test_bad_label_threshold(plate):
    with pytest.raises(SynthesisError, match="label_threshold"):
        _run(plate, "dent", label_threshold=2.0)
