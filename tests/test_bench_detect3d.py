"""bench/bench_detect3d.py's rescoring: runs of one class per process merge, fusion settings
round-trip, and the fusion sweep refuses test runs (choices on validation only)."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_detect3d as bd  # noqa: E402


def _run(cls, rng, split, signal):
    """A fake saved run of one class: 2 good + 2 defective clouds of 200 points."""
    stats = {"object_max": 1.0, "object_mean": 0.5, "object_std": 0.2, "point_q999": 1.0, "point_mean": 0.3,
             "point_std": 0.2}
    store = {**bd._store(), "stats": {cls: stats}, "fit_s": {cls: 1.0}}
    for j in range(4):
        m = np.zeros(200, bool)
        if j >= 2:
            m[:20] = True
        ps = rng.random(200).astype(np.float32) + signal * m
        bd._collect(store, cls, [(None, m)], [float(ps.max())], [ps])
    return store


def _save(tmp_path, name, split, results, train_ops="full"):
    p = tmp_path / f"{name}.pkl"
    p.write_bytes(pickle.dumps({"args": {"split": split, "train_ops": train_ops}, "results": results}))
    return str(p)


def test_rescore_merges_classes_and_the_sweep_takes_validation_runs_only(tmp_path, capsys):
    rng = np.random.default_rng(0)
    paths = [_save(tmp_path, c, "val", {"fpfh": _run(c, rng, "val", 1.0), "pointnet": _run(c, rng, "val", 0.5)})
             for c in ("flange", "bracket")]
    out = tmp_path / "s.json"
    assert bd.rescore(paths, None, True, str(out)) == 0
    res = json.loads(out.read_text())
    assert set(res["metrics"]["fpfh"]["per_class"]) == {"flange", "bracket"}  # both files merged
    variants = list(bd.fusion_variants())
    assert len(res["fusion_sweep"]) == len(variants)
    assert "[val fusion sweep] pointnet (full): best" in capsys.readouterr().out
    test = [_save(tmp_path, "t", "test", {"fpfh": _run("flange", rng, "test", 1.0),
                                          "pointnet": _run("flange", rng, "test", 1.0)})]
    with pytest.raises(SystemExit, match="validation runs"):
        bd.rescore(test, None, True, None)
    label = variants[-1][0]
    assert bd.rescore(test, label, False, str(out)) == 0
    assert f"pointnet (full) + fpfh [{label}]" in json.loads(out.read_text())["metrics"]


def test_fusion_labels_round_trip():
    from defectforge.detect3d.pointnet import PointTransformerAD

    for label, kw in bd.fusion_variants():
        assert bd.parse_fusion(label) == kw
    for kw, share in (({"fusion_object": "sum", "object_share": 0.9}, 0.9), ({"fusion_object": "sum"}, 1.0),
                      ({"fusion_object": "sum", "object_share": None}, None), ({"fusion_object": "map"}, None)):
        det = PointTransformerAD(fusion_norm="zscore", fpfh_weight=2.0, **kw)
        got = bd.parse_fusion(bd.detector_fusion_label(det))
        assert got.get("object_share") == share and got["object"] == det.fusion_object


def test_choose_object_keeps_the_fpfh_ranking_when_the_network_adds_noise(tmp_path, capsys):
    rng = np.random.default_rng(1)
    paths = []
    for tag in ("full", "unseen"):
        for c in ("flange", "bracket"):
            fpfh = _run(c, rng, "val", 2.0)
            net = _run(c, rng, "val", 0.0)  # no signal: its object scores are noise
            paths.append(_save(tmp_path, f"{tag}_{c}", "val", {"fpfh": fpfh, "pointnet": net}, tag))
    out = tmp_path / "choice.json"
    assert bd.choose_object(paths, "zscore,map,0.005,4", str(out)) == 0
    res = json.loads(out.read_text())
    assert res["groups"] == ["full/flange", "full/bracket", "unseen/flange", "unseen/bracket"]
    assert res["reference"] == "zscore,sum,1,4" and res["scores"]["zscore,sum,1,4"] == 1.0
    assert res["chosen"] == "zscore,sum,1,4"
    assert len(res["scores"]) == len(list(bd.object_variants("zscore", 4.0)))
    assert "chosen zscore,sum,1,4" in capsys.readouterr().out
    assert bd.parse_fusion(res["chosen"]) == {"weight": 4.0, "norm": "zscore", "object": "sum", "object_share": 1.0}
    test = [_save(tmp_path, "t", "test", {"fpfh": _run("flange", rng, "test", 1.0),
                                          "pointnet": _run("flange", rng, "test", 1.0)})]
    with pytest.raises(SystemExit, match="validation runs"):
        bd.choose_object(test, None, None)
    assert bd.main(["--rescore", *paths, "--choose-object"]) == 0  # the detector's own point fusion by default
