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


def _save(tmp_path, name, split, results):
    p = tmp_path / f"{name}.pkl"
    p.write_bytes(pickle.dumps({"args": {"split": split, "train_ops": "full"}, "results": results}))
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
    for label, kw in bd.fusion_variants():
        assert bd.parse_fusion(label) == kw
