"""The demo end to end (quick mode) and the CLI's command table and error handling."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from defectforge.cli import app

runner = CliRunner()


def test_help_lists_every_area():
    res = runner.invoke(app, ["--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for cmd in ("data", "synth", "synth3d", "parts", "detect", "detect3d", "filter", "train-detector", "experiment",
                "demo", "lora", "diffusion"):
        assert re.search(rf"^\W*{re.escape(cmd)}\s", res.output, re.M), f"command {cmd!r} missing from --help"


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("defectforge ")


def test_user_error_is_one_line_exit_2(tmp_path):
    res = runner.invoke(app, ["synth", str(tmp_path / "missing"), "--n", "2", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing" in lines[0]
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_demo_quick_writes_report_and_summary(tmp_path):
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert list(stages) == ["data", "synth", "detect", "3d"]
    assert stages["data"]["problems"] == 0
    assert stages["data"]["counts"] == {"train/good": 16, "train/pitting": 5, "test/good": 8, "test/pitting": 8}
    assert stages["synth"]["n_synthetic"] > 0
    models = stages["detect"]["models"]
    assert set(models) == {"patchcore", "exdd_real", "exdd_synthetic", "exdd_both"}
    for m in models.values():
        for k in ("image_auroc", "pixel_auroc", "aupro"):
            assert 0.0 <= m[k] <= 1.0
        assert m["n_images"] == 16
        # a real detector on real pits localises far better than chance
        assert m["pixel_auroc"] > 0.8
    html = (out / "report.html").read_text()
    for title in ("Dataset", "Synthetic pitting", "Detection", "3D synthesis"):
        assert title in html
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert len(imgs) >= 10 and all((out / p).is_file() for p in imgs)
