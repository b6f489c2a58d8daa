"""What one studio server holds: the project paths and small caches of loaded datasets,
clouds and previews (bounded, so a long session cannot grow without limit)."""

from __future__ import annotations

import base64
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from defectforge.errors import InputError
from defectforge.studio.paths import ProjectPaths


class LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


class Studio:
    """Server state: ``paths`` (client path resolution) and caches keyed by path + mtime."""

    def __init__(self, project: str | Path, token: str | None = None, llm: Any = None,
                 mounts: dict[str, str | Path] | None = None):
        self.paths = ProjectPaths(project, mounts)
        self.token = token
        self.llm = llm  # a defectforge.llm.ChatClient when an endpoint is configured
        self.datasets = LRU(8)
        self.clouds = LRU(16)
        self.previews = LRU(32)
        self.engines = LRU(8)
        self.lock = threading.Lock()  # serialises writes into synthetic sets

    def new_id(self) -> str:
        return uuid.uuid4().hex[:12]

    # -- datasets ----------------------------------------------------------------------
    def dataset(self, rel: str):
        """``(kind, dataset)``: kind ``"2d"`` (a :class:`~defectforge.data.Dataset`) or ``"3d"``
        (a :class:`~defectforge.detect3d.data.Dataset3D`), read by the toolkit's own readers."""
        path = self.paths.resolve(rel, must_exist=True)
        key = (str(path), _mtime(path))
        hit = self.datasets.get(key)
        if hit is not None:
            return hit
        from defectforge.errors import DefectforgeError

        try:
            from defectforge.data.formats import load_dataset

            val = ("2d", load_dataset(path))
        except DefectforgeError as err2d:
            if not path.is_dir():
                raise
            from defectforge.detect3d.data import load_dataset3d

            try:
                val = ("3d", load_dataset3d(path))
            except DefectforgeError:
                raise err2d from None
        self.datasets.put(key, val)
        return val


def _mtime(path: Path) -> float:
    """Latest mtime of ``path`` and, for a folder, its manifest-like files (so a dataset
    that grew, e.g. a synthetic set, is read again)."""
    ts = [path.stat().st_mtime]
    if path.is_dir():
        for name in ("manifest.csv", "split.csv", "data.yaml"):
            if (path / name).exists():
                ts.append((path / name).stat().st_mtime)
    return max(ts)


def b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


def cloud_payload(points: np.ndarray, labels: np.ndarray | None, max_points: int = 200_000,
                  seed: int = 0) -> dict[str, Any]:
    """Points (float32, centred, scaled to unit diagonal) and labels (uint8) as base64, thinned
    to ``max_points`` for the browser; ``index`` maps shown points back to cloud rows."""
    pts = np.asarray(points, np.float64)
    if len(pts) == 0:
        raise InputError(None, "the cloud has no points")
    idx = np.arange(len(pts))
    if len(pts) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(pts), max_points, replace=False))
    lo, hi = pts.min(0), pts.max(0)
    center = (lo + hi) / 2
    diag = float(np.linalg.norm(hi - lo)) or 1.0
    shown = ((pts[idx] - center) / diag).astype(np.float32)
    lab = None if labels is None else (np.asarray(labels)[idx] > 0).astype(np.uint8)
    return {"n": int(len(pts)), "shown": int(len(idx)), "points": b64(shown),
            "labels": None if lab is None else b64(lab), "n_defect": 0 if labels is None else int((np.asarray(labels) > 0).sum()),
            "center": center.tolist(), "diag": diag, "index": b64(idx.astype(np.int32)) if len(idx) < len(pts) else None}
