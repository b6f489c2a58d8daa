"""Author 2D: one defect on one good image, placed by a click (a disk-shaped region of
interest around it) or a drawn mask (the region itself), previewed with the label derived
from the pixel change, and accepted into a synthetic set (:mod:`.synthset`).

Generation goes through :func:`defectforge.synth2d.engine.prepare` and ``Engine.make`` (a
:class:`~defectforge.synth2d.record.SynthRecord`),
the same code the ``synth`` command runs, so a preview is exactly the sample a run with
the same config, seed and region would write.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from defectforge.errors import InputError
from defectforge.studio import forms
from defectforge.studio.data_api import _sample, fit, png_response, studio

router = APIRouter(prefix="/api")
MAX_MASK_BYTES = 8 * 1024 * 1024


@router.get("/generators")
def generators() -> dict[str, Any]:
    return {"generators": [forms.generator_form(n) for n in forms.generator_names()]}


class Preview2D(BaseModel):
    dataset: str
    index: int
    generator: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0)
    click: tuple[float, float] | None = None  # x, y in image pixels
    radius: int = Field(60, ge=4, le=2000)
    mask_png: str | None = None  # drawn region: base64 PNG (data URL allowed), image size
    real_defects: bool = False


def _engine(st, ds_path: Path, ds, split: str, req: Preview2D):
    """A prepared engine for (dataset, split, generator, params, real defects), cached."""
    from defectforge.synth2d.config import parse_config
    from defectforge.synth2d.engine import prepare

    params = forms.project_params(st.paths, req.generator, req.params)  # folder parameters stay in the project
    key = (str(ds_path), split, req.generator, json.dumps(params, sort_keys=True), req.real_defects)
    eng = st.engines.get(key)
    if eng is None:
        forms.make_generator(req.generator, params)  # field-level errors first
        cfg = parse_config({"source": {"path": str(ds_path), "split": split, "real_defects": req.real_defects,
                                       "roi": "none"},
                            "generators": [{"name": req.generator, "params": params}], "n": 1, "seed": 0})
        eng, _facts = prepare(cfg, ds)
        st.engines.put(key, eng)
    return eng


def _region(req: Preview2D, shape: tuple[int, int]) -> np.ndarray | None:
    """The region of interest: the drawn mask, a disk around the click, or None (auto)."""
    H, W = shape
    if req.mask_png:
        data = req.mask_png.split(",", 1)[1] if req.mask_png.startswith("data:") else req.mask_png
        try:
            raw = base64.b64decode(data, validate=False)
        except ValueError:  # binascii.Error: bad padding
            raise forms.FieldError("mask_png", "the drawn mask is not base64 (a PNG data URL)") from None
        if len(raw) > MAX_MASK_BYTES:
            raise forms.FieldError("mask_png", f"drawn mask over {MAX_MASK_BYTES // 2**20} MiB")
        from defectforge.data.image_io import read_image

        with tempfile.TemporaryDirectory() as td:  # decoded with the CLI's checks (bombs refused)
            p = Path(td) / "mask.png"
            p.write_bytes(raw)
            try:
                arr = read_image(p)
            except InputError as exc:  # the server's temp file is no name for the client
                why = exc.problem.replace(str(p), "the mask")
                raise forms.FieldError("mask_png", f"the drawn mask is not a readable PNG ({why})") from None
        m = arr.max(axis=2) > 0 if arr.ndim == 3 else arr > 0
        if m.shape != (H, W):
            m = cv2.resize(m.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
        if not m.any():
            raise forms.FieldError("mask", "the drawn mask is empty: paint the region first")
        return m
    if req.click is not None:
        x, y = req.click
        if not (0 <= x < W and 0 <= y < H):
            raise forms.FieldError("click", f"click ({x:.0f}, {y:.0f}) is outside the {W}x{H} image")
        m = np.zeros((H, W), np.uint8)
        cv2.circle(m, (int(round(x)), int(round(y))), int(req.radius), 1, -1)
        return m > 0
    return None


@router.post("/author2d/preview")
def preview(request: Request, req: Preview2D) -> dict[str, Any]:
    """Generate one sample; returns its id, QC of the derived label, boxes and params."""
    from defectforge.synth2d.engine import _Good

    st = studio(request)
    kind, s = _sample(st, req.dataset, req.index)
    if kind != "2d":
        raise InputError(req.dataset, "Author 2D needs a 2D dataset")
    if s.is_defect:
        raise forms.FieldError("index", f"sample {s.name} is labelled {s.label!r}; pick a good image")
    _, ds = st.dataset(req.dataset)
    ds_path = st.paths.resolve(req.dataset)
    with st.lock:
        eng = _engine(st, ds_path, ds, s.split, req)
        eng.goods = [_Good(s.name, str(s.path) if s.path is not None else None,
                           s.rgb() if s.path is None else None)]
        eng._cache = {}
        img, _ = eng._image(0)
        roi = _region(req, img.shape[:2])
        eng.roi = roi if roi is not None else "auto"
        eng._cache = {}
        eng.seed = req.seed
        rec = eng.make(0, encode=True)
    if rec.status == "error":
        raise InputError(None, rec.error)
    pid = st.new_id()
    out = {"id": pid, "accepted": rec.ok, "rejects": list(rec.rejects), "seed": rec.seed,
           "generator": rec.generator, "label": rec.label, "source": s.name,
           "width": int(img.shape[1]), "height": int(img.shape[0])}
    if rec.ok:
        out.update(qc=rec.qc, boxes=rec.boxes, params=rec.params,
                   n_label_pixels=int((_decode(rec.mask_png) > 0).sum()))
        st.previews.put(pid, {"rec": rec, "source": {"path": st.paths.relative(ds_path), "split": s.split,
                                                      "generator": {"name": req.generator, "params": req.params},
                                                      "real_defects": req.real_defects}})
    else:
        out["reason"] = f"no accepted sample in {len(rec.rejects)} attempts"
    return out


def _decode(png: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    return arr[..., ::-1] if arr.ndim == 3 else arr


@router.get("/author2d/preview/{pid}.png")
def preview_image(request: Request, pid: str, kind: str = "overlay", size: int = 0) -> Response:
    """``kind``: ``image`` (synthetic), ``mask`` (derived label), ``overlay`` (label outline)."""
    from defectforge.report.visual import mask_overlay

    hit = studio(request).previews.get(pid)
    if hit is None:
        raise InputError(None, f"preview {pid} expired; make a new preview")
    rec = hit["rec"]
    img, m = _decode(rec.png), _decode(rec.mask_png) > 0
    if kind == "mask":
        return png_response(fit(m.astype(np.uint8) * 255, size))
    if kind == "overlay":
        img = mask_overlay(img, m, color=(255, 230, 0), alpha=0.0)
    return png_response(fit(img, size))


class Accept2D(BaseModel):
    id: str
    set: str = "studio_sets/default"
    formats: list[str] = Field(default_factory=lambda: ["mvtec"])


@router.post("/author2d/accept")
def accept(request: Request, req: Accept2D) -> dict[str, Any]:
    """Write the preview into set ``req.set`` (inside the project) and rebuild its manifest,
    card and exports."""
    from defectforge.studio.synthset import accept as add

    st = studio(request)
    hit = st.previews.get(req.id)
    if hit is None:
        raise InputError(None, f"preview {req.id} expired; make a new preview")
    out = st.paths.resolve(req.set, write=True)
    if out == st.paths.root:
        raise forms.FieldError("set", "give the set its own folder inside the project")
    with st.lock:
        res = add(out, hit["rec"], hit["source"], req.formats)
    return {**res, "set": st.paths.relative(out)}
