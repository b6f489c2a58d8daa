"""Local CLI consistency: ``--json -`` writes to stdout, compact size summaries, format
detection that prefers the layout whose files exist (and says so)."""

from __future__ import annotations

import json

import numpy as np
import typer
from typer.testing import CliRunner

from defectforge.data import write_image, write_mask
from defectforge.data.cli import register, size_summary
from defectforge.data.formats import detect_format, format_choice, load_dataset

app = typer.Typer()
register(app)
app.command("noop")(lambda: None)


def _mvtec_with_bare_manifest(root):
    rng = np.random.default_rng(0)
    m = np.zeros((8, 10), bool)
    m[2:4, 3:6] = True
    for name in ("train/good/000.png", "test/good/001.png", "test/crack/002.png"):
        write_image(root / name, rng.integers(0, 255, (8, 10, 3), dtype=np.uint8))
    write_mask(root / "ground_truth" / "crack" / "002_mask.png", m)
    (root / "manifest.csv").write_text("file,split,label\n000.png,train,good\n001.png,test,good\n002.png,test,crack\n")
    return root


def test_mvtec_folder_with_bare_name_manifest_reads_as_mvtec(tmp_path):
    root = _mvtec_with_bare_manifest(tmp_path / "mv")
    fmt, note = format_choice(root)
    assert fmt == "mvtec" and "manifest.csv" in note and "--format manifest" in note
    ds = load_dataset(root)
    assert ds.format == "mvtec" and ds.counts() == {"train/good": 1, "test/good": 1, "test/crack": 1}
    r = CliRunner().invoke(app, ["data", "check", str(root)])
    assert r.exit_code == 0, r.output
    assert "format mvtec" in r.output and "note:" in r.output
    # a manifest whose files exist still wins, with a note naming the other layout
    (root / "manifest.csv").write_text("file,split,label\ntrain/good/000.png,train,good\n")
    fmt, note = format_choice(root)
    assert fmt == "manifest" and "--format mvtec" in note
    assert detect_format(root) == "manifest"


def test_json_dash_writes_the_report_to_stdout_only(tmp_path):
    root = _mvtec_with_bare_manifest(tmp_path / "mv")
    (root / "manifest.csv").unlink()
    r = CliRunner().invoke(app, ["data", "check", str(root), "--json", "-"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout holds the JSON document and nothing else
    assert sum(doc["counts"].values()) == 3 and doc["format"] == "mvtec"
    assert "images per split" in r.stderr
    assert not (tmp_path / "-").exists() and not (root.parent / "-").exists()


def test_size_summary_is_bounded():
    sizes = {f"{100 + i}x{50 + i}": (300 - i) for i in range(250)}
    line = size_summary(sizes, top=3)
    assert line.count(" x") == 3 and "250 different" in line and "247 other sizes" in line
    assert "width 100-349, height 50-299" in line and len(line) < 250
    assert size_summary({"10x20": 4}) == "image sizes (WxH): 10x20 x4"


def test_quiet_prints_only_errors_and_requested_output(tmp_path):
    from defectforge import _verbosity
    from defectforge.cli import app as root

    root_dir = _mvtec_with_bare_manifest(tmp_path / "mv")
    (root_dir / "manifest.csv").unlink()
    try:
        r = CliRunner().invoke(root, ["-q", "data", "check", str(root_dir)])
        assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
        r = CliRunner().invoke(root, ["-q", "data", "check", str(root_dir), "--json", "-"])
        assert r.exit_code == 0 and json.loads(r.stdout)["format"] == "mvtec" and r.stderr == ""
        r = CliRunner().invoke(root, ["-q", "data", "check", str(tmp_path / "nope")])
        assert r.exit_code == 2 and r.stderr.startswith("error:")
        r = CliRunner().invoke(root, ["data", "check", str(root_dir)])
        assert "images per split" in r.stdout  # back to normal without -q
    finally:
        _verbosity.set_level(_verbosity.NORMAL)
