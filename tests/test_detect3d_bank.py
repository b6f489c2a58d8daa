"""FPFH memory-bank detector: localisation, determinism, persistence and bad input."""

import numpy as np
import pytest

from defectforge.detect3d.bank import FPFHBank
from defectforge.errors import InputError
from defectforge.metrics import auroc
from defectforge.synth3d.cloud import PointCloud
from defectforge.synth3d.operators import apply
from defectforge.synth3d.parts import make_part

SMALL = dict(ks=(20, 40, 60), n_groups=256, group_size=16, voxel=0.03, smooth_k=8, top_k=20)


def _part(seed, n=6000):
    return make_part("flange", n, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def fitted():
    return FPFHBank(**SMALL).fit([_part(i) for i in range(3)])


@pytest.fixture(scope="module")
def bumped():
    c = _part(50)
    r = apply("bump", c.points, c.normals, np.random.default_rng(3), radius=0.06, depth=0.025)
    return PointCloud(r.points), r.mask


def test_bank_localises_a_bump_and_ranks_objects(fitted, bumped):
    cloud, mask = bumped
    good = _part(60)
    pred = fitted.predict([cloud, good])
    assert pred.anomaly_map[0].shape == (len(cloud),)
    assert pred.anomaly_map[1].shape == (len(good),)
    assert auroc(mask, pred.anomaly_map[0]) > 0.9
    assert pred.pred_score[0] > pred.pred_score[1]
    assert pred.pred_label.dtype == bool and pred.pred_mask[0].dtype == bool
    assert np.isfinite(fitted.threshold_) and fitted.fit_info_["bank_rows"] < fitted.fit_info_["group_rows"]


def test_bank_is_deterministic_and_round_trips(fitted, bumped, tmp_path):
    cloud, _ = bumped
    again = FPFHBank(**SMALL).fit([_part(i) for i in range(3)])
    np.testing.assert_array_equal(fitted.bank_, again.bank_)
    p1, p2 = fitted.predict([cloud]), again.predict([cloud])
    np.testing.assert_array_equal(p1.anomaly_map[0], p2.anomaly_map[0])
    path = fitted.save(tmp_path / "m.pt")
    loaded = FPFHBank.load(path)
    p3 = loaded.predict([cloud])
    np.testing.assert_array_equal(p1.anomaly_map[0], p3.anomaly_map[0])
    assert p1.pred_score[0] == p3.pred_score[0]
    # truncated file
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.pt"):
        FPFHBank.load(tmp_path / "cut.pt")
    # a file from a newer defectforge
    import torch

    obj = torch.load(path, weights_only=True)
    obj["format_version"] = 99
    torch.save(obj, tmp_path / "new.pt")
    with pytest.raises(InputError, match="upgrade"):
        FPFHBank.load(tmp_path / "new.pt")
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(InputError, match="junk.pt"):
        FPFHBank.load(tmp_path / "junk.pt")


def test_bad_clouds_give_clear_errors(fitted):
    good = _part(70)
    nan = good.points.copy()
    nan[5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fitted.predict([nan])
    with pytest.raises(InputError, match="only 20 points"):
        fitted.predict([good.points[:20]])
    with pytest.raises(InputError, match="different units"):
        fitted.predict([good.points * 1000.0])  # metres vs millimetres
    with pytest.raises(InputError, match="different units"):
        FPFHBank(**SMALL).fit([_part(0).points, _part(1).points * 25.4])
    with pytest.raises(InputError, match="no training clouds"):
        FPFHBank(**SMALL).fit([])
    with pytest.raises(InputError, match="line"):
        fitted.predict([np.column_stack([np.linspace(0, 1, 300)] * 3)])


def test_cloud_scale_mode_accepts_any_units(bumped):
    cloud, mask = bumped
    det = FPFHBank(scale="cloud", **SMALL).fit([_part(i).points * 0.001 for i in range(2)])
    pred = det.predict([cloud.points * 1000.0])
    assert auroc(mask, pred.anomaly_map[0]) > 0.85
