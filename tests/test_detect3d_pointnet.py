"""Point transformer detector: training reduces the loss, determinism, save/load, bad files."""

import numpy as np
import pytest

from defectforge.detect3d import get_detector3d
from defectforge.detect3d.pointnet import PointTransformerAD
from defectforge.errors import ConfigError, InputError
from defectforge.synth3d.operators import apply
from defectforge.synth3d.parts import make_part

TINY = dict(channels=16, n_layers=2, k=8, net_points=600, lr=5e-3, anomaly_prob=1.0,
            train_ranges={"bump": {"radius": (0.08, 0.1), "depth": (0.03, 0.04)},
                          "dent": {"radius": (0.08, 0.1), "depth": (0.03, 0.04)}},
            train_ops=("bump", "dent"), rotate_deg=5.0, top_k=10, fpfh_weight=0.0)


def _parts(n=2):
    return [make_part("flange", 3000, i).points for i in range(n)]


@pytest.fixture(scope="module")
def trained():
    return PointTransformerAD(steps=30, **TINY).fit(_parts())


def test_training_steps_reduce_the_loss_on_a_synthetic_anomaly():
    import torch

    from defectforge.detect3d.fpfh import pca_normals_centroid
    from defectforge.detect3d.pointnet_model import bce, build_model, init_params, input_dim
    from defectforge.synth3d.geometry import voxel_downsample

    det = PointTransformerAD(**TINY)
    p = make_part("flange", 3000, 0).points
    p = (p - p.mean(axis=0)) / np.linalg.norm(p - p.mean(axis=0), axis=1).max()
    net = voxel_downsample(p, 0.06)[0]
    pts, nrm, mask = det._data().synth(net, pca_normals_centroid(net, 10), np.random.default_rng(0))
    assert 0 < mask.sum() < len(mask)
    f, x, nbr = det._tensors(pts, nrm)
    y = torch.from_numpy(mask.astype(np.float32))
    model = build_model(input_dim(det.features), 16, 2, 8)
    init_params(model, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        loss = bce(model(f, x, nbr)[1], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_fit_records_training(trained):
    info = trained.fit_info_
    assert len(info["losses"]) == 30 and all(np.isfinite(info["losses"]))
    assert np.isfinite(info["heldout_loss_before"]) and np.isfinite(info["heldout_loss_after"])
    assert info["net_points"][0] <= 700 and info["bank_rows"] > 0


def test_predict_shapes_determinism_and_round_trip(trained, tmp_path):
    c = make_part("flange", 3000, 9)
    r = apply("bump", c.points, c.normals, np.random.default_rng(1), radius=0.09, depth=0.04)
    pred = trained.predict([r.points, c.points])
    assert [len(m) for m in pred.anomaly_map] == [len(r.points), 3000]
    assert pred.pred_score.shape == (2,) and np.all(np.isfinite(pred.pred_score))
    again = PointTransformerAD(steps=30, **TINY).fit(_parts())
    np.testing.assert_array_equal(again.predict([r.points]).anomaly_map[0], pred.anomaly_map[0])
    path = trained.save(tmp_path / "pn.pt")
    loaded = PointTransformerAD.load(path)
    p2 = loaded.predict([r.points, c.points])
    np.testing.assert_array_equal(p2.pred_score, pred.pred_score)
    for a, b in zip(p2.anomaly_map, pred.anomaly_map):
        np.testing.assert_array_equal(a, b)
    for fusion in ("proto", "head"):
        loaded.fusion = fusion
        assert np.all(np.isfinite(loaded.predict([r.points]).anomaly_map[0]))
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="truncated or corrupt"):
        PointTransformerAD.load(tmp_path / "cut.pt")
    from defectforge.detect3d.bank import FPFHBank

    with pytest.raises(InputError, match="holds a PointTransformerAD, not a FPFHBank"):
        FPFHBank.load(path)


def test_bad_configuration_and_input(trained):
    with pytest.raises(ConfigError, match="unknown synthesis operator"):
        get_detector3d("pointnet", train_ops=("melt",))  # checked by the factory (and by fit)
    with pytest.raises(ConfigError, match="fusion"):
        get_detector3d("pointnet", fusion="max")  # checked by the factory (and by fit)
    with pytest.raises(ConfigError, match="not fitted"):
        PointTransformerAD().predict([make_part("flange", 1000, 0).points])
    with pytest.raises(InputError, match="different units"):
        trained.predict([make_part("flange", 3000, 3).points / 1000.0])


def _toy_validation(informative: str):
    """Per-cloud (points, proto, head, mask): 6 good + 6 anomalous clouds on a plane, where
    only the ``informative`` component is higher on the anomalous points and the other one
    points at a decoy region of the good clouds."""
    rng = np.random.default_rng(0)
    pts, proto, head, masks = [], [], [], []
    for c in range(12):
        p = np.column_stack([rng.uniform(-1, 1, (300, 2)), np.zeros(300)])
        m = (np.linalg.norm(p[:, :2] - 0.3, axis=1) < 0.3) if c >= 6 else np.zeros(300, bool)
        signal = m * 1.0 + rng.normal(0, 0.1, 300)
        # a misleading component: high on a decoy region of the good clouds
        decoy = (np.linalg.norm(p[:, :2] + 0.3, axis=1) < 0.3) * (c < 6) + rng.uniform(0, 0.2, 300)
        pr, hd = (signal, decoy) if informative == "proto" else (0.1 * decoy, np.clip(signal, 0, 1))
        pts.append(p)
        proto.append(pr)
        head.append(hd)
        masks.append(m)
    return pts, proto, head, masks


def test_head_weight_selection_follows_the_validation_data():
    from defectforge.detect3d.pointnet import HEAD_WEIGHTS, select_head_weight

    w, table = select_head_weight(*_toy_validation("proto"), smooth_k=4, top_k=10)
    assert w == 0.0 and len(table) == len(HEAD_WEIGHTS)
    assert table[0]["p_auroc"] > table[-1]["p_auroc"]  # a noisy head only hurts
    w, table = select_head_weight(*_toy_validation("head"), smooth_k=4, top_k=10)
    assert w >= 1.0 and table[-1]["p_auroc"] > table[0]["p_auroc"]


def test_auto_fusion_multilayer_prototypes_and_shape_inputs(tmp_path):
    from defectforge.detect3d.pointnet import HEAD_WEIGHTS

    det = PointTransformerAD(steps=12, **{**TINY, "features": "fpfh,shape", "proto_layers": "all",
                                          "fusion": "auto"}).fit(_parts())
    assert det.bank_.shape[1] == 16 * 3  # embedding + 2 blocks
    assert det.head_weight_ in HEAD_WEIGHTS
    table = det.fit_info_["validation"]["head_weight_table"]
    assert [r["head_weight"] for r in table] == list(HEAD_WEIGHTS)
    assert det.fit_info_["validation"]["n_anomalous"] > 0
    c = make_part("flange", 3000, 9)
    r = apply("dent", c.points, c.normals, np.random.default_rng(1), radius=0.09, depth=0.04)
    w = det.head_weight_
    pred = det.predict([r.points, c.points])
    assert det.head_weight_ == w  # scoring clouds never changes the chosen weight
    loaded = PointTransformerAD.load(det.save(tmp_path / "auto.pt"))
    assert loaded.head_weight_ == w and loaded.features == "fpfh,shape"
    np.testing.assert_array_equal(loaded.predict([r.points, c.points]).pred_score, pred.pred_score)
    variants = det.score_variants([r.points], [0.0, w], [5, 10])
    np.testing.assert_allclose(variants[(w, det.top_k)][0], pred.pred_score[:1])


def test_bad_feature_options():
    with pytest.raises(ConfigError, match="features"):
        get_detector3d("pointnet", features="normal,colour")  # checked by the factory (and by fit)
    with pytest.raises(ConfigError, match="proto_layers"):
        get_detector3d("pointnet", proto_layers="first")  # checked by the factory (and by fit)


def test_fuse_scores_normalises_each_part():
    from defectforge.detect3d.fusion import fuse_scores, stats_from_thresholds

    net, fpfh = stats_from_thresholds(2.0, 1.0), stats_from_thresholds(10.0, 5.0)
    obj, maps = fuse_scores([2.0, 4.0], [np.array([1.0, 2.0])] * 2, [10.0, 30.0], [np.array([5.0, 0.0])] * 2,
                            net, fpfh, weight=0.5)
    np.testing.assert_allclose(obj, [1.0 + 0.5, 2.0 + 1.5])
    np.testing.assert_allclose(maps[0], [1.0 + 0.5, 2.0])
    obj0, _ = fuse_scores([2.0], [np.zeros(1)], [99.0], [np.zeros(1)], net, stats_from_thresholds(np.inf, 0.0), 0.0)
    assert obj0[0] == 1.0  # weight 0: the network alone; non-finite norms fall back to 1


def test_fuse_scores_zscore_and_map_objects():
    from defectforge.detect3d.fusion import fuse_scores, fused_thresholds, score_stats, top_fraction_mean

    rng = np.random.default_rng(0)
    good_a = [rng.normal(1.0, 0.1, 500) for _ in range(3)]
    good_b = [rng.normal(50.0, 5.0, 500) for _ in range(3)]
    sa = score_stats([v.max() for v in good_a], good_a)
    sb = score_stats([v.max() for v in good_b], good_b)
    assert abs(sa["point_mean"] - 1.0) < 0.02 and abs(sb["point_std"] - 5.0) < 0.5
    # both parts on the z scale: a map twice as far from its good mean counts the same in either
    a = np.full(10, 1.0 + 3 * sa["point_std"])
    b = np.full(10, 50.0 + 3 * sb["point_std"])
    _, maps = fuse_scores([0.0], [a], [0.0], [b], sa, sb, 1.0, norm="zscore")
    np.testing.assert_allclose(maps[0], 3.0 + 3.0 + (1.0 - sa["point_mean"]) / sa["point_std"]
                               + (50.0 - sb["point_mean"]) / sb["point_std"], rtol=1e-5)
    # object="map": only where the two maps agree spatially does the object score rise
    base_a, base_b = np.zeros(1000), np.zeros(1000)
    apart_a, apart_b = base_a.copy(), base_b.copy()
    apart_a[:10], apart_b[-10:] = 5.0, 5.0
    same_a, same_b = base_a.copy(), base_b.copy()
    same_a[:10], same_b[:10] = 5.0, 5.0
    unit = {"object_max": 1.0, "object_mean": 0.0, "object_std": 1.0, "point_q999": 1.0, "point_mean": 0.0,
            "point_std": 1.0}
    o_sum, _ = fuse_scores([5.0, 5.0], [apart_a, same_a], [5.0, 5.0], [apart_b, same_b], unit, unit, 1.0)
    assert o_sum[0] == o_sum[1]  # summed object scores cannot tell the two apart
    o_map, m = fuse_scores([5.0, 5.0], [apart_a, same_a], [5.0, 5.0], [apart_b, same_b], unit, unit, 1.0,
                           object="map", object_frac=0.01)
    assert o_map[1] == 10.0 and o_map[0] == 5.0 and o_map[1] == top_fraction_mean(m[1], 0.01)
    assert fused_thresholds(sa, sb, 2.0, "threshold") == (3.0, 3.0)


def test_object_share_gives_the_object_score_its_own_weight():
    from defectforge.detect3d.fusion import fuse_scores, fused_thresholds, normalise, score_stats

    rng = np.random.default_rng(1)
    sn = score_stats(rng.normal(2.0, 0.5, 8), [rng.normal(1.0, 0.2, 50)])
    sf = score_stats(rng.normal(10.0, 2.0, 8), [rng.normal(5.0, 1.0, 50)])
    net_obj, fpfh_obj = rng.normal(2.0, 1.0, 6), rng.normal(10.0, 3.0, 6)
    maps_n, maps_f = [rng.random(30) for _ in range(6)], [rng.random(30) for _ in range(6)]
    zn, zf = normalise(net_obj, sn, "object", "zscore"), normalise(fpfh_obj, sf, "object", "zscore")
    args = (net_obj, maps_n, fpfh_obj, maps_f, sn, sf, 4.0, "zscore", "sum")
    o1, m1 = fuse_scores(*args, object_share=1.0)
    np.testing.assert_allclose(o1, zf)  # share 1: the FPFH bank's own object ranking, whatever the network says
    assert list(np.argsort(o1)) == list(np.argsort(fpfh_obj))
    o0, m0 = fuse_scores(*args, object_share=0.0)
    np.testing.assert_allclose(o0, zn)
    np.testing.assert_allclose(fuse_scores(*args, object_share=0.8)[0], 0.2 * zn + 0.8 * zf)
    np.testing.assert_allclose(fuse_scores(*args)[0], zn + 4.0 * zf)  # None: the point weight, as before
    for a, b, c in zip(m1, m0, fuse_scores(*args)[1]):  # the point map does not depend on the share
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    thr, _ = fused_thresholds(sn, sf, 4.0, "zscore", object_share=1.0)
    assert thr == pytest.approx(float(normalise([sf["object_max"]], sf, "object", "zscore")[0]))
    assert fused_thresholds(sn, sf, 4.0, "zscore")[0] > thr  # the network's part adds to the bound
    with pytest.raises(ConfigError, match="object_share"):
        fuse_scores(*args, object_share=1.5)
    with pytest.raises(ConfigError, match="object_share"):
        get_detector3d("pointnet", object_share=-0.1)


def test_gated_choice_keeps_the_reference_unless_the_gain_is_reliable():
    from defectforge.detect3d.fusion import gated_choice

    rng = np.random.default_rng(0)
    # tiny groups (3 good, 3 defective): the candidate wins one pair in one group, ties elsewhere
    labels = [[False] * 3 + [True] * 3 for _ in range(4)]
    ref = [[0.0, 1.0, 2.0, 1.5, 3.0, 4.0] for _ in range(4)]
    lucky = [list(r) for r in ref]
    lucky[0][3] = 2.5  # now above every good cloud of group 0
    name, info = gated_choice(labels, {"ref": ref, "lucky": lucky}, "ref", n_boot=500)
    assert info["best"] == "lucky" and info["scores"]["lucky"] > info["scores"]["ref"]
    assert name == "ref" and info["p_gain"] < 0.95
    # a candidate that separates every group where the reference is near chance wins reliably
    labels = [[False] * 10 + [True] * 10 for _ in range(4)]
    ref = [rng.normal(0, 1, 20) for _ in range(4)]
    good = [np.r_[rng.normal(0, 1, 10), rng.normal(4, 1, 10)] for _ in range(4)]
    name, info = gated_choice(labels, {"ref": ref, "good": good}, "ref", n_boot=300)
    assert name == "good" and info["p_gain"] >= 0.95
    # ties go to the first candidate; the reference is first here, so no bootstrap is run
    name, info = gated_choice(labels, {"ref": ref, "same": ref}, "ref")
    assert name == "ref" and np.isnan(info["p_gain"])
    with pytest.raises(ConfigError, match="reference"):
        gated_choice(labels, {"good": good}, "ref")
    with pytest.raises(ConfigError, match="good and defective"):
        gated_choice([[True] * 3], {"ref": [[1.0, 2.0, 3.0]]}, "ref")
    with pytest.raises(ConfigError, match="one score per"):
        gated_choice(labels, {"ref": ref, "short": [v[:5] for v in ref]}, "ref")


def test_fpfh_fusion_equals_the_two_detectors_combined_and_round_trips(trained, tmp_path):
    from defectforge.detect3d.bank import FPFHBank
    from defectforge.detect3d.fusion import fuse_scores

    fused = PointTransformerAD(steps=30, **{**TINY, "fpfh_weight": 2.0}).fit(_parts())
    c = make_part("flange", 3000, 9)
    r = apply("bump", c.points, c.normals, np.random.default_rng(1), radius=0.09, depth=0.04)
    pred = fused.predict([r.points, c.points])
    net = trained.predict([r.points, c.points])  # the same network (same seed and data)
    fb = FPFHBank(seed=0).fit(_parts())
    fp = fb.predict([r.points, c.points])
    obj, maps = fuse_scores(net.pred_score, net.anomaly_map, fp.pred_score, fp.anomaly_map, trained.stats_,
                            fb.stats_, 2.0, fused.fusion_norm, fused.fusion_object, fused.object_frac,
                            fused.object_share)
    np.testing.assert_allclose(pred.pred_score, obj, rtol=1e-6)
    np.testing.assert_allclose(pred.anomaly_map[0], maps[0], rtol=1e-5)
    assert pred.pred_score[0] > pred.pred_score[1]
    # z-score normalisation and the object score from the fused map: the same function, fitted stats
    fused.fusion_norm, fused.fusion_object, fused.object_frac = "zscore", "map", 0.01
    pz = fused.predict([r.points, c.points])
    obj, maps = fuse_scores(net.pred_score, net.anomaly_map, fp.pred_score, fp.anomaly_map, trained.stats_,
                            fb.stats_, 2.0, norm="zscore", object="map", object_frac=0.01)
    np.testing.assert_allclose(pz.pred_score, obj, rtol=1e-5)
    np.testing.assert_allclose(pz.anomaly_map[1], maps[1], rtol=1e-5, atol=1e-5)
    assert fb.stats_["point_std"] > 0 and trained.stats_["object_max"] == trained.threshold_
    loaded = PointTransformerAD.load(fused.save(tmp_path / "fused.pt"))
    assert loaded.fusion_object == "map" and loaded.fpfh_.stats_ == fb.stats_
    np.testing.assert_array_equal(loaded.predict([r.points]).pred_score, pz.pred_score[:1])
    # object_share 1: the object score is the FPFH bank's own (z-scored), the map stays fused
    fused.fusion_object, fused.object_share = "sum", 1.0
    ps = fused.predict([r.points, c.points])
    zf = (fp.pred_score - fb.stats_["object_mean"]) / fb.stats_["object_std"]
    np.testing.assert_allclose(ps.pred_score, zf, rtol=1e-6)
    np.testing.assert_allclose(ps.anomaly_map[1], pz.anomaly_map[1], rtol=1e-5, atol=1e-5)
    assert PointTransformerAD.load(fused.save(tmp_path / "share.pt")).object_share == 1.0
    # a file saved before object_share existed keeps its summed object score (network + weight x FPFH)
    entry = fused.to_entry()
    del entry["params"]["object_share"], entry["state"]["object_share"]
    old = PointTransformerAD.from_entry(entry)
    assert old.object_share is None
    np.testing.assert_allclose(old.predict([r.points, c.points]).pred_score,
                               fuse_scores(net.pred_score, net.anomaly_map, fp.pred_score, fp.anomaly_map,
                                           trained.stats_, fb.stats_, 2.0, "zscore", "sum")[0], rtol=1e-6)
    with pytest.raises(ConfigError, match="fpfh_weight"):
        get_detector3d("pointnet", fpfh_weight=-1)


def test_every_fit_phase_reports_progress_and_the_bank_is_capped(monkeypatch, capsys):
    import defectforge.detect3d.pointnet as pn

    monkeypatch.setattr(pn, "MAX_BANK_ROWS", 50)
    det = PointTransformerAD(steps=5, progress=True, **{**TINY, "fpfh_weight": 1.0}).fit(_parts(3))
    err = capsys.readouterr().err  # not a terminal: plain progress lines
    for phase in ("pointnet preparing clouds", "pointnet training", "pointnet prototype features",
                  "pointnet coreset", "pointnet validation", "fpfh features", "fpfh coreset", "fpfh validation"):
        assert f"{phase}: 0/" in err, phase
    assert "pointnet training: 5/5" in err and "pointnet coreset: 50/50" in err
    assert len(det.bank_) == 50
    assert set(det.fit_info_["phase_s"]) == {"prepare", "train", "prototypes", "coreset", "validation", "fpfh"}


def test_default_training_covers_the_full_mpas_range():
    from defectforge.detect3d.pointnet import TRAIN_OPS, TRAIN_RANGES
    from defectforge.synth3d.operators import OPERATORS

    assert set(TRAIN_OPS) == set(OPERATORS) and set(TRAIN_RANGES) >= set(TRAIN_OPS)
    det = PointTransformerAD()
    assert {"bend", "crack", "bulge", "sink"} <= set(det.train_ops)
    assert det.fpfh_weight > 0 and det.fusion_object == "sum"  # fused with the FPFH bank (chosen on validation)
    assert det.object_share == 1.0  # objects ranked by the FPFH bank unless validation shows a reliable gain
    assert TRAIN_RANGES["bump"]["radius"][1] >= 0.1  # large, non-local defects too
    p = make_part("flange", 3000, 0)
    hits = 0
    rng = np.random.default_rng(0)
    for op in ("bend", "crack", "bulge"):
        det.train_ops = (op,)
        _, _, m = det._data().synth(p.points / 100.0, p.normals, rng)
        hits += bool(m.any())
    assert hits == 3


def test_device_option_is_checked_and_not_saved(trained, tmp_path):
    import torch

    from defectforge.detect3d.bank import FPFHBank

    for cls in (PointTransformerAD, FPFHBank):
        with pytest.raises(ConfigError, match="device"):
            get_detector3d("pointnet" if cls is PointTransformerAD else "fpfh", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            PointTransformerAD(steps=1, device="cuda", **TINY).fit(_parts())
    path = trained.save(tmp_path / "dev.pt")
    assert PointTransformerAD.load(path, device="cpu").device == "cpu"  # a run-time option, not a fitted one
