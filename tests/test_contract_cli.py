"""The CLI's ``fit`` / ``predict`` / ``eval`` work for every registered 2D and 3D detector
name (models are loaded through the registry, never by a hard-coded class), and the root
command is the one error boundary (one line, exit 2; Ctrl-C: one line, exit 130)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from defectforge.cli import app
from defectforge.data.image_io import write_image, write_mask
from defectforge.detect.base import DETECTORS
from defectforge.detect3d import DETECTORS3D
from defectforge.synth3d.cloud import PointCloud
from defectforge.synth3d.cloud_io import write_cloud
from defectforge.synth3d.operators import apply
from defectforge.synth3d.parts import make_part

pytestmark = [pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning"),
              pytest.mark.usefixtures("one_torch_thread")]
runner = CliRunner()
FIT_OPTIONS_3D = {"fpfh": ["--voxel", "0.04"], "pointnet": ["--voxel", "0.04", "--steps", "2"]}


def _texture(rng: np.random.Generator) -> np.ndarray:
    img = 120 + rng.normal(0, 1, (48, 1)) * 12 + rng.normal(0, 6, (48, 64))
    return np.clip(img, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)


def _blob(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    img = _texture(rng)
    m = np.zeros(img.shape[:2], bool)
    y, x = rng.integers(6, 30, 2)
    m[y:y + 10, x:x + 12] = True
    img[m] = 30
    return img, m


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    rng = np.random.default_rng(4)
    for i in range(6):
        write_image(root / "train" / "good" / f"g{i}.png", _texture(rng))
    for split, n in (("train", 2), ("test", 3)):
        for i in range(n):
            img, m = _blob(rng)
            write_image(root / split / "blob" / f"{split}{i}.png", img)
            write_mask(root / "ground_truth" / "blob" / f"{split}{i}_mask.png", m)
    for i in range(3):
        write_image(root / "test" / "good" / f"t{i}.png", _texture(rng))
    return root


@pytest.fixture(scope="module")
def tree3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("d3") / "data"
    for i in range(2):
        write_cloud(root / "flange" / "train" / f"{i}_template.pcd", PointCloud(make_part("flange", 3000, i).points))
    write_cloud(root / "flange" / "test" / "5_good.pcd", PointCloud(make_part("flange", 3000, 5).points))
    c = make_part("flange", 3000, 6)
    r = apply("bump", c.points, c.normals, np.random.default_rng(0), radius=0.08, depth=0.03)
    write_cloud(root / "flange" / "test" / "6_bulge.pcd", PointCloud(r.points))
    (root / "flange" / "gt").mkdir()
    np.savetxt(root / "flange" / "gt" / "6_bulge.txt", np.column_stack([r.points, r.mask]), fmt="%.6f")
    return root


@pytest.mark.parametrize("name", DETECTORS.names())
def test_detect_fit_predict_eval_every_registered_2d_name(name, mvtec, tmp_path):
    model = tmp_path / "m.pt"
    r = runner.invoke(app, ["detect", "fit", str(mvtec), "--model", name, "--out", str(model), "--random-init",
                            "--image-size", "32x48"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["detect", "predict", str(model), str(mvtec / "test" / "blob"), "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert len(list(csv.DictReader(open(tmp_path / "p" / "scores.csv")))) == 3
    r = runner.invoke(app, ["detect", "eval", str(model), str(mvtec), "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "m.json").read_text())
    assert out["detector"] == name and out["n_images"] == 6


@pytest.mark.parametrize("name", DETECTORS3D.names())
def test_detect3d_fit_predict_eval_every_registered_3d_name(name, tree3d, tmp_path):
    if name not in FIT_OPTIONS_3D:
        pytest.fail(f"registered 3D detector {name!r} has no CLI settings in FIT_OPTIONS_3D: add them")
    model = tmp_path / "m.pt"
    r = runner.invoke(app, ["detect3d", "fit", str(tree3d), "--model", name, "--out", str(model),
                            *FIT_OPTIONS_3D[name]])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["detect3d", "predict", str(model), str(tree3d / "flange" / "test" / "6_bulge.pcd"),
                            "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p" / "6_bulge.ply").is_file()
    r = runner.invoke(app, ["detect3d", "eval", str(model), str(tree3d), "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "m.json").read_text())["objects"]) == 2


def test_a_model_file_of_another_family_is_one_line(mvtec, tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a model")
    for cmd in (["detect", "eval", str(bad), str(mvtec)], ["detect3d", "eval", str(bad), str(mvtec)]):
        r = runner.invoke(app, cmd)
        assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1, r.output
        assert str(bad) in r.output
    r = runner.invoke(app, ["detect", "fit", str(mvtec), "--model", "padim", "--out", str(tmp_path / "m.pt")])
    assert r.exit_code == 2 and "unknown detector 'padim'; available: " + ", ".join(DETECTORS.names()) in r.output


def test_the_root_group_is_the_one_error_boundary():
    import typer

    from defectforge.cli import _Group
    from defectforge.errors import InputError

    root = typer.Typer(cls=_Group)

    @root.command("bad")
    def bad() -> None:
        raise InputError("x.png", "broken")

    @root.command("stop")
    def stop() -> None:
        raise KeyboardInterrupt

    r = runner.invoke(root, ["bad"])
    assert r.exit_code == 2 and r.output == "error: x.png: broken\n"
    r = runner.invoke(root, ["stop"])
    assert r.exit_code == 130 and r.output == ("interrupted: outputs are written whole or not at all, nothing "
                                               "half-written was kept; run again to start over: defectforge stop\n")
