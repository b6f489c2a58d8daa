"""Results: open a ``detect eval --json`` output (:mod:`.results_eval`) or a ``detect predict`` output folder (``scores.csv``, ``heatmaps/``, ``masks/``),
optionally with the dataset its images come from for ground truth. The page sorts per-image
scores, shows image | ground truth | heatmap | predicted mask, and moves an image-score
threshold (confusion matrix, precision, recall computed in the browser from these rows).
Heatmaps and masks are the files ``predict`` wrote (colour scale and pixel threshold as
written there)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from defectforge.errors import InputError
from defectforge.studio.data_api import fit, png_response, studio
from defectforge.studio.forms import FieldError

router = APIRouter(prefix="/api")


def _rows(st, path: str) -> tuple[Path, list[dict[str, str]]]:
    out = st.paths.resolve(path, must_exist=True)
    f = out / "scores.csv"
    if not f.is_file():
        raise FieldError("path", f"{path} has no scores.csv: open a 'detect predict' output folder")
    rows = list(csv.DictReader(io.StringIO(f.read_text(encoding="utf-8"))))
    need = {"file", "score", "anomalous", "heatmap", "mask"}
    if rows and not need <= set(rows[0]):
        raise InputError(f, f"scores.csv lacks columns {sorted(need - set(rows[0]))}")
    for line, r in enumerate(rows, start=2):  # a hand-edited or foreign file: one line, not a 500
        for col, kind in (("score", float), ("anomalous", int), ("threshold", float)):
            value = r.get(col) or ""
            if col == "threshold" and not value:
                continue
            try:
                kind(value)
            except ValueError:
                raise InputError(f, f"line {line}: {col} {value!r} is not a number") from None
    return out, rows


def _gt(st, dataset: str) -> dict[str, Any]:
    """Dataset samples by resolved image path (for ground truth)."""
    if not dataset:
        return {}
    kind, ds = st.dataset(dataset)
    if kind != "2d":
        raise FieldError("dataset", "ground truth comes from a 2D dataset")
    return {str(Path(s.path).resolve()): s for s in ds if s.path is not None}


@router.get("/results")
def results(request: Request, path: str, dataset: str = "") -> dict[str, Any]:
    """A ``detect predict`` folder, or a ``detect eval --json`` file (:mod:`.results_eval`)."""
    from defectforge.studio import results_eval

    st = studio(request)
    if results_eval.is_eval_output(st.paths.resolve(path, must_exist=True)):
        return results_eval.results_of_eval(st, path)
    _, rows = _rows(st, path)
    gt = _gt(st, dataset)
    out = st.paths.resolve(path)
    items = []
    for k, r in enumerate(rows):
        s = gt.get(str(_source(st, out, r["file"])))
        items.append({"k": k, "name": Path(r["file"]).stem, "score": float(r["score"]), "anomalous": int(r["anomalous"]),
                      "label": None if s is None else s.label, "defect": None if s is None else s.is_defect,
                      "split": None if s is None else s.split})
    thr = rows[0].get("threshold") if rows else ""
    return {"kind": "predict", "items": items, "threshold": float(thr) if thr else None,
            "matched": sum(i["label"] is not None for i in items),
            "heatmaps": any(r["heatmap"] for r in rows)}  # False: 'detect predict --heatmaps none'


@router.get("/results/map")
def result_map(request: Request, path: str, k: int) -> dict[str, Any]:
    """The raw anomaly map of row ``k`` of an eval output (float32, base64) and the run's scale."""
    from defectforge.studio import results_eval

    return results_eval.eval_map(studio(request), path, k)


@router.get("/results/image")
def result_image(request: Request, path: str, k: int, kind: str = "heatmap", dataset: str = "", size: int = 480) -> Response:
    """``kind``: ``image`` | ``gt`` (ground-truth mask from ``dataset``) | ``heatmap`` | ``mask``
    (eval outputs: ``image`` | ``gt`` | ``heatmap`` | ``colorbar``, the mask is drawn in the page)."""
    from defectforge.data.image_io import as_rgb8, read_image
    from defectforge.studio import results_eval

    st = studio(request)
    if results_eval.is_eval_output(st.paths.resolve(path, must_exist=True)):
        return results_eval.eval_image(st, path, k, kind)
    out, rows = _rows(st, path)
    if not 0 <= k < len(rows):
        raise FieldError("k", f"row {k} is out of range")
    r = rows[k]
    if kind in ("heatmap", "mask"):
        if not r[kind]:
            raise FieldError("kind", f"this 'detect predict' run wrote no {kind} for row {k} (--heatmaps none)")
        img = as_rgb8(read_image(st.paths.resolve(f"{path}/{r[kind]}", must_exist=True)))
    else:
        src = _source(st, out, r["file"])
        if not _inside(st, src):
            raise FieldError("path", "the scored image lies outside the project; it is not shown")
        if kind == "image":
            img = as_rgb8(read_image(src))
        else:
            s = _gt(st, dataset).get(str(src))
            if s is None:
                raise FieldError("dataset", "no ground truth for this image in the chosen dataset")
            m = s.mask_or_empty()
            img = np.repeat((m.astype(np.uint8) * 255)[..., None], 3, axis=2)
    return png_response(fit(img, size))


def _source(st, out: Path, file: str) -> Path:
    """The scored image: absolute as written, or relative to where ``predict`` most likely ran
    (the project folder, else the output's parent)."""
    p = Path(file)
    if p.is_absolute():
        return p.resolve()
    for base in (st.paths.root, out.parent):
        if (base / p).exists():
            return (base / p).resolve()
    return (st.paths.root / p).resolve()


def _inside(st, p: Path) -> bool:
    try:
        st.paths.relative(p)
        return True
    except ValueError:
        return False
