"""How many digits written point coordinates need.

Point coordinates are kept to :data:`REL_PRECISION` of the cloud's extent: float32 PLY/PCD
coordinates are enough for a part near the origin, not for one near 1e9 (3,000 distinct
points collapse to 9); 6-decimal text (the Real3D-AD layout) is enough for a part of ordinary
size, not for one at 1e-6 scale. :mod:`defectforge.synth3d.cloud_io` asks these functions
which to write.
"""

from __future__ import annotations

import numpy as np

#: written coordinates keep the cloud's geometry to this fraction of its extent (or better)
REL_PRECISION = 1e-7


def _extent(pts: np.ndarray) -> float:
    """The cloud's size: its bounding-box diagonal, or its largest coordinate for a single point."""
    finite = pts[np.isfinite(pts).all(axis=1)] if len(pts) else pts
    if not len(finite):
        return 0.0
    diag = float(np.linalg.norm(finite.max(axis=0) - finite.min(axis=0)))
    return diag if diag > 0 else float(np.abs(finite).max())


def text_decimals(points: np.ndarray, minimum: int = 6) -> int:
    """Decimals for fixed-point text so the rounding stays under :data:`REL_PRECISION` of the
    cloud's extent: 6 (the Real3D-AD layout) for parts of ordinary size, more for tiny ones
    (a 1e-6-scale part would otherwise collapse onto a few grid points)."""
    ext = _extent(np.asarray(points, dtype=np.float64).reshape(-1, 3))
    if ext <= 0:
        return minimum
    return int(min(max(minimum, int(np.ceil(-np.log10(REL_PRECISION * ext)))), 30))


def needs_double(points: np.ndarray) -> bool:
    """Whether float32 coordinates would move points by more than :data:`REL_PRECISION` of
    the extent (a part far from the origin, e.g. at 1e9, collapses to a few float32 values)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    ext = _extent(pts)
    if not len(pts) or ext <= 0:
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        err = np.abs(pts.astype(np.float32).astype(np.float64) - pts)
    err = err[np.isfinite(err)]
    return bool(err.size) and float(err.max()) > REL_PRECISION * ext
