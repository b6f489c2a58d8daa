"""Review: accept or reject generated samples of a synthetic set, with their QC and filter
scores and real defect crops beside them at the same zoom.

Decisions live in ``SET/.synth/review.json`` (``{index: "accepted" | "rejected"}``). After each
decision (with the run folder locked) ``manifest.csv`` and the exports are rebuilt from the journal without the rejected
samples, so every reader (``detect fit --synthetic``, ``train-detector --synthetic``,
``filter``, exports) honours them; images, masks and the journal stay, so a decision can be
undone. A rerun or resume of ``synth`` on the folder keeps honouring them (the synth
pipeline's :func:`~defectforge.synth2d.export.write_listing` reads the same file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from defectforge._atomic import atomic_write_json
from defectforge.errors import InputError
from defectforge.studio.data_api import png_response, studio
from defectforge.studio.forms import FieldError

router = APIRouter(prefix="/api")
DECISIONS = ("accepted", "rejected", "undecided")


def _set(st, rel: str) -> Path:
    from defectforge.runfolder import RUN_FILE
    from defectforge.synth2d.pipeline import STATE

    out = st.paths.resolve(rel, must_exist=True)
    if not (out / STATE / RUN_FILE).is_file():
        raise FieldError("set", f"{rel} is not a synthetic set (no .synth/run.json): make one with synth, "
                                "a job or Author 2D")
    return out


def _records(out: Path) -> list:
    """The accepted samples' records (files intact), in index order, from the run's journal."""
    from defectforge.synth2d.pipeline import read_records

    done = read_records(out)
    return [done[i] for i in sorted(done) if done[i].ok]


def decisions(out: Path) -> dict[str, str]:
    from defectforge.synth2d.export import review_decisions
    from defectforge.synth2d.pipeline import STATE

    return review_decisions(out / STATE)


def apply(rf, decided: dict[str, str]) -> int:
    """Save ``decided`` and rebuild ``manifest.csv`` and the exports of the (opened) run
    folder ``rf`` without rejected samples (the synth pipeline's own
    :func:`~defectforge.synth2d.export.write_listing`); returns the number of samples kept."""
    from defectforge.studio.synthset import formats_of
    from defectforge.synth2d.export import REVIEW, write_listing

    atomic_write_json(rf.state_dir / REVIEW, dict(sorted(decided.items(), key=lambda kv: int(kv[0]))))
    kept, _ = write_listing(rf.path, rf.state_dir, _records(rf.path), formats_of(rf))
    return len(kept)


@router.get("/review")
def review(request: Request, set: str) -> dict[str, Any]:
    out = _set(studio(request), set)
    dec = decisions(out)
    items = []
    for r in _records(out):
        items.append({"index": r.index, "file": r.file, "label": r.label, "generator": r.generator,
                      "source": r.source, "qc": r.qc, "decision": dec.get(str(r.index), "undecided")})
    counts = {d: sum(it["decision"] == d for it in items) for d in DECISIONS}
    return {"set": set, "items": items, "counts": counts}


class Decide(BaseModel):
    set: str
    index: int
    decision: str


@router.post("/review/decide")
def decide(request: Request, req: Decide) -> dict[str, Any]:
    st = studio(request)
    if req.decision not in DECISIONS:
        raise FieldError("decision", f"decision must be one of {', '.join(DECISIONS)}")
    out = _set(st, req.set)
    if req.index not in {r.index for r in _records(out)}:
        raise FieldError("index", f"sample {req.index} is not in the set")
    from defectforge.studio.synthset import reopen

    with st.lock, reopen(out) as rf:  # refused while a job writes the folder
        dec = decisions(out)
        if req.decision == "undecided":
            dec.pop(str(req.index), None)
        else:
            dec[str(req.index)] = req.decision
        kept = apply(rf, dec)
    return {"index": req.index, "decision": req.decision, "kept": kept}


def _window(img: np.ndarray, mask: np.ndarray | None, size: int) -> np.ndarray:
    """A ``size`` x ``size`` window (no scaling: same zoom for every crop) centred on the mask."""
    H, W = img.shape[:2]
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        cy, cx = int(ys.mean()), int(xs.mean())
    else:
        cy, cx = H // 2, W // 2
    h, w = min(size, H), min(size, W)
    y0, x0 = int(np.clip(cy - h // 2, 0, H - h)), int(np.clip(cx - w // 2, 0, W - w))
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])


@router.get("/review/crop")
def crop(request: Request, set: str, index: int, size: int = 192, outline: int = 1) -> Response:
    from defectforge.report.visual import mask_overlay

    out = _set(studio(request), set)
    rec = next((r for r in _records(out) if r.index == index), None)
    if rec is None:
        raise FieldError("index", f"sample {index} is not in the set")
    s = rec.to_sample(out)
    img, m = s.rgb(), s.mask
    if outline:
        img = mask_overlay(img, m, color=(255, 230, 0), alpha=0.0)
    return png_response(_window(img, m, max(32, min(size, 1024))))


@router.get("/review/real")
def real_crop(request: Request, real: str, label: str, k: int = 0, size: int = 192) -> Response:
    """The ``k``-th real defect of ``label`` (train split only; any label when none match),
    in a window of the same size as the synthetic crops."""
    st = studio(request)
    kind, ds = st.dataset(real)
    if kind != "2d":
        raise FieldError("real", "real defects come from a 2D dataset")
    pool = [s for s in ds if s.split == "train" and s.is_defect and s.mask_path is not None]
    same = [s for s in pool if s.label == label] or pool
    if not same:
        raise FieldError("real", f"{real} has no labelled train-split defects with masks")
    s = same[k % len(same)]
    return png_response(_window(s.rgb(), s.mask, max(32, min(size, 1024))))


class Scores(BaseModel):
    set: str
    real: str


@router.post("/review/scores")
def scores(request: Request, req: Scores) -> dict[str, Any]:
    """Filter scores (realism distance, fidelity, diversity) of every sample, against the
    real set's train-split defects: :func:`defectforge.filter.scores.score_samples`."""
    from defectforge.filter.scores import score_samples

    st = studio(request)
    out = _set(st, req.set)
    kind, ds = st.dataset(req.real)
    if kind != "2d":
        raise FieldError("real", "real defects come from a 2D dataset")
    reals = [s for s in ds if s.split == "train" and s.is_defect and (s.mask_path is not None or s.boxes)]
    recs = _records(out)
    rows = score_samples([r.to_sample(out) for r in recs], reals)
    keys = ("realism_distance", "fidelity", "change_in", "change_out", "diversity")
    return {"scores": {str(rec.index): {k: (round(float(r[k]), 4) if np.isfinite(r[k]) else None)
                                        for k in keys if k in r} for rec, r in zip(recs, rows)}}
