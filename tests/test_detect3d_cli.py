"""``defectforge detect3d fit|predict|eval`` end to end on a tiny Real3D-AD-layout tree."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from defectforge.cli import app
from defectforge.synth3d.cloud import PointCloud
from defectforge.synth3d.cloud_io import read_cloud, write_cloud
from defectforge.synth3d.operators import apply
from defectforge.synth3d.parts import make_part

runner = CliRunner()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("d3") / "data"
    for i in range(2):
        write_cloud(root / "flange" / "train" / f"{i}_template.pcd", PointCloud(make_part("flange", 8000, i).points))
    write_cloud(root / "flange" / "test" / "5_good.pcd", PointCloud(make_part("flange", 8000, 5).points))
    c = make_part("flange", 8000, 6)
    r = apply("bump", c.points, c.normals, np.random.default_rng(0), radius=0.07, depth=0.03)
    write_cloud(root / "flange" / "test" / "6_bulge.pcd", PointCloud(r.points))
    (root / "flange" / "gt").mkdir()
    np.savetxt(root / "flange" / "gt" / "6_bulge.txt", np.column_stack([r.points, r.mask]), fmt="%.6f")
    return root


def test_fit_predict_eval(tree, tmp_path):
    model = tmp_path / "m.pt"
    res = runner.invoke(app, ["detect3d", "fit", str(tree), "--model", "fpfh", "--out", str(model), "--voxel", "0.03"])
    assert res.exit_code == 0, res.output
    assert model.is_file()
    out = tmp_path / "pred"
    clouds = [tree / "flange" / "test" / "6_bulge.pcd", tree / "flange" / "test" / "5_good.pcd"]
    res = runner.invoke(app, ["detect3d", "predict", str(model), *map(str, clouds), "--out", str(out)])
    assert res.exit_code == 0, res.output
    txt = np.loadtxt(out / "6_bulge.txt")
    assert txt.shape == (8000, 4)
    ply = read_cloud(out / "6_bulge.ply")
    np.testing.assert_allclose(ply.points, txt[:, :3], atol=1e-4)
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("file,score") and len(rows) == 3
    # rerun into the same folder: fine; into the clouds' own folder or a foreign one: one line, inputs kept
    assert runner.invoke(app, ["detect3d", "predict", str(model), *map(str, clouds), "--out", str(out)]).exit_code == 0
    test_dir = tree / "flange" / "test"
    kept = {f.name: f.read_bytes() for f in test_dir.iterdir()}
    res = runner.invoke(app, ["detect3d", "predict", str(model), str(clouds[0]), "--out", str(test_dir)])
    assert res.exit_code == 2 and "overlaps the input" in res.output
    assert {f.name: f.read_bytes() for f in test_dir.iterdir()} == kept
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "6_bulge.txt").write_text("mine")
    (foreign / "notes.md").write_text("mine")
    res = runner.invoke(app, ["detect3d", "predict", str(model), str(clouds[0]), "--out", str(foreign)])
    assert res.exit_code == 2 and "notes.md" in res.output and (foreign / "6_bulge.txt").read_text() == "mine"
    (foreign / "notes.md").unlink()  # only names this run writes, but a scores.csv of something else
    (foreign / "scores.csv").write_text("a,b\n1,2\n")
    res = runner.invoke(app, ["detect3d", "predict", str(model), str(clouds[0]), "--out", str(foreign)])
    assert res.exit_code == 2 and "not a scores file of 'detect3d predict'" in res.output
    # two clouds of one stem (other folders) get two outputs, not one
    twin = tmp_path / "twin" / "6_bulge.pcd"
    twin.parent.mkdir()
    twin.write_bytes(clouds[0].read_bytes())
    res = runner.invoke(app, ["detect3d", "predict", str(model), str(clouds[0]), str(twin), "--out", str(tmp_path / "p2")])
    assert res.exit_code == 0 and (tmp_path / "p2" / "6_bulge.txt").is_file() and (tmp_path / "p2" / "6_bulge_1.txt").is_file()
    js = tmp_path / "m.json"
    rep = tmp_path / "rep"
    res = runner.invoke(app, ["detect3d", "eval", str(model), str(tree), "--json", str(js), "--report", str(rep)])
    assert res.exit_code == 0, res.output
    data = json.loads(js.read_text())
    assert data["per_class"]["flange"]["P-AUROC"] > 0.8
    assert data["per_class"]["flange"]["O-AUROC"] == 1.0
    assert (rep / "report.html").is_file() and any((rep / "assets").rglob("*.png"))


def test_cli_errors_are_one_line(tree, tmp_path):
    res = runner.invoke(app, ["detect3d", "fit", str(tmp_path / "nope"), "--out", str(tmp_path / "m.pt")])
    assert res.exit_code == 2 and "dataset folder not found" in res.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 10)
    res = runner.invoke(app, ["detect3d", "predict", str(junk), str(tree / "flange" / "test" / "5_good.pcd"),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "junk.pt" in res.output
    res = runner.invoke(app, ["detect3d", "fit", str(tree), "--model", "nope", "--out", str(tmp_path / "m.pt")])
    assert res.exit_code == 2 and "unknown 3D detector" in res.output
    assert not (tmp_path / "m.pt").exists()


def test_eval_without_good_test_clouds_says_why_instead_of_nan(tree, tmp_path):
    import shutil

    only_bad = tmp_path / "only_bad"
    shutil.copytree(tree, only_bad)
    (only_bad / "flange" / "test" / "5_good.pcd").unlink()
    model = tmp_path / "m.pt"
    res = runner.invoke(app, ["detect3d", "fit", str(only_bad), "--model", "fpfh", "--out", str(model), "--voxel", "0.03"])
    assert res.exit_code == 0, res.output
    js = tmp_path / "m.json"
    res = runner.invoke(app, ["detect3d", "eval", str(model), str(only_bad), "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert "nan" not in res.output.lower() and "n/a" in res.output
    assert "every test cloud is defective" in res.output and "need both good and defective" in res.output
    data = json.loads(js.read_text())  # strict JSON: undefined metrics are null, not NaN
    assert data["per_class"]["flange"]["O-AUROC"] is None and data["per_class"]["flange"]["P-AUROC"] > 0.5
