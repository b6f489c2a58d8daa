"""Point-cloud anomaly datasets: Real3D-AD, Anomaly-ShapeNet, MulSen-AD and synth3d outputs.

Layouts (``<cls>`` = one category folder under the root):

- **real3d** (Real3D-AD, also our generic layout): ``<cls>/train/*template*.pcd`` (or every
  cloud file in ``train/`` when no template exists) = good training clouds;
  ``<cls>/test/*`` clouds, ``good`` in the name = normal, else the defect type is the
  name's last ``_`` part (``12_bulge_cut`` -> ``bulge``); ground truth
  ``<cls>/gt/<stem>.txt`` = space-separated ``x y z label`` (or labels stored in the
  test file itself: a 4th text column or a PLY/PCD ``label`` property).
- **anomaly-shapenet**: ``<cls>/train/*template*.pcd``; ``<cls>/test/*.pcd`` where
  ``positive`` in the name = normal, else ``<cls>_<type><k>``; ground truth
  ``<cls>/GT/<stem>.txt`` = comma-separated ``x,y,z,label``.
- **mulsen** (MulSen-AD, point-cloud modality): ``<cls>/Pointcloud/train/*.stl`` (good),
  ``<cls>/Pointcloud/test/<type>/*.stl`` (``good`` = normal); the cloud is the mesh's
  vertices; ground truth ``<cls>/Pointcloud/GT/<type>/<stem>.txt`` = comma-separated
  coordinates of the anomalous points, matched to the vertices by KD-tree (a vertex is
  anomalous when a GT point lies within ``1e-3`` of the bounding-box diagonal). When
  ``<cls>/RGB/GT/<type>/data.csv`` exists and has a point-cloud column, a sample whose
  point-cloud flag is 0 is treated as normal (3D-only evaluation).
- **synth3d** (``defectforge synth3d`` output): ``manifest.csv`` + ``<name>.txt``
  (``x y z label``) = test clouds, category = the ``part`` column; good clouds from
  ``train/`` (training) and ``good/`` (test) beside the manifest when present.

Ground-truth labels are matched to the cloud's points, never assumed aligned: when the
label file has the same rows as the cloud they are used directly, otherwise each cloud
point takes the label of the nearest labelled point, and a file where more than 1 % of
the cloud's points have no labelled point within ``1e-3`` of the diagonal is refused
("label file does not match the cloud"); :mod:`~defectforge.detect3d.ground_truth` reads and
matches them.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from defectforge.detect3d.ground_truth import (  # noqa: F401 (MATCH_TOL re-exported)
    MATCH_TOL, check_labels, labels_from_coords, labels_from_table)
from defectforge.data._files import read_text
from defectforge.errors import InputError
from defectforge.synth3d.cloud import PointCloud, check_cloud

GOOD = "good"
FORMATS_3D = ("real3d", "anomaly-shapenet", "mulsen", "synth3d")
_CLOUD_EXT = (".pcd", ".ply", ".txt", ".xyz", ".npy", ".pts", ".stl", ".obj", ".off")


@dataclass
class Cloud3DSample:
    """One point cloud of a dataset, loaded lazily; ``label`` is ``"good"`` or a defect type."""

    category: str
    split: str
    label: str
    path: Path
    gt_path: Path | None = None
    gt_kind: str = "none"  # none | xyzl (x y z label rows) | coords (anomalous coordinates) | embedded
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_defect(self) -> bool:
        return self.label != GOOD

    @property
    def name(self) -> str:
        return self.path.stem

    def load(self) -> PointCloud:
        """The cloud with per-point ``labels`` (0 good, 1 defect; all 0 for a good sample)."""
        if self.gt_kind == "vertices" or self.path.suffix.lower() in (".stl", ".obj", ".off"):
            pts = read_vertices(self.path)
        else:
            from defectforge.synth3d.cloud_io import read_cloud

            cloud = read_cloud(self.path)
            pts = cloud.points
            if self.gt_kind == "embedded":
                if cloud.labels is None:
                    raise InputError(self.path, "defective test cloud has no label column and no ground-truth file")
                return PointCloud(check_cloud(pts, self.path), None, check_labels(cloud.labels, self.path),
                                  {"source": str(self.path)})
        pts = check_cloud(pts, self.path)
        if self.gt_kind == "xyzl" and self.gt_path is not None:
            labels = labels_from_table(pts, self.gt_path)
        elif self.gt_kind == "coords" and self.gt_path is not None:
            labels = labels_from_coords(pts, self.gt_path)
        else:
            labels = np.zeros(len(pts), dtype=np.int64)
        if not self.is_defect:
            labels = np.zeros(len(pts), dtype=np.int64)
        return PointCloud(pts, None, labels, {"source": str(self.path)})


@dataclass
class Dataset3D:
    """Samples of one or more categories, with the root and the layout they came from."""

    samples: list[Cloud3DSample]
    root: Path | None = None
    format: str = "memory"

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Cloud3DSample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Cloud3DSample:
        return self.samples[i]

    @property
    def categories(self) -> list[str]:
        return sorted({s.category for s in self.samples})

    def filter(self, category: str | None = None, split: str | None = None) -> "Dataset3D":
        out = [s for s in self.samples if (category is None or s.category == category)
               and (split is None or s.split == split)]
        return Dataset3D(out, self.root, self.format)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples:
            key = f"{s.category}/{s.split}/{'good' if not s.is_defect else 'defect'}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))


def read_vertices(path: Path) -> np.ndarray:
    """Vertices of a mesh file (STL/OBJ/OFF) as (N, 3) float64."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as exc:  # trimesh raises many kinds
        raise InputError(path, f"cannot read mesh: {exc.__class__.__name__}: {exc}") from None
    v = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if len(v) == 0:
        raise InputError(path, "mesh has no vertices")
    return v


# --------------------------------------------------------------------------- layouts


def _clouds(folder: Path, pattern: str = "*") -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in _CLOUD_EXT
                  and not p.name.startswith("."))


def _categories(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _train_files(cls_dir: Path) -> list[Path]:
    tr = cls_dir / "train"
    return _clouds(tr, "*template*.pcd") or _clouds(tr)


def _defect_type(stem: str, cls: str | None = None) -> str:
    s = stem
    if cls and s.lower().startswith(cls.lower() + "_"):
        s = s[len(cls) + 1:]
    parts = [p for p in s.split("_") if p and p.lower() != "cut" and not p.isdigit()]
    t = parts[-1] if parts else s
    return re.sub(r"\d+$", "", t) or t


def load_real3d(root: str | Path) -> Dataset3D:
    """Real3D-AD layout (also the generic layout: any cloud format, labels in gt/ or in the file)."""
    root = Path(root)
    samples = []
    for cd in _categories(root):
        if not (cd / "train").is_dir() and not (cd / "test").is_dir():
            continue
        cls = cd.name
        for p in _train_files(cd):
            samples.append(Cloud3DSample(cls, "train", GOOD, p))
        for p in _clouds(cd / "test"):
            if "good" in p.stem.lower():
                samples.append(Cloud3DSample(cls, "test", GOOD, p))
                continue
            gt = cd / "gt" / f"{p.stem}.txt"
            if gt.is_file():
                samples.append(Cloud3DSample(cls, "test", _defect_type(p.stem), p, gt, "xyzl"))
            elif p.suffix.lower() in (".txt", ".ply", ".pcd", ".npy"):
                samples.append(Cloud3DSample(cls, "test", _defect_type(p.stem), p, None, "embedded"))
            else:
                raise InputError(p, f"defective test cloud has no ground-truth file {gt}")
    return _finish(samples, root, "real3d")


def load_anomaly_shapenet(root: str | Path) -> Dataset3D:
    """Anomaly-ShapeNet layout (``positive`` = normal, GT/ comma-separated)."""
    root = Path(root)
    samples = []
    for cd in _categories(root):
        cls = cd.name
        for p in _train_files(cd):
            samples.append(Cloud3DSample(cls, "train", GOOD, p))
        for p in _clouds(cd / "test", "*.pcd"):
            if "positive" in p.stem.lower():
                samples.append(Cloud3DSample(cls, "test", GOOD, p))
                continue
            gt = cd / "GT" / f"{p.stem}.txt"
            if not gt.is_file():
                raise InputError(p, f"defective test cloud has no ground-truth file {gt}")
            samples.append(Cloud3DSample(cls, "test", _defect_type(p.stem, cls), p, gt, "xyzl"))
    return _finish(samples, root, "anomaly-shapenet")


def _mulsen_flags(csv_path: Path) -> dict[str, int]:
    """``{sample stem: point-cloud flag}`` from a MulSen ``data.csv`` (empty if no such column)."""
    try:
        rows = list(csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8", errors="replace"))))
    except OSError as exc:
        raise InputError(csv_path, f"cannot read: {exc}") from None
    if len(rows) < 2:
        return {}
    head = [h.strip().lower() for h in rows[0]]
    col = next((i for i, h in enumerate(head) if "point" in h or h in ("pc", "3d", "pointcloud")), None)
    if col is None:
        return {}
    out = {}
    for r in rows[1:]:
        if len(r) > col and r[0].strip():
            try:
                out[Path(r[0].strip()).stem] = int(float(r[col]))
            except ValueError:
                raise InputError(csv_path, f"point-cloud flag {r[col]!r} is not 0 or 1") from None
    return out


def load_mulsen(root: str | Path) -> Dataset3D:
    """MulSen-AD point-cloud modality (STL vertices; GT = anomalous coordinates)."""
    root = Path(root)
    samples = []
    for cd in _categories(root):
        pc = cd / "Pointcloud"
        if not pc.is_dir():
            continue
        cls = cd.name
        for p in _clouds(pc / "train", "*.stl"):
            samples.append(Cloud3DSample(cls, "train", GOOD, p, None, "vertices"))
        test = pc / "test"
        for td in (_categories(test) if test.is_dir() else []):
            kind = td.name
            flags = {}
            csv_path = cd / "RGB" / "GT" / kind / "data.csv"
            if csv_path.is_file():
                flags = _mulsen_flags(csv_path)
            for p in _clouds(td, "*.stl"):
                if kind.lower() == GOOD or flags.get(p.stem, 1) == 0:
                    samples.append(Cloud3DSample(cls, "test", GOOD, p, None, "vertices"))
                    continue
                gt = pc / "GT" / kind / f"{p.stem}.txt"
                if not gt.is_file():
                    raise InputError(p, f"defective test cloud has no ground-truth file {gt}")
                samples.append(Cloud3DSample(cls, "test", kind, p, gt, "coords"))
    return _finish(samples, root, "mulsen")


def load_synth3d(root: str | Path) -> Dataset3D:
    """``defectforge synth3d`` output (manifest.csv + ``<name>.txt``) as test samples."""
    from defectforge.data.problems import is_inside

    root = Path(root)
    man = root / "manifest.csv"
    if not man.is_file():
        raise InputError(root, "no manifest.csv: not a synth3d output folder")
    rows = list(csv.DictReader(io.StringIO(read_text(man))))  # read_text: not UTF-8 names the file
    samples = []
    cats = set()
    for line, r in enumerate(rows, start=2):
        if "file" not in r:
            raise InputError(man, "manifest has no 'file' column")
        p = root / (r["file"] or "")
        if not is_inside(p, [root]):  # ../x or /abs in a manifest handed over by someone else
            raise InputError(man, f"line {line}: file {r['file']} is outside the dataset folder {root}")
        if not p.is_file():
            raise InputError(man, f"listed file {r['file']} is missing")
        part = r.get("part") or "default"
        cat = part if "/" not in part and "\\" not in part else Path(part).stem
        cats.add(cat)
        n_def = _defect_count(r.get("n_defect_points"), man, line)
        label = (r.get("defects") or "defect").split(",")[0].split("(")[0].strip() or "defect"
        samples.append(Cloud3DSample(cat, "test", label if n_def > 0 else GOOD, p, None, "embedded" if n_def > 0 else "none"))
    only = next(iter(cats)) if len(cats) == 1 else None
    for split, folder in (("train", root / "train"), ("test", root / "good")):
        for p in _clouds(folder):
            samples.append(Cloud3DSample(only or "default", split, GOOD, p))
    return _finish(samples, root, "synth3d")


def _defect_count(value: str | None, man: Path, line: int) -> int:
    """The ``n_defect_points`` cell of a synth3d manifest: a whole number >= 0 (empty = 0)."""
    text = (value or "").strip()
    if not text:
        return 0
    try:
        f = float(text)
    except ValueError:
        f = float("nan")
    if not math.isfinite(f) or f < 0 or f != int(f):
        raise InputError(man, f"line {line}: n_defect_points {text!r} is not a whole number >= 0")
    return int(f)


def _finish(samples: list[Cloud3DSample], root: Path, fmt: str) -> Dataset3D:
    if not samples:
        raise InputError(root, f"no point clouds found in the {fmt} layout")
    return Dataset3D(samples, root, fmt)


def detect_format(root: str | Path) -> str:
    """Guess the layout of ``root`` (see the module docstring)."""
    root = Path(root)
    if not root.exists():
        raise InputError(root, "dataset folder not found")
    if root.is_file():
        raise InputError(root, "expected a dataset folder, got a file")
    if (root / "manifest.csv").is_file():
        return "synth3d"
    cats = _categories(root)
    if any((c / "Pointcloud").is_dir() for c in cats):
        return "mulsen"
    if any((c / "GT").is_dir() and not (c / "gt").is_dir() for c in cats) or any(
            "positive" in p.name for c in cats for p in _clouds(c / "test")):
        return "anomaly-shapenet"
    if any((c / "train").is_dir() or (c / "test").is_dir() for c in cats):
        return "real3d"
    raise InputError(root, "unrecognised 3D dataset layout (expected <class>/train|test, <class>/Pointcloud, "
                           "or a synth3d manifest.csv)")


def load_dataset3d(root: str | Path, format: str | None = None) -> Dataset3D:
    """Load ``root`` in ``format`` (one of :data:`FORMATS_3D`; guessed when ``None``)."""
    fmt = format or detect_format(root)
    loaders = {"real3d": load_real3d, "anomaly-shapenet": load_anomaly_shapenet, "mulsen": load_mulsen,
               "synth3d": load_synth3d}
    if fmt not in loaders:
        from defectforge.errors import ConfigError

        raise ConfigError(f"unknown 3D dataset format {fmt!r}; choose one of {', '.join(FORMATS_3D)}")
    return loaders[fmt](root)


def load_clouds(samples: Iterable[Cloud3DSample]) -> list[PointCloud]:
    return [s.load() for s in samples]
