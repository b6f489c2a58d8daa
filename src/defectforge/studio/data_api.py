"""Data page: list what the project holds, open any dataset the toolkit reads (2D formats
through :func:`defectforge.data.load_dataset`, 3D layouts through
:func:`defectforge.detect3d.data.load_dataset3d`), filter samples, thumbnails with
mask/box overlays, and clouds for the 3D viewer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from defectforge.errors import DefectforgeError, InputError
from defectforge.studio.paths import SAMPLE
from defectforge.studio.state import Studio, cloud_payload

router = APIRouter(prefix="/api")
MAX_SCAN = 300
MAX_DEPTH = 3


def studio(request: Request) -> Studio:
    return request.app.state.studio


@router.get("/project")
def project(request: Request) -> dict[str, Any]:
    """Candidate datasets (folders a reader recognises) and cloud/mesh files, up to depth 3."""
    st = studio(request)
    from defectforge.data.formats import detect_format
    from defectforge.synth3d.cloud_io import CLOUD_SUFFIXES, MESH_SUFFIXES

    datasets, clouds = [{"path": SAMPLE, "format": "manifest", "note": "bundled BSData sample"}], []
    for name, base in st.paths.mounts.items():
        if name != SAMPLE:
            datasets.append({"path": name, "format": _format_of(base, detect_format) or "folder",
                             "note": f"mounted read-only from {base}"})
    root = st.paths.root
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        depth = len(d.relative_to(root).parts)
        dirnames[:] = sorted(x for x in dirnames if not x.startswith(".") and x not in ("images", "masks", "labels"))
        if depth >= MAX_DEPTH:
            dirnames[:] = []
        if d != root:
            fmt = _format_of(d, detect_format)
            if fmt:
                datasets.append({"path": st.paths.relative(d), "format": fmt})
                dirnames[:] = [x for x in dirnames if x not in ("export",)]
        for f in sorted(filenames):
            if Path(f).suffix.lower() in CLOUD_SUFFIXES + MESH_SUFFIXES and len(clouds) < MAX_SCAN:
                clouds.append(st.paths.relative(d / f))
        if len(datasets) >= MAX_SCAN:
            break
    return {"root": str(root), "datasets": datasets, "clouds": clouds}


def _format_of(d: Path, detect_format) -> str | None:
    try:
        return detect_format(d)
    except DefectforgeError:
        pass
    from defectforge.detect3d.data import detect_format as detect3d

    try:
        return detect3d(d)
    except DefectforgeError:
        return None


@router.get("/dataset")
def dataset(request: Request, path: str) -> dict[str, Any]:
    kind, ds = studio(request).dataset(path)
    if kind == "3d":
        return {"path": path, "kind": kind, "format": ds.format, "n": len(ds), "counts": ds.counts(),
                "splits": sorted({s.split for s in ds}), "labels": sorted({s.label for s in ds}),
                "categories": ds.categories}
    return {"path": path, "kind": kind, "format": ds.format, "n": len(ds), "counts": ds.counts(),
            "splits": ds.splits, "labels": ds.labels, "defect_types": ds.defect_types}


@router.get("/samples")
def samples(request: Request, path: str, split: str = "", label: str = "", defect: str = "",
            offset: int = 0, limit: int = 60) -> dict[str, Any]:
    """Samples after the filters (``defect``: ``yes``/``no``), their filtered counts, one page."""
    kind, ds = studio(request).dataset(path)
    rows = []
    for i, s in enumerate(ds):
        if (split and s.split != split) or (label and s.label != label):
            continue
        if defect and s.is_defect != (defect == "yes"):
            continue
        rows.append((i, s))
    counts: dict[str, int] = {}
    for _, s in rows:
        counts[f"{s.split}/{s.label}"] = counts.get(f"{s.split}/{s.label}", 0) + 1
    limit = max(1, min(int(limit), 500))
    page = rows[max(0, offset): max(0, offset) + limit]
    items = []
    for i, s in page:
        item = {"i": i, "name": s.name, "split": s.split, "label": s.label, "defect": s.is_defect}
        if kind == "2d":
            item["has_mask"] = s.mask_path is not None or s.mask_array is not None
            item["n_boxes"] = None if s.boxes is None else len(s.boxes)
        else:
            item["category"] = s.category
        items.append(item)
    return {"kind": kind, "total": len(rows), "counts": dict(sorted(counts.items())), "offset": offset, "items": items}


def _sample(st: Studio, path: str, i: int):
    kind, ds = st.dataset(path)
    if not 0 <= i < len(ds):
        raise InputError(path, f"sample index {i} is out of range (0..{len(ds) - 1})")
    return kind, ds[i]


@router.get("/thumb")
def thumb(request: Request, path: str, i: int, size: int = 320, overlay: int = 1) -> Response:
    """The sample's image (longest side ``size`` px; 0 = full size) with its mask tinted and
    outlined and its boxes drawn (green) when ``overlay``."""
    from defectforge.report.visual import mask_overlay

    kind, s = _sample(studio(request), path, i)
    if kind != "2d":
        raise InputError(path, "thumbnails are for 2D datasets; use the 3D viewer for clouds")
    img = s.rgb()
    if overlay:
        m = s.mask
        if m is not None and m.shape == img.shape[:2]:
            img = mask_overlay(img, m)
        img = np.ascontiguousarray(img)
        from defectforge.data.sample import boxes_from_mask

        boxes = s.boxes if s.boxes is not None else (boxes_from_mask(m, s.label) if m is not None else [])
        for b in boxes:
            cv2.rectangle(img, (int(b.x0), int(b.y0)), (int(b.x1) - 1, int(b.y1) - 1), (40, 220, 40), 2)
    return png_response(fit(img, size))


def fit(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if size and max(h, w) > size:
        f = size / max(h, w)
        img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return img


def png_response(rgb: np.ndarray) -> Response:
    return Response(png_bytes(rgb), media_type="image/png", headers={"Cache-Control": "no-store"})


def png_bytes(rgb: np.ndarray) -> bytes:
    a = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise InputError(None, "could not encode the image")
    return buf.tobytes()


@router.get("/cloud")
def cloud(request: Request, path: str, i: int | None = None, max_points: int = 200_000) -> dict[str, Any]:
    """A cloud for the viewer: sample ``i`` of a 3D dataset, or a cloud/mesh file (labels
    from its label column when it has one)."""
    st = studio(request)
    if i is not None:
        kind, s = _sample(st, path, i)
        if kind != "3d":
            raise InputError(path, "not a 3D dataset")
        pc = s.load()
        name = s.name
    else:
        from defectforge.synth3d.cloud_io import read_cloud

        pc = read_cloud(st.paths.resolve(path, must_exist=True))
        name = Path(path).stem
    out = cloud_payload(pc.points, pc.labels, max(1000, min(int(max_points), 500_000)))
    out["name"] = name
    return out
