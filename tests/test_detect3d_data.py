"""3D dataset loaders on tiny fake trees of each layout, and mismatched label files."""

import numpy as np
import pytest

from defectforge.detect3d.data import detect_format, load_dataset3d
from defectforge.errors import InputError
from defectforge.synth3d.cloud import PointCloud
from defectforge.synth3d.cloud_io import write_cloud


def _blob(seed, n=300):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True) * np.array([3.0, 2.0, 1.0])


def _write_pcd(path, pts):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_cloud(path, PointCloud(pts))


def _write_gt(path, pts, lab, sep):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.column_stack([pts, lab]), fmt="%.6f", delimiter=sep)


def test_real3d_layout(tmp_path):
    root = tmp_path / "real3d"
    for i in range(2):
        _write_pcd(root / "duck" / "train" / f"{i}_template.pcd", _blob(i))
    _write_pcd(root / "duck" / "train" / "notes.pcd", _blob(9))  # not a template: ignored
    _write_pcd(root / "duck" / "test" / "3_good.pcd", _blob(3))
    pts = _blob(4)
    lab = (pts[:, 0] > 2.5).astype(int)
    _write_pcd(root / "duck" / "test" / "4_bulge_cut.pcd", pts)
    # gt rows in another order than the cloud: matched by coordinates
    perm = np.random.default_rng(0).permutation(len(pts))
    _write_gt(root / "duck" / "gt" / "4_bulge_cut.txt", pts[perm], lab[perm], " ")
    assert detect_format(root) == "real3d"
    ds = load_dataset3d(root)
    assert ds.format == "real3d" and ds.categories == ["duck"]
    assert ds.counts() == {"duck/test/defect": 1, "duck/test/good": 1, "duck/train/good": 2}
    bad = [s for s in ds if s.is_defect][0]
    assert bad.label == "bulge"
    cloud = bad.load()
    np.testing.assert_array_equal(cloud.labels, lab)
    good = [s for s in ds if s.split == "test" and not s.is_defect][0].load()
    assert good.labels.sum() == 0 and len(good) == 300


def test_real3d_mismatched_or_missing_labels(tmp_path):
    root = tmp_path / "r"
    _write_pcd(root / "fish" / "train" / "0_template.pcd", _blob(0))
    _write_pcd(root / "fish" / "test" / "1_sink.pcd", _blob(1))
    _write_gt(root / "fish" / "gt" / "1_sink.txt", _blob(2), np.zeros(300), " ")  # another cloud's points
    s = [s for s in load_dataset3d(root) if s.is_defect][0]
    with pytest.raises(InputError, match="1_sink.txt: label file does not match the cloud"):
        s.load()
    np.savetxt(root / "fish" / "gt" / "1_sink.txt", _blob(1), fmt="%.6f")  # 3 columns only
    with pytest.raises(InputError, match="4 columns"):
        s.load()
    _write_gt(root / "fish" / "gt" / "1_sink.txt", _blob(1), np.full(300, 2), " ")
    with pytest.raises(InputError, match="0 \\(good\\) or 1"):
        s.load()
    (root / "fish" / "gt" / "1_sink.txt").unlink()
    _write_pcd(root / "fish" / "test" / "2_sink.pcd", _blob(1))
    (root / "fish" / "test" / "1_sink.pcd").unlink()
    with pytest.raises(InputError, match="no label column and no ground-truth file"):
        [s for s in load_dataset3d(root) if s.is_defect][0].load()


def test_anomaly_shapenet_layout(tmp_path):
    root = tmp_path / "ashape"
    for i in range(2):
        _write_pcd(root / "bowl0" / "train" / f"bowl0_template{i}.pcd", _blob(i))
    _write_pcd(root / "bowl0" / "test" / "bowl0_positive0.pcd", _blob(5))
    pts = _blob(6)
    lab = (pts[:, 2] > 0.8).astype(int)
    _write_pcd(root / "bowl0" / "test" / "bowl0_concavity2.pcd", pts)
    _write_gt(root / "bowl0" / "GT" / "bowl0_concavity2.txt", pts, lab, ",")
    assert detect_format(root) == "anomaly-shapenet"
    ds = load_dataset3d(root)
    assert ds.counts() == {"bowl0/test/defect": 1, "bowl0/test/good": 1, "bowl0/train/good": 2}
    bad = [s for s in ds if s.is_defect][0]
    assert bad.label == "concavity"
    np.testing.assert_array_equal(bad.load().labels, lab)
    (root / "bowl0" / "GT" / "bowl0_concavity2.txt").unlink()
    with pytest.raises(InputError, match="no ground-truth file"):
        load_dataset3d(root, "anomaly-shapenet")


def _stl(path, seed, shift=0.0):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=3, radius=2.0 + 0.1 * seed)
    mesh.apply_translation([shift, 0, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)
    return np.asarray(mesh.vertices)


def test_mulsen_layout(tmp_path):
    root = tmp_path / "mulsen"
    pc = root / "capsule" / "Pointcloud"
    for i in range(2):
        _stl(pc / "train" / f"{i}.stl", i)
    _stl(pc / "test" / "good" / "0.stl", 3)
    v = _stl(pc / "test" / "crack" / "1.stl", 4)
    anomalous = v[v[:, 0] > 1.5]
    (pc / "GT" / "crack").mkdir(parents=True)
    np.savetxt(pc / "GT" / "crack" / "1.txt", anomalous, fmt="%.6f", delimiter=",")
    # a crack sample whose point-cloud flag says normal (visible only in RGB)
    _stl(pc / "test" / "crack" / "2.stl", 5)
    csvp = root / "capsule" / "RGB" / "GT" / "crack" / "data.csv"
    csvp.parent.mkdir(parents=True)
    csvp.write_text("sample,rgb,infrared,pointcloud\n1.png,1,1,1\n2.png,1,0,0\n")
    assert detect_format(root) == "mulsen"
    ds = load_dataset3d(root)
    assert ds.counts() == {"capsule/test/defect": 1, "capsule/test/good": 2, "capsule/train/good": 2}
    bad = [s for s in ds if s.is_defect][0]
    cloud = bad.load()
    assert bad.label == "crack" and len(cloud) == len(np.unique(v.round(6), axis=0))
    assert cloud.labels.sum() == len(anomalous)
    np.testing.assert_array_equal(cloud.labels.astype(bool), cloud.points[:, 0] > 1.5)
    np.savetxt(pc / "GT" / "crack" / "1.txt", anomalous + 5.0, fmt="%.6f", delimiter=",")
    with pytest.raises(InputError, match="label file does not match"):
        bad.load()


def test_synth3d_output_and_unknown_layout(tmp_path):
    from defectforge.synth3d.instructions import validate_instructions
    from defectforge.synth3d.pipeline import run_synthesis

    out = tmp_path / "synth"
    inst = validate_instructions({"defects": [{"type": "bump"}]})
    run_synthesis("part:flange", inst, 2, 0, out, n_points=1500)
    (out / "train").mkdir()
    from defectforge.synth3d.parts import make_part

    write_cloud(out / "train" / "g0.ply", PointCloud(make_part("flange", 1500, 1).points))
    assert detect_format(out) == "synth3d"
    ds = load_dataset3d(out)
    assert ds.categories == ["flange"]
    assert ds.counts() == {"flange/test/defect": 2, "flange/train/good": 1}
    c = [s for s in ds if s.is_defect][0].load()
    assert 0 < c.labels.sum() < len(c)
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(InputError, match="unrecognised 3D dataset layout"):
        load_dataset3d(tmp_path / "empty")
    with pytest.raises(InputError, match="not found"):
        load_dataset3d(tmp_path / "missing")
