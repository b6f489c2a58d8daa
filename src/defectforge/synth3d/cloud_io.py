"""Reading and writing point clouds: PLY, PCD, XYZ/TXT (with a label column), NPY, meshes.

Our own small readers/writers (no open3d): PLY ascii and binary little/big endian with
any float/int vertex properties (``x y z``, optional ``nx ny nz`` and ``label``), PCD
ascii and binary (``binary_compressed`` is refused with a clear message), whitespace or
comma separated text in the Real3D-AD (``x y z label``) and Anomaly-ShapeNet
(``x,y,z,label``) layouts, ``.npy`` arrays of 3, 4, 6 or 7 columns, and meshes
(OBJ/STL/OFF/GLB, or a PLY with faces when ``sample_mesh=True``) sampled uniformly by
area through trimesh. Every writer is atomic.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from defectforge._atomic import atomic_write_bytes, atomic_write_text
from defectforge.errors import InputError
from defectforge.synth3d.cloud import PointCloud
from defectforge.synth3d.cloud_precision import needs_double, text_decimals

CLOUD_SUFFIXES = (".ply", ".pcd", ".xyz", ".txt", ".asc", ".pts", ".npy")
MESH_SUFFIXES = (".obj", ".stl", ".off", ".glb", ".gltf")

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


# --------------------------------------------------------------------------- reading


def read_cloud(path: str | Path, *, mesh_points: int = 20000, seed: int = 0) -> PointCloud:
    """Read a point cloud (or sample a mesh to ``mesh_points`` points) from ``path``.

    Labels come from a ``label`` property (PLY/PCD), the 4th (or 7th) text/NPY column.
    Raises :class:`InputError` naming the file for anything unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".ply":
            cloud = _read_ply(path, mesh_points=mesh_points, seed=seed)
        elif suffix == ".pcd":
            cloud = _read_pcd(path)
        elif suffix in (".xyz", ".txt", ".asc", ".pts"):
            cloud = _read_text(path)
        elif suffix == ".npy":
            cloud = _from_columns(_load_npy(path), path)
        elif suffix in MESH_SUFFIXES:
            cloud = sample_mesh_file(path, mesh_points, seed=seed)
        else:
            raise InputError(path, f"unsupported point-cloud format {suffix!r} (use one of {CLOUD_SUFFIXES + MESH_SUFFIXES})")
    except InputError:
        raise
    except (ValueError, OSError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read point cloud: {exc}") from exc
    cloud.meta.setdefault("source", str(path))
    return cloud


def _load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, its declared shape checked against the file size before any copy
    (memory-mapped first: a header claiming billions of rows is an error, not a MemoryError)."""
    arr = np.load(path, allow_pickle=False, mmap_mode="r")
    return np.array(arr)


def _check_declared(count: int, row_bytes: int, remaining: int, what: str) -> None:
    """Refuse a header whose declared ``count`` rows cannot fit in the ``remaining`` bytes of
    the file, before allocating anything for them."""
    if count < 0:
        raise ValueError(f"header declares a negative number of {what} ({count})")
    need = count * row_bytes
    if need > remaining:
        raise ValueError(f"header declares {count:,} {what} (at least {need:,} bytes) but only {remaining:,} bytes "
                         "follow the header; the file is truncated or its header is wrong")


def _remaining(fh) -> int:
    import os

    pos = fh.tell()
    return os.fstat(fh.fileno()).st_size - pos


def _from_columns(arr: np.ndarray, path: Path) -> PointCloud:
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[1] not in (3, 4, 6, 7):
        raise InputError(path, f"expected 3 (xyz), 4 (xyz label), 6 (xyz normals) or 7 columns, got shape {arr.shape}")
    pts = arr[:, :3].astype(np.float64)
    normals = arr[:, 3:6].astype(np.float64) if arr.shape[1] >= 6 else None
    labels = None
    if arr.shape[1] in (4, 7):
        lab = arr[:, -1]
        if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
            raise InputError(path, "label column must hold integers (0 good, 1 defect)")
        labels = lab.astype(np.int64)
    return PointCloud(pts, normals, labels)


def _read_text(path: Path) -> PointCloud:
    text = path.read_text(encoding="utf-8", errors="strict")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "//"))]
    if not lines:
        raise InputError(path, "point cloud is empty")
    sep = "," if "," in lines[0] else None
    try:
        arr = np.loadtxt(io.StringIO("\n".join(lines)), delimiter=sep, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise InputError(path, f"not a table of numbers: {exc}") from exc
    return _from_columns(arr, path)


def _parse_ply_header(fh) -> tuple[str, list[tuple[str, int, list[tuple[str, str, str | None]]]], int]:
    if fh.readline().strip() != b"ply":
        raise ValueError("missing 'ply' magic line")
    fmt = None
    elements: list[tuple[str, int, list]] = []
    while True:
        line = fh.readline()
        if not line:
            raise ValueError("header has no 'end_header'")
        parts = line.decode("ascii", errors="replace").split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements:
                raise ValueError("property before any element")
            if parts[1] == "list":
                elements[-1][2].append((parts[4], _PLY_TYPES[parts[3]], _PLY_TYPES[parts[2]]))
            else:
                elements[-1][2].append((parts[2], _PLY_TYPES[parts[1]], None))
        elif parts[0] == "end_header":
            break
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"unknown PLY format {fmt!r}")
    return fmt, elements, fh.tell()


def _read_ply(path: Path, *, mesh_points: int, seed: int) -> PointCloud:
    with open(path, "rb") as fh:
        fmt, elements, _ = _parse_ply_header(fh)
        if not elements or elements[0][0] != "vertex":
            raise ValueError("first PLY element must be 'vertex'")
        name, count, props = elements[0]
        if any(p[2] is not None for p in props):
            raise ValueError("list properties on vertices are not supported")
        has_faces = any(e[0] == "face" and e[1] > 0 for e in elements[1:])
        row_bytes = 2 * len(props) if fmt == "ascii" else int(sum(np.dtype(p[1]).itemsize for p in props))
        _check_declared(count, row_bytes, _remaining(fh) + (1 if fmt == "ascii" else 0), "vertices")
        if fmt == "ascii":
            rows = []
            for _ in range(count):
                line = fh.readline()
                if not line:
                    raise ValueError(f"file ends after {len(rows)} of {count} vertices")
                rows.append(line.split())
            try:
                table = np.array(rows, dtype=np.float64).reshape(count, len(props))
            except ValueError as exc:
                raise ValueError(f"malformed vertex rows: {exc}") from exc
            cols = {p[0]: table[:, i] for i, p in enumerate(props)}
        else:
            end = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(p[0], end + p[1]) for p in props])
            buf = fh.read(dtype.itemsize * count)
            if len(buf) < dtype.itemsize * count:
                raise ValueError(f"file is truncated: {len(buf)} of {dtype.itemsize * count} vertex bytes")
            rec = np.frombuffer(buf, dtype=dtype, count=count)
            cols = {p[0]: rec[p[0]].astype(np.float64) for p in props}
    if has_faces:
        return sample_mesh_file(path, mesh_points, seed=seed)
    for axis in "xyz":
        if axis not in cols:
            raise ValueError(f"vertex element has no '{axis}' property")
    pts = np.stack([cols["x"], cols["y"], cols["z"]], axis=1)
    normals = np.stack([cols["nx"], cols["ny"], cols["nz"]], axis=1) if all(k in cols for k in ("nx", "ny", "nz")) else None
    labels = cols["label"].astype(np.int64) if "label" in cols else None
    return PointCloud(pts, normals, labels)


def _read_pcd(path: Path) -> PointCloud:
    with open(path, "rb") as fh:
        header: dict[str, list[str]] = {}
        while True:
            line = fh.readline()
            if not line:
                raise ValueError("header has no DATA line")
            text = line.decode("ascii", errors="replace").strip()
            if not text or text.startswith("#"):
                continue
            key, *vals = text.split()
            header[key.upper()] = vals
            if key.upper() == "DATA":
                break
        data_kind = header["DATA"][0].lower()
        fields = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        npts = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0])
        row_bytes = 2 * sum(counts) if data_kind == "ascii" else sum(s * c for s, c in zip(sizes, counts))
        _check_declared(npts, row_bytes, _remaining(fh) + (1 if data_kind == "ascii" else 0), "points")
        if data_kind == "ascii":
            body = fh.read().decode("ascii", errors="replace")
            rows = [ln for ln in body.splitlines() if ln.strip()]
            if len(rows) < npts:
                raise ValueError(f"file ends after {len(rows)} of {npts} points")
            table = np.loadtxt(io.StringIO("\n".join(rows[:npts])), ndmin=2, dtype=np.float64)
            cols, c = {}, 0
            for f, cnt in zip(fields, counts):
                cols[f] = table[:, c]
                c += cnt
        elif data_kind == "binary":
            kinds = {"F": "f", "I": "i", "U": "u"}
            dtype = np.dtype([(f if cnt == 1 else f, f"<{kinds[t]}{s}", () if cnt == 1 else (cnt,)) for f, s, t, cnt in zip(fields, sizes, types, counts)])
            buf = fh.read(dtype.itemsize * npts)
            if len(buf) < dtype.itemsize * npts:
                raise ValueError(f"file is truncated: {len(buf)} of {dtype.itemsize * npts} data bytes")
            rec = np.frombuffer(buf, dtype=dtype, count=npts)
            cols = {f: rec[f].astype(np.float64) for f, cnt in zip(fields, counts) if cnt == 1}
        else:
            raise ValueError(f"PCD DATA {data_kind!r} is not supported (use ascii or binary)")
    for axis in "xyz":
        if axis not in cols:
            raise ValueError(f"PCD has no '{axis}' field")
    pts = np.stack([cols["x"], cols["y"], cols["z"]], axis=1)
    nkeys = ("normal_x", "normal_y", "normal_z")
    normals = np.stack([cols[k] for k in nkeys], axis=1) if all(k in cols for k in nkeys) else None
    labels = cols["label"].astype(np.int64) if "label" in cols else None
    return PointCloud(pts, normals, labels)


def sample_mesh_file(path: str | Path, n_points: int, *, seed: int = 0) -> PointCloud:
    """Load a mesh with trimesh and sample ``n_points`` uniformly by area (face normals).

    A mesh that is not watertight is still sampled (a scan surface is usually open),
    and ``meta['watertight']`` records it, so that outward normal orientation can fall
    back to the centroid rule; a mesh with no faces is an error.
    """
    import trimesh

    path = Path(path)
    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as exc:  # trimesh raises many types for bad files
        raise InputError(path, f"cannot read mesh: {exc}") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise InputError(path, "mesh has no faces")
    return sample_mesh(mesh, n_points, seed=seed, source=path)


def sample_mesh(mesh, n_points: int, *, seed: int = 0, source: str | Path = "mesh") -> PointCloud:
    """Sample a trimesh mesh uniformly by area; normals are the face normals.

    For a watertight mesh trimesh's face normals point outward; for an open mesh they
    are kept as stored and ``meta['watertight'] = False`` says the orientation is
    unverified.
    """
    area = np.asarray(mesh.area_faces, dtype=np.float64)
    if not np.isfinite(area).all() or area.sum() <= 0:
        raise InputError(source, "mesh has zero surface area")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(area), size=n_points, p=area / area.sum())
    tri = np.asarray(mesh.triangles)[face]
    r1, r2 = rng.random(n_points), rng.random(n_points)
    s = np.sqrt(r1)
    pts = tri[:, 0] * (1 - s)[:, None] + tri[:, 1] * (s * (1 - r2))[:, None] + tri[:, 2] * (s * r2)[:, None]
    normals = np.asarray(mesh.face_normals)[face]
    watertight = bool(mesh.is_watertight)
    if watertight and mesh.volume < 0:
        normals = -normals
    return PointCloud(pts, normals, None, {"watertight": watertight, "source": str(source)})


# --------------------------------------------------------------------------- writing


def write_cloud(path: str | Path, cloud: PointCloud, *, binary: bool = True) -> Path:
    """Write ``cloud`` to ``path``; the format follows the suffix (.ply .pcd .txt .xyz .npy)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return write_ply(path, cloud, binary=binary)
    if suffix == ".pcd":
        return write_pcd(path, cloud, binary=binary)
    if suffix in (".txt", ".xyz", ".asc", ".pts"):
        return write_xyz_label(path, cloud.points, cloud.labels)
    if suffix == ".npy":
        cols = [cloud.points] + ([cloud.normals] if cloud.normals is not None else []) + (
            [cloud.labels[:, None].astype(np.float64)] if cloud.labels is not None else [])
        bio = io.BytesIO()
        np.save(bio, np.concatenate(cols, axis=1))
        atomic_write_bytes(path, bio.getvalue())
        return path
    raise InputError(path, f"cannot write format {suffix!r}")


def write_xyz_label(path: str | Path, points: np.ndarray, labels: np.ndarray | None = None,
                    decimals: int | None = None) -> Path:
    """Real3D-AD ground-truth layout: one ``x y z label`` line per point, 6 decimals (more when
    the part is so small that 6 would lose its shape; see :func:`text_decimals`)."""
    pts = np.asarray(points, dtype=np.float64)
    if decimals is None:
        decimals = text_decimals(pts)
    bio = io.StringIO()
    if labels is None:
        np.savetxt(bio, pts, fmt=f"%.{decimals}f", delimiter=" ")
    else:
        table = np.concatenate([pts, np.asarray(labels).reshape(-1, 1)], axis=1)
        np.savetxt(bio, table, fmt=[f"%.{decimals}f"] * 3 + ["%d"], delimiter=" ")
    atomic_write_text(path, bio.getvalue())
    return Path(path)


def _vertex_fields(cloud: PointCloud) -> list[tuple[str, np.ndarray, str]]:
    fields = [("x", cloud.points[:, 0], "f4"), ("y", cloud.points[:, 1], "f4"), ("z", cloud.points[:, 2], "f4")]
    if cloud.normals is not None:
        fields += [(k, cloud.normals[:, i], "f4") for i, k in enumerate(("nx", "ny", "nz"))]
    if cloud.labels is not None:
        fields.append(("label", cloud.labels, "u1" if cloud.labels.min(initial=0) >= 0 and cloud.labels.max(initial=0) < 256 else "i4"))
    return fields


def write_ply(path: str | Path, cloud: PointCloud, *, binary: bool = True, double: bool | None = None) -> Path:
    """PLY with ``x y z`` (float32, or float64 when ``double``), optional normals and ``label``.

    ``double=None`` (default) picks float64 for the coordinates when float32 would move
    points by more than ``REL_PRECISION`` of the extent (see :func:`~defectforge.synth3d.cloud_precision.needs_double`)."""
    fields = _vertex_fields(cloud)
    if double is None:
        double = needs_double(cloud.points)
    if double:
        fields = [(n, a, "f8" if t == "f4" else t) for n, a, t in fields]
    ply_name = {"f4": "float", "f8": "double", "u1": "uchar", "i4": "int"}
    head = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment defectforge synth3d",
            f"element vertex {len(cloud)}"]
    head += [f"property {ply_name[t]} {n}" for n, _, t in fields]
    head.append("end_header")
    header = ("\n".join(head) + "\n").encode("ascii")
    if binary:
        rec = np.empty(len(cloud), dtype=[(n, "<" + t) for n, _, t in fields])
        for n, a, _ in fields:
            rec[n] = a
        return atomic_write_bytes(path, header + rec.tobytes())
    fmts = ["%d" if t in ("u1", "i4") else ("%.17g" if t == "f8" else "%.9g") for _, _, t in fields]
    bio = io.StringIO()
    np.savetxt(bio, np.stack([a.astype(np.float64) for _, a, _ in fields], axis=1), fmt=fmts, delimiter=" ")
    return atomic_write_bytes(path, header + bio.getvalue().encode("ascii"))


def write_pcd(path: str | Path, cloud: PointCloud, *, binary: bool = True) -> Path:
    """PCD v0.7 (ascii or binary) with ``x y z``, optional ``normal_*`` and ``label`` fields
    (coordinates as float64 when float32 would lose precision, as :func:`write_ply`)."""
    fields = _vertex_fields(cloud)
    if needs_double(cloud.points):
        fields = [(n, a, "f8" if t == "f4" else t) for n, a, t in fields]
    rename = {"nx": "normal_x", "ny": "normal_y", "nz": "normal_z"}
    names = [rename.get(n, n) for n, _, _ in fields]
    types = ["U" if t == "u1" else ("I" if t == "i4" else "F") for _, _, t in fields]
    sizes = [str(np.dtype(t).itemsize) for _, _, t in fields]
    head = ["# .PCD v0.7 - defectforge synth3d", "VERSION 0.7", "FIELDS " + " ".join(names), "SIZE " + " ".join(sizes),
            "TYPE " + " ".join(types), "COUNT " + " ".join("1" for _ in fields), f"WIDTH {len(cloud)}", "HEIGHT 1",
            "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {len(cloud)}", f"DATA {'binary' if binary else 'ascii'}"]
    header = ("\n".join(head) + "\n").encode("ascii")
    if binary:
        rec = np.empty(len(cloud), dtype=[(nm, "<" + t) for nm, (_, _, t) in zip(names, fields)])
        for nm, (_, a, _) in zip(names, fields):
            rec[nm] = a
        return atomic_write_bytes(path, header + rec.tobytes())
    fmts = ["%d" if t in ("u1", "i4") else ("%.17g" if t == "f8" else "%.9g") for _, _, t in fields]
    bio = io.StringIO()
    np.savetxt(bio, np.stack([a.astype(np.float64) for _, a, _ in fields], axis=1), fmt=fmts, delimiter=" ")
    return atomic_write_bytes(path, header + bio.getvalue().encode("ascii"))


def list_cloud_files(folder: str | Path) -> list[Path]:
    """Point-cloud and mesh files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    ok = CLOUD_SUFFIXES + MESH_SUFFIXES
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in ok and not re.match(r"^\.", p.name))
