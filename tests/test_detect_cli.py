"""``defectforge detect fit / predict / eval`` on a tiny MVTec-style folder."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from defectforge.data.image_io import write_image, write_mask
from defectforge.detect.cli import register
from defectforge.cli import area_app  # wired as the console script: error boundary, --config, --device

from test_detect_model import blob, texture

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")

# Only the detect commands (the full app also loads areas that are built elsewhere).
app = area_app(register)


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_mvtec")
    rng = np.random.default_rng(11)
    for i in range(10):
        write_image(root / "train" / "good" / f"g{i:02d}.png", texture(rng))
    for i in range(3):
        img, m = blob(rng)
        write_image(root / "train" / "blob" / f"tb{i:02d}.png", img)
        write_mask(root / "ground_truth" / "blob" / f"tb{i:02d}_mask.png", m)
    for i in range(4):
        write_image(root / "test" / "good" / f"t{i:02d}.png", texture(rng))
    for i in range(4):
        img, m = blob(rng)
        write_image(root / "test" / "blob" / f"b{i:02d}.png", img)
        write_mask(root / "ground_truth" / "blob" / f"b{i:02d}_mask.png", m)
    return root


def test_cli_fit_predict_eval(tmp_path, mvtec):
    runner = CliRunner()
    model = tmp_path / "m.dfm"
    common = ["--random-init", "--image-size", "64x96"]
    r = runner.invoke(app, ["detect", "fit", str(mvtec), "--model", "exdd", "--out", str(model), *common])
    assert r.exit_code == 0, r.output
    assert model.is_file()
    assert "image score: weighted" in r.output  # auto: 3 real defects are too few to hold any out
    out = tmp_path / "pred"
    r = runner.invoke(app, ["detect", "predict", str(model), str(mvtec / "test" / "blob"),
                            str(mvtec / "test" / "good" / "t00.png"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 5
    assert all((out / row["heatmap"]).is_file() and (out / row["mask"]).is_file() for row in rows)
    assert all(float(row["score"]) > 0 for row in rows)
    js = tmp_path / "metrics.json"
    rep = tmp_path / "report"
    r = runner.invoke(app, ["detect", "eval", str(model), str(mvtec), "--json", str(js), "--report", str(rep)])
    assert r.exit_code == 0, r.output
    metrics = json.loads(js.read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max", "n_images"):
        assert key in metrics
    assert metrics["n_images"] == 8
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and metrics["pixel_auroc"] > 0.6
    html = (rep / "report.html").read_text()
    assert "PRO curve" in html and "image ROC" in html and "score histogram" in html


def test_cli_errors_are_one_line(tmp_path, mvtec):
    runner = CliRunner()
    r = runner.invoke(app, ["detect", "fit", str(mvtec), "--model", "padim", "--out", str(tmp_path / "x.dfm")])
    assert r.exit_code == 2 and "unknown detector 'padim'; available: exdd, patchcore" in r.output
    (tmp_path / "bad.dfm").write_bytes(b"\x80\x02garbage")
    r = runner.invoke(app, ["detect", "predict", str(tmp_path / "bad.dfm"), str(mvtec / "test" / "good"),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "bad.dfm" in r.output and "not a readable defectforge model file" in r.output
    assert not (tmp_path / "o").exists()
    r = runner.invoke(app, ["detect", "fit", str(mvtec), "--backbone", "resnet18", "--out", str(tmp_path / "y.dfm")])
    assert r.exit_code == 2 and "--weights" in r.output
