"""Per-point ground-truth labels of a point cloud, read from a label file and matched to its points.

Labels are matched to the cloud's points, never assumed aligned (see
:mod:`~defectforge.detect3d.data`): :func:`labels_from_table` reads ``x y z label`` rows (used
directly when they are the cloud's own points, else each point takes the nearest labelled
row's label, refused when more than 1 % of the points have none within ``MATCH_TOL`` of the
bounding-box diagonal); :func:`labels_from_coords` reads the coordinates of the anomalous
points (MulSen-AD) and marks the cloud points within that tolerance.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from defectforge.errors import InputError
from defectforge.synth3d.cloud import bbox_diag

MATCH_TOL = 1e-3


def check_labels(lab: np.ndarray, path: Path) -> np.ndarray:
    lab = np.asarray(lab)
    if not np.all(np.isfinite(lab)) or not np.isin(lab, (0, 1)).all():
        raise InputError(path, "labels must be 0 (good) or 1 (defect)")
    return lab.astype(np.int64)


def _read_table(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "ground-truth file not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return np.zeros((0, 4))
    sep = "," if "," in lines[0] else None
    try:
        return np.loadtxt(io.StringIO("\n".join(lines)), delimiter=sep, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise InputError(path, f"ground-truth file is not a table of numbers: {exc}") from None


def labels_from_table(points: np.ndarray, gt_path: Path) -> np.ndarray:
    """Per-point labels of ``points`` from an ``x y z label`` file (matched, see module doc)."""
    table = _read_table(gt_path)
    if table.shape[1] != 4:
        raise InputError(gt_path, f"ground-truth rows need 4 columns (x y z label), found {table.shape[1]}")
    if not np.isfinite(table).all():
        raise InputError(gt_path, "ground-truth file has NaN or infinite values")
    xyz, lab = table[:, :3], check_labels(table[:, 3], gt_path)
    tol = MATCH_TOL * max(bbox_diag(points), 1e-12)
    if len(xyz) == len(points) and np.abs(xyz - points).max(initial=0.0) <= tol:
        return lab
    if len(xyz) == 0:
        raise InputError(gt_path, f"label file does not match the cloud: it is empty, the cloud has {len(points)} points")
    d, i = cKDTree(xyz).query(points, k=1, workers=-1)
    bad = int((d > tol).sum())
    if bad > 0.01 * len(points):
        raise InputError(gt_path, f"label file does not match the cloud: {bad} of {len(points)} points have no "
                                  f"labelled point within {tol:.3g} ({len(xyz)} labelled rows)")
    return lab[i]


def labels_from_coords(points: np.ndarray, gt_path: Path) -> np.ndarray:
    """Per-point labels from a file of anomalous coordinates (MulSen-AD), matched by KD-tree."""
    table = _read_table(gt_path)
    if len(table) == 0:
        return np.zeros(len(points), dtype=np.int64)
    if table.shape[1] < 3:
        raise InputError(gt_path, f"ground-truth rows need 3 coordinates, found {table.shape[1]} columns")
    xyz = table[:, :3]
    if not np.isfinite(xyz).all():
        raise InputError(gt_path, "ground-truth file has NaN or infinite values")
    tol = MATCH_TOL * max(bbox_diag(points), 1e-12)
    d_gt, _ = cKDTree(points).query(xyz, k=1, workers=-1)
    bad = int((d_gt > tol).sum())
    if bad > 0.1 * len(xyz):
        raise InputError(gt_path, f"label file does not match the cloud: {bad} of {len(xyz)} anomalous "
                                  f"coordinates have no cloud point within {tol:.3g}")
    d, _ = cKDTree(xyz).query(points, k=1, workers=-1)
    return (d <= tol).astype(np.int64)
