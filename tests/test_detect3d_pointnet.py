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
            train_ops=("bump", "dent"), rotate_deg=5.0, top_k=10)


def _parts(n=2):
    return [make_part("flange", 3000, i).points for i in range(n)]


@pytest.fixture(scope="module")
def trained():
    return PointTransformerAD(steps=30, **TINY).fit(_parts())


def test_training_steps_reduce_the_loss_on_a_synthetic_anomaly():
    import torch

    from defectforge.detect3d.fpfh import pca_normals_centroid
    from defectforge.detect3d.pointnet import _bce, _build_model, _init_params, input_dim
    from defectforge.synth3d.geometry import voxel_downsample

    det = PointTransformerAD(**TINY)
    p = make_part("flange", 3000, 0).points
    p = (p - p.mean(axis=0)) / np.linalg.norm(p - p.mean(axis=0), axis=1).max()
    net = voxel_downsample(p, 0.06)[0]
    pts, nrm, mask = det._synth(net, pca_normals_centroid(net, 10), np.random.default_rng(0))
    assert 0 < mask.sum() < len(mask)
    f, x, nbr = det._tensors(pts, nrm)
    y = torch.from_numpy(mask.astype(np.float32))
    model = _build_model(input_dim(det.features), 16, 2, 8)
    _init_params(model, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        loss = _bce(model(f, x, nbr)[1], y)
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
