"""``defectforge parts`` and ``defectforge synth3d`` through typer's CliRunner."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from defectforge.cli import app
from defectforge.errors import ConfigError, InputError
from defectforge.synth3d.cloud_io import read_cloud

runner = CliRunner()


def test_parts_command(tmp_path):
    res = runner.invoke(app, ["parts", "--n", "3", "--out", str(tmp_path), "--points", "1500"])
    assert res.exit_code == 0, res.output
    files = sorted(tmp_path.glob("*.ply"))
    assert [f.name for f in files] == ["00000_flange.ply", "00001_bracket.ply", "00002_stepped_shaft.ply"]
    c = read_cloud(files[0])
    assert len(c) == 1500 and c.normals is not None


def test_synth3d_describe_writes_real3d_layout_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["synth3d", "part:plate_pockets", "--describe", "a scratch on the top and a dent", "--n", "3",
            "--seed", "4", "--out", str(out), "--points", "3000"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    txts = sorted(out.glob("*.txt"))
    assert len(txts) == 3 and len(sorted(out.glob("*.ply"))) == 3
    table = np.loadtxt(txts[0])
    assert table.shape == (3000, 4) and set(np.unique(table[:, 3])) == {0.0, 1.0}
    ply = read_cloud(out / (txts[0].stem + ".ply"))
    np.testing.assert_array_equal(ply.labels, table[:, 3].astype(int))
    with open(out / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and rows[0]["defects"] == "scratch+dent"
    assert int(rows[0]["n_defect_points"]) == int(table[:, 3].sum()) and rows[0]["seed"] == "4"
    # resume: delete one sample, rerun; the others are untouched and the deleted one comes back identical
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.txt")}
    victim = txts[1]
    content = victim.read_bytes()
    victim.unlink()
    (out / "meta" / (victim.stem + ".json")).unlink()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "1 generated, 2 already present" in res.output
    assert victim.read_bytes() == content
    assert all((out / n).stat().st_mtime_ns == t for n, t in before.items() if n != victim.name)
    # a different run into the same folder is refused
    res = runner.invoke(app, [*args[:6], "--seed", "5", *args[8:]])
    assert res.exit_code == 2 and "error:" in res.output and "different run" in res.output


def test_synth3d_from_instruction_file_and_cloud_file(tmp_path):
    from defectforge.synth3d.cloud_io import write_cloud
    from defectforge.synth3d.parts import make_part

    cloud_path = write_cloud(tmp_path / "part.pcd", make_part("hex_bolt", 3000, np.random.default_rng(0)))
    inst = tmp_path / "inst.yaml"
    inst.write_text("defects:\n  - type: bend\n    params: {angle: 10}\n  - type: crack\n")
    res = runner.invoke(app, ["synth3d", str(cloud_path), "-i", str(inst), "--n", "2", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    table = np.loadtxt(tmp_path / "o" / "00000_part.txt")
    assert len(table) < 3000 and table[:, 3].sum() > 0  # crack removed points


@pytest.mark.parametrize("args,exc,match", [
    (["part:teapot", "--describe", "a dent"], ConfigError, "unknown part 'teapot'"),
    (["part:flange"], ConfigError, "exactly one of"),
    (["missing.ply", "--describe", "a dent"], InputError, "input not found"),
    (["part:flange", "--describe", "a 900 mm dent"], ConfigError, "impossible size"),
])
def test_synth3d_bad_input(tmp_path, args, exc, match):
    res = runner.invoke(app, ["synth3d", *args, "--n", "1", "--out", str(tmp_path / "x"), "--points", "1000"])
    # the CLI turns the library's error (``exc``) into one line and exit code 2
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and match in lines[-1] and "Traceback" not in res.output
    assert not any((tmp_path / "x").glob("*.txt"))


def test_main_prints_one_line_error(tmp_path, capsys):
    from defectforge.cli import main

    bad = tmp_path / "nan.xyz"
    bad.write_text("1 2 nan\n" * 100)
    with pytest.raises(SystemExit) as ex:
        main(["synth3d", str(bad), "--describe", "a dent", "--n", "1", "--out", str(tmp_path / "y")])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "nan.xyz" in err and "NaN" in err


def test_partial_scan_noise_and_llm_fallback(tmp_path):
    out = tmp_path / "p"
    res = runner.invoke(app, ["synth3d", "part:flange", "--describe", "a large dent on the top", "--n", "1",
                              "--out", str(out), "--points", "3000", "--partial", "--scan-noise", "0.0005",
                              "--llm-url", "http://127.0.0.1:9/v1"])
    assert res.exit_code == 0, res.output
    assert "rule-based parser" in res.output
    table = np.loadtxt(out / "00000_flange.txt")
    assert 50 < len(table) < 3000 and table[:, 3].sum() > 0  # a partial view that still shows the dent


def test_folder_input_with_an_open_mesh(tmp_path):
    """A mesh that is not watertight is sampled and its normals re-estimated (documented)."""
    import trimesh

    src = tmp_path / "in"
    src.mkdir()
    mesh = trimesh.creation.cylinder(radius=10.0, height=30.0, sections=48)
    trimesh.Trimesh(mesh.vertices, mesh.faces[: len(mesh.faces) - 4], process=False).export(src / "cyl_open.obj")
    mesh.export(src / "cyl.stl")
    res = runner.invoke(app, ["synth3d", str(src), "--describe", "a bump on the side", "--n", "2",
                              "--out", str(tmp_path / "o"), "--points", "4000"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o").glob("*.txt")) == ["00000_cyl.txt", "00001_cyl_open.txt"]


def test_absolute_sizes_refer_to_each_samples_part(tmp_path):
    import json

    out = tmp_path / "mm"
    res = runner.invoke(app, ["synth3d", "part:all", "--describe", "a 8 mm groove", "--n", "2", "--out", str(out),
                              "--points", "3000"])
    assert res.exit_code == 0, res.output
    diags = []
    for name in ("00000_flange", "00001_bracket"):
        pts = np.loadtxt(out / f"{name}.txt")[:, :3]
        rec = json.loads((out / "meta" / f"{name}.json").read_text())["records"][0]
        diag = float(np.linalg.norm(pts.max(0) - pts.min(0)))
        assert rec["params"]["length"] * diag == pytest.approx(8.0, rel=0.02)
        diags.append(diag)
    assert abs(diags[0] - diags[1]) > 5  # really two different part sizes


@pytest.fixture()
def metre_box(tmp_path):
    import trimesh

    path = tmp_path / "box_m.stl"
    trimesh.creation.box(extents=(0.10, 0.06, 0.03)).export(path)  # a part given in metres
    return path


def test_units_are_guessed_with_a_warning_and_can_be_set(tmp_path, metre_box):
    import json

    diag_m = float(np.linalg.norm([0.10, 0.06, 0.03]))
    out = tmp_path / "guess"
    res = runner.invoke(app, ["synth3d", str(metre_box), "--describe", "a 20 mm groove", "--n", "1", "--out", str(out),
                              "--points", "6000"])
    assert res.exit_code == 0, res.output
    assert "warning" in res.output and "taken as m" in res.output and "--units" in res.output
    rec = json.loads((out / "meta" / "00000_box_m.json").read_text())
    assert rec["records"][0]["params"]["length"] * diag_m * 1000 == pytest.approx(20.0, rel=0.05)
    assert "taken as m" in rec["instruction"]  # the unit assumption is recorded
    # told the wrong units, the error names the size, the units and both fixes
    res = runner.invoke(app, ["synth3d", str(metre_box), "--describe", "a 20 mm groove", "--n", "1",
                              "--out", str(tmp_path / "mm"), "--points", "6000", "--units", "mm"])
    assert res.exit_code == 2
    assert "impossible size length=" in res.output and "(x diag)" in res.output
    assert "in mm (--units)" in res.output and "--part-diag" in res.output
    assert not (tmp_path / "mm").exists() or not any((tmp_path / "mm").glob("*.txt"))
    # --part-diag (mm) overrides everything, without a warning
    res = runner.invoke(app, ["synth3d", str(metre_box), "--describe", "a 20 mm groove", "--n", "1",
                              "--out", str(tmp_path / "pd"), "--points", "6000", "--part-diag", "200"])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output
    rec = json.loads((tmp_path / "pd" / "meta" / "00000_box_m.json").read_text())
    assert rec["records"][0]["params"]["length"] == pytest.approx(0.1)


def test_mesh_is_sampled_per_item_and_per_seed(tmp_path, metre_box):
    def clouds(seed, out):
        res = runner.invoke(app, ["synth3d", str(metre_box), "--describe", "a dent", "--n", "2", "--seed", str(seed),
                                  "--out", str(out), "--points", "3000", "--scan-noise", "0.0005"])
        assert res.exit_code == 0, res.output
        return [np.loadtxt(p)[:, :3] for p in sorted(out.glob("*.txt"))]

    a0, a1 = clouds(0, tmp_path / "s0")
    (b0, _), (c0, _) = clouds(1, tmp_path / "s1"), clouds(0, tmp_path / "s0b")
    common = lambda p, q: len(set(map(tuple, np.round(p, 4))) & set(map(tuple, np.round(q, 4))))  # noqa: E731
    assert common(a0, a1) < 30 and common(a0, b0) < 30  # other items / seeds: other point sets
    np.testing.assert_array_equal(a0, c0)  # same seed and item: the same file


def test_outputs_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        res = runner.invoke(app, ["synth3d", "part:flange", "--describe", "a dent", "--n", "1",
                                  "--out", str(tmp_path / "o"), "--points", "2000"])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    files = [p for p in (tmp_path / "o").rglob("*") if p.is_file()]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o644}


def test_describe_reads_the_input_once_and_reports_progress_in_logs(tmp_path, monkeypatch):
    from defectforge.synth3d import cloud_io, pipeline
    from defectforge.synth3d.parts import make_part

    src = tmp_path / "part.ply"
    cloud_io.write_cloud(src, make_part("flange", 3000, np.random.default_rng(0)))
    calls = []
    real = pipeline.read_cloud
    monkeypatch.setattr(pipeline, "read_cloud", lambda *a, **k: calls.append(a) or real(*a, **k))
    res = runner.invoke(app, ["synth3d", str(src), "--describe", "a 10 mm dent", "--n", "3", "--out",
                              str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1
    assert "synth3d: 0/3" in res.output and "synth3d: 3/3" in res.output  # plain lines, not an empty bar


def test_unit_sources_in_order():
    from pathlib import Path

    from defectforge.synth3d.cli import part_size_mm

    assert part_size_mm(None, 250.0, 0.3, False)[0] is None  # --part-diag wins
    assert part_size_mm("cm", None, 0.3, False)[:2] == (10.0, "cm")
    assert part_size_mm(None, None, 0.3, True)[:2] == (1.0, "mm")  # parametric parts
    assert part_size_mm(None, None, 0.3, False, Path("a.glb"))[:2] == (1000.0, "m")  # glTF: metres by spec
    scale, used, note = part_size_mm(None, None, 0.3, False, Path("a.stl"))
    assert (scale, used) == (1000.0, "m") and "guess" not in note and "taken as m" in note and "--units" in note
    assert part_size_mm(None, None, 120.0, False, Path("a.stl"))[:2] == (1.0, "mm")
    with pytest.raises(ConfigError, match="--units must be one of"):
        part_size_mm("furlong", None, 1.0, False)
