"""Issue 18 items 8, 9 and 10 for 3D: PLY/PCD/NPY headers that declare more points than the file
holds are refused before anything is allocated; coordinates near 1e9 or at 1e-6 scale keep their
precision in PLY, PCD and TXT output; a non-UTF-8 instruction file is one line."""

from __future__ import annotations

import numpy as np
import pytest
from badinput_kit import invoke, one_line_error

from defectforge.errors import InputError
from defectforge.synth3d.cloud import PointCloud
from defectforge.synth3d.cloud_io import read_cloud, write_cloud, write_ply, write_xyz_label


def _ply_claiming(path, n):
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex " + str(n).encode()
                     + b"\nproperty float x\nproperty float y\nproperty float z\nend_header\n" + b"\0" * 24)
    return path


@pytest.mark.parametrize("n", [4_000_000_000, 10**15])
def test_ply_header_claiming_billions_of_vertices(tmp_path, n):
    p = _ply_claiming(tmp_path / "a.ply", n)
    assert p.stat().st_size < 300
    with pytest.raises(InputError, match=r"a.ply: .*header declares .* vertices .* only 24 bytes follow"):
        read_cloud(p)


def test_ascii_ply_and_pcd_claiming_too_many(tmp_path):
    p = tmp_path / "b.ply"
    p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 4000000000\nproperty float x\nproperty float y\n"
                  b"property float z\nend_header\n0 0 0\n")
    with pytest.raises(InputError, match="header declares 4,000,000,000 vertices"):
        read_cloud(p)
    q = tmp_path / "c.pcd"
    q.write_bytes(b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 4000000000\nHEIGHT 1\n"
                  b"POINTS 4000000000\nDATA binary\n" + b"\0" * 12)
    with pytest.raises(InputError, match="header declares 4,000,000,000 points"):
        read_cloud(q)


def test_npy_header_claiming_too_many_rows(tmp_path):
    p = tmp_path / "d.npy"
    np.save(p, np.zeros((4, 3)))
    raw = p.read_bytes().replace(b"(4, 3)", b"(4000000000, 3)")
    p.write_bytes(raw)
    with pytest.raises(InputError, match="d.npy"):
        read_cloud(p)


def test_synth3d_refuses_bomb_ply_in_one_line(tmp_path):
    p = _ply_claiming(tmp_path / "a.ply", 4_000_000_000)
    res = invoke("synth3d", p, "--describe", "a dent", "--n", "1", "--out", tmp_path / "o")
    one_line_error(res, "a.ply", "header declares")


def _far(n=3000):
    rng = np.random.default_rng(0)
    return 1e9 + np.round(rng.random((n, 3)) * 3000, 3)


def _tiny(n=3000):
    return np.random.default_rng(1).random((n, 3)) * 1e-6


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_far_from_origin_keeps_every_point(tmp_path, suffix):
    pts = _far()
    for binary in (True, False):
        p = tmp_path / f"far{int(binary)}{suffix}"
        write_cloud(p, PointCloud(pts, None, np.zeros(len(pts), np.int64)), binary=binary)
        back = read_cloud(p).points
        assert len(np.unique(back, axis=0)) == len(np.unique(pts, axis=0))
        assert np.abs(back - pts).max() < 1e-6 * 3000


def test_tiny_scale_keeps_shape_in_text_and_ply(tmp_path):
    pts = _tiny()
    write_xyz_label(tmp_path / "t.txt", pts, np.zeros(len(pts), np.int64))
    back = read_cloud(tmp_path / "t.txt").points
    ext = np.linalg.norm(pts.max(0) - pts.min(0))
    assert np.abs(back - pts).max() < 1e-6 * ext
    write_ply(tmp_path / "t.ply", PointCloud(pts))
    assert np.abs(read_cloud(tmp_path / "t.ply").points - pts).max() < 1e-6 * ext


def test_ordinary_parts_keep_the_real3d_layout(tmp_path):
    """Parts of ordinary size still get float32 PLY and 6-decimal TXT (unchanged output)."""
    pts = np.random.default_rng(2).random((50, 3)) * 100
    write_xyz_label(tmp_path / "o.txt", pts)
    assert all(len(v.split(".")[1]) == 6 for v in (tmp_path / "o.txt").read_text().split()[:3])
    write_ply(tmp_path / "o.ply", PointCloud(pts))
    assert b"property float x" in (tmp_path / "o.ply").read_bytes()[:200]


def test_synth3d_far_from_origin_input_keeps_precision(tmp_path):
    from defectforge.synth3d.parts import make_part

    part = make_part("flange", 3000, np.random.default_rng(0))
    far = PointCloud(part.points + 1e9, part.normals, None)
    write_ply(tmp_path / "in.ply", far)
    res = invoke("synth3d", tmp_path / "in.ply", "--describe", "a dent on the top face", "--n", "1",
                 "--out", tmp_path / "o")
    if res.exit_code == 2:  # a clear refusal is an accepted outcome
        one_line_error(res)
        return
    assert res.exit_code == 0, res.output
    outs = sorted((tmp_path / "o").rglob("*.ply"))
    assert outs
    back = read_cloud(outs[0]).points
    assert len(np.unique(back, axis=0)) > 0.9 * len(back)
    assert np.ptp(back[:, 0]) > 0.5 * np.ptp(part.points[:, 0])


def test_non_utf8_instruction_file_one_line(tmp_path):
    p = tmp_path / "inst.yaml"
    p.write_bytes(b"defects:\n  - type: dent\n    note: \xff\xfe caf\xe9\n")
    res = invoke("synth3d", "part:flange", "--instructions", p, "--n", "1", "--points", "2000", "--out", tmp_path / "o")
    one_line_error(res, "inst.yaml", "not a UTF-8 text file")


def test_deeply_nested_instruction_file_one_line(tmp_path):
    p = tmp_path / "inst.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    res = invoke("synth3d", "part:flange", "--instructions", p, "--n", "1", "--points", "2000", "--out", tmp_path / "o")
    one_line_error(res, "inst.json")


def _synth3d_folder(root, rows):
    """A tiny synth3d output folder: ``manifest.csv`` with ``rows`` (file, n_defect_points), clouds
    ``00000.txt``... beside it and one good training cloud."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    pts = rng.random((200, 3))
    np.savetxt(root / "train" / "t.txt", pts)
    lines = ["file,part,defects,instruction,seed,n_points,n_defect_points"]
    for name, ndef in rows:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(target, np.c_[pts, np.zeros(len(pts))])
        lines.append(f"{name},flange,dent,a dent,0,200,{ndef}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("escape", ["../outside/lab.txt", "ABS"])
def test_synth3d_manifest_path_leaving_the_folder_is_refused(tmp_path, escape):
    from defectforge.detect3d.data import load_dataset3d

    outside = tmp_path / "outside" / "lab.txt"
    root = _synth3d_folder(tmp_path / "s3", [("00000.txt", 5)])
    _synth3d_folder(tmp_path / "other", [("../outside/lab.txt", 5)])  # writes the outside cloud
    assert outside.is_file()
    name = str(outside) if escape == "ABS" else escape
    with open(root / "manifest.csv", "a") as fh:
        fh.write(f"{name},flange,dent,a dent,0,200,5\n")
    with pytest.raises(InputError, match=r"manifest.csv: line 3: file .*lab.txt is outside the dataset folder"):
        load_dataset3d(root)
    res = invoke("detect3d", "fit", root, "-o", tmp_path / "m.pt")
    one_line_error(res, "manifest.csv", "lab.txt", "outside the dataset folder")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("value", ["abc", "nan", "-3", "1.5", "inf"])
def test_synth3d_manifest_bad_defect_count_one_line(tmp_path, value):
    root = _synth3d_folder(tmp_path / "s3", [("00000.txt", value)])
    res = invoke("detect3d", "fit", root, "-o", tmp_path / "m.pt")
    one_line_error(res, "manifest.csv", "line 2", "n_defect_points", repr(value))


def test_synth3d_manifest_good_rows_still_load(tmp_path):
    from defectforge.detect3d.data import load_dataset3d

    root = _synth3d_folder(tmp_path / "s3", [("00000.txt", 5), ("sub/00001.txt", "0"), ("00002.txt", "")])
    ds = load_dataset3d(root)
    assert sorted(s.label for s in ds.samples if s.split == "test") == ["dent", "good", "good"]


def test_cloud_with_absurd_coordinates_is_one_line(tmp_path):
    p = tmp_path / "huge.npy"
    rng = np.random.default_rng(0)
    np.save(p, rng.random((3000, 3)) * 1e302)
    from defectforge.synth3d.cloud import check_cloud

    with pytest.raises(InputError, match=r"huge.npy: coordinates up to .* are beyond 1e\+15"):
        check_cloud(np.load(p), p)
    check_cloud(1e9 + np.random.default_rng(1).random((100, 3)) * 3000, p)  # far from the origin: fine
    res = invoke("synth3d", p, "-o", tmp_path / "o", "--n", "1", "--points", "2000", "-d", "one scratch")
    one_line_error(res, "huge.npy", "coordinates up to")


def test_synth3d_manifest_not_utf8_names_the_file(tmp_path):
    root = _synth3d_folder(tmp_path / "s3", [("00000.txt", 5)])
    (root / "manifest.csv").write_bytes(b"\xff\xfe" + (root / "manifest.csv").read_bytes())
    one_line_error(invoke("detect3d", "fit", root, "-o", tmp_path / "m.pt"), "manifest.csv", "not a UTF-8 text file")
