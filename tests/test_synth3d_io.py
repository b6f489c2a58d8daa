"""Point-cloud I/O round trips, bad input, normals, voxel/scan helpers, parametric parts."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.errors import InputError
from defectforge.synth3d.cloud import PointCloud, check_cloud
from defectforge.synth3d.cloud_io import read_cloud, sample_mesh, write_cloud, write_ply, write_xyz_label
from defectforge.synth3d.geometry import estimate_normals, partial_view, scan_noise, voxel_downsample
from defectforge.synth3d.parts import PART_NAMES, make_part


@pytest.fixture(scope="module")
def cloud() -> PointCloud:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(300, 3)) * [3.0, 2.0, 1.0] + 100.0
    nrm = rng.normal(size=(300, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    return PointCloud(pts, nrm, rng.integers(0, 2, 300))


@pytest.mark.parametrize("suffix,binary", [(".ply", True), (".ply", False), (".pcd", True), (".pcd", False), (".npy", True)])
def test_round_trip_with_normals_and_labels(tmp_path, cloud, suffix, binary):
    path = write_cloud(tmp_path / f"c{suffix}", cloud, binary=binary)
    back = read_cloud(path)
    np.testing.assert_allclose(back.points, cloud.points, rtol=1e-6, atol=1e-4)  # float32 storage
    np.testing.assert_allclose(back.normals, cloud.normals, atol=1e-6)
    np.testing.assert_array_equal(back.labels, cloud.labels)


def test_ply_double_precision_is_exact(tmp_path, cloud):
    back = read_cloud(write_ply(tmp_path / "d.ply", cloud, double=True))
    np.testing.assert_array_equal(back.points, cloud.points)


def test_real3d_txt_and_comma_separated_labels(tmp_path, cloud):
    back = read_cloud(write_xyz_label(tmp_path / "gt.txt", cloud.points, cloud.labels))
    np.testing.assert_allclose(back.points, cloud.points, atol=1e-6)
    np.testing.assert_array_equal(back.labels, cloud.labels)
    lines = (tmp_path / "gt.txt").read_text().splitlines()
    assert len(lines) == len(cloud) and len(lines[0].split()) == 4 and len(lines[0].split()[0].split(".")[1]) == 6
    csv = tmp_path / "shapenet.txt"
    csv.write_text("\n".join(",".join(f"{v}" for v in row) for row in np.column_stack([cloud.points, cloud.labels])))
    back2 = read_cloud(csv)
    np.testing.assert_array_equal(back2.labels, cloud.labels)


def test_mesh_sampling_closed_and_open(tmp_path):
    import trimesh

    box = trimesh.creation.box(extents=(2.0, 3.0, 4.0))
    box.export(tmp_path / "box.stl")
    c = read_cloud(tmp_path / "box.stl", mesh_points=2000)
    assert len(c) == 2000 and c.meta["watertight"]
    # sampled points lie on the box surface and face normals point outward
    assert np.all(np.isclose(np.abs(c.points), [1.0, 1.5, 2.0]).any(axis=1))
    assert np.all(np.einsum("ij,ij->i", c.normals, c.points) > 0)
    # an open mesh (one face removed) is still sampled; the flag says so
    open_mesh = trimesh.Trimesh(box.vertices, box.faces[:-2], process=False)
    open_mesh.export(tmp_path / "open.obj")
    o = read_cloud(tmp_path / "open.obj", mesh_points=500)
    assert len(o) == 500 and o.meta["watertight"] is False
    with pytest.raises(InputError, match="zero surface area"):
        sample_mesh(trimesh.Trimesh(np.zeros((3, 3)), [[0, 1, 2]], process=False), 10)


@pytest.mark.parametrize("content,problem", [
    ("", "empty"),
    ("1 2 3\n4 5 nan\n" * 40, "NaN"),
    ("\n".join(f"{i} {2 * i} {3 * i}" for i in range(100)), "line"),
    ("1 2 3\n" * 100, "degenerate"),
    ("1 2 3\n4 5 6\n", "only 2 points"),
    ("a b c\n", "not a table"),
])
def test_bad_text_clouds(tmp_path, content, problem):
    path = tmp_path / "bad.xyz"
    path.write_text(content)
    with pytest.raises(InputError, match=problem) as exc:
        check_cloud(read_cloud(path).points, path)
    assert "bad.xyz" in str(exc.value)


def test_truncated_binary_ply_and_unknown_format(tmp_path, cloud):
    path = write_ply(tmp_path / "t.ply", cloud)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InputError, match="truncated"):
        read_cloud(path)
    (tmp_path / "x.abc").write_text("1 2 3")
    with pytest.raises(InputError, match="unsupported"):
        read_cloud(tmp_path / "x.abc")
    with pytest.raises(InputError, match="not found"):
        read_cloud(tmp_path / "missing.ply")


def test_flat_sheet_is_allowed_but_tiny_is_not():
    rng = np.random.default_rng(1)
    sheet = np.column_stack([rng.random((200, 2)), np.zeros(200)])
    assert check_cloud(sheet).shape == (200, 3)
    with pytest.raises(InputError, match="degenerate"):
        check_cloud(sheet * 1e-12)


@pytest.mark.parametrize("name", ["hex_bolt", "flange", "plate_pockets"])
def test_estimated_normals_point_outward(name):
    part = make_part(name, 6000, np.random.default_rng(3))
    est = estimate_normals(part.points)
    dots = np.einsum("ij,ij->i", est, part.normals)
    clear = np.abs(dots) > 0.9  # away from sharp edges, where PCA normals are blends
    assert clear.mean() > 0.75
    assert (dots[clear] > 0).mean() > 0.98  # includes bores: outward means out of the material


def test_parts_are_seeded_and_have_outward_normals():
    for name in PART_NAMES:
        a = make_part(name, 3000, np.random.default_rng(5))
        b = make_part(name, 3000, np.random.default_rng(5))
        c = make_part(name, 3000, np.random.default_rng(6))
        np.testing.assert_array_equal(a.points, b.points)
        assert a.diag != c.diag
        np.testing.assert_allclose(np.linalg.norm(a.normals, axis=1), 1.0, atol=1e-9)
        assert len(a) == 3000 and set(np.unique(a.meta["tags"])) <= {0, 1, 2, 3}
        # outward: a small step along the normal moves away from the nearest other points' plane,
        # checked globally for convex-hull points (which must face away from the centroid)
        from scipy.spatial import ConvexHull

        hull = ConvexHull(a.points).vertices
        out = np.einsum("ij,ij->i", a.normals[hull], a.points[hull] - a.points.mean(axis=0))
        assert (out > 0).mean() > 0.95, name


def test_voxel_downsample_partial_view_and_noise():
    part = make_part("plate_pockets", 5000, np.random.default_rng(0))
    labels = np.arange(len(part))
    pts, index, lab = voxel_downsample(part.points, 5.0, labels)
    assert len(pts) < len(part) and np.array_equal(lab, labels[index]) and np.array_equal(pts, part.points[index])
    keys = np.floor((pts - part.points.min(axis=0)) / 5.0).astype(int)
    assert len(np.unique(keys, axis=0)) == len(pts)  # one point per voxel
    seen = partial_view(part.points, part.normals, np.array([0, 0, 1.0]))
    assert 0 < len(seen) < len(part) and np.all(part.normals[seen, 2] > 0.05)
    noisy = scan_noise(part.points, np.random.default_rng(0), 0.001)
    assert 0 < np.abs(noisy - part.points).max() < 0.01 * part.diag


def test_ply_with_faces_is_sampled_as_a_mesh(tmp_path):
    import trimesh

    trimesh.creation.icosphere(subdivisions=2, radius=5.0).export(tmp_path / "sphere.ply")
    c = read_cloud(tmp_path / "sphere.ply", mesh_points=1200)
    assert len(c) == 1200 and c.meta["watertight"]
    r = np.linalg.norm(c.points, axis=1)
    assert r.max() <= 5.0 + 1e-6 and r.min() > 4.5
    assert np.all(np.einsum("ij,ij->i", c.normals, c.points) > 0)
