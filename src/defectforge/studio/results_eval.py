"""Results of ``detect eval``: open the metrics JSON it wrote (``--json``), sort the per-image
scores, look at image | ground truth | anomaly map | predicted mask on one colour scale, and
move thresholds.

The JSON names the model, the dataset and the split; the samples are listed again by the
evaluation's own :func:`~defectforge.detect.evaluate.validate_eval_samples` (same order as
``per_image``). Maps are not stored by ``eval``, so the map of the image being looked at is
computed again by the evaluation's own chunk scorer (:class:`~defectforge.detect.evaluate.ScoreTask`,
same model file, same evaluation size) and cached. The colour scale is the run's
(:func:`defectforge.report.panels.map_scale` at the model's pixel threshold, which lands at
the middle of the scale; fixed by the first image's map when there is no positive pixel
threshold), so every image is drawn on the same scale. The browser gets the raw
map (float32) and redraws the predicted mask itself when a threshold moves: a pixel is
predicted defect when its map value reaches the pixel threshold and the image's score reaches
the image threshold (an image predicted good has no predicted region).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.responses import Response

from defectforge.detect.evaluate import model_input_size
from defectforge.errors import InputError
from defectforge.studio.data_api import png_response, studio
from defectforge.studio.forms import FieldError
from defectforge.studio.state import b64

def is_eval_output(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".json"


def _read(st, rel: str) -> tuple[Path, dict[str, Any]]:
    f = st.paths.resolve(rel, must_exist=True)
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InputError(f, "not valid JSON: open a 'detect eval --json' output") from None
    if not isinstance(data, dict) or not isinstance(data.get("per_image"), list):
        raise FieldError("path", f"{rel} has no per-image scores: open a 'detect eval --json' output")
    for k, r in enumerate(data["per_image"]):  # a hand-edited or foreign file: one line, not a 500
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            raise InputError(f, f"per_image[{k}] has no 'name' (a string)")
        score = r.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or score != score:
            raise InputError(f, f"per_image[{k}] ({r['name']}): score {score!r} is not a number")
    return f, data


def _local(st, given: str | None) -> Path | None:
    """A path recorded in the JSON (absolute, or relative to where the CLI ran: the project)
    when it lies inside the project or a mount; None otherwise."""
    if not given:
        return None
    p = Path(given)
    p = p if p.is_absolute() else st.paths.root / p
    try:
        st.paths.relative(p)
    except ValueError:
        return None
    return p.resolve() if p.exists() else None


def _samples(st, data: dict[str, Any]) -> list[Any] | None:
    """The evaluated samples in ``per_image`` order (None when the dataset is not reachable)."""
    from defectforge.data.formats import load_dataset
    from defectforge.detect.evaluate import validate_eval_samples

    where = _local(st, data.get("data"))
    if where is None:
        return None
    key = ("eval-samples", str(where), where.stat().st_mtime, data.get("split"))
    hit = st.datasets.get(key)
    if hit is None:
        pixel = data.get("pixel_metrics") != "not computed (--image-only)"
        hit = validate_eval_samples(load_dataset(where), data.get("split", "test"), pixel)
        st.datasets.put(key, hit)
    names = [r.get("name") for r in data["per_image"]]
    if [s.name for s in hit] != names:
        raise InputError(where, "the dataset no longer holds the evaluated images (names differ from the JSON)")
    return hit


def results_of_eval(st, rel: str) -> dict[str, Any]:
    f, data = _read(st, rel)
    samples = _samples(st, data)
    items = []
    for k, r in enumerate(data["per_image"]):
        defect = None if samples is None else bool(samples[k].is_defect)
        items.append({"k": k, "name": r["name"], "label": r.get("label"), "score": float(r["score"]),
                      "defect": defect if defect is not None else (r.get("label") not in (None, "good"))})
    model = _local(st, data.get("model"))
    keys = ("image_auroc", "pixel_auroc", "aupro", "image_ap", "f1_max", "n_images")
    return {"kind": "eval", "items": items, "threshold": data.get("threshold"),
            "pixel_threshold": data.get("pixel_threshold"), "matched": len(items) if samples is not None else 0,
            "maps": bool(model is not None and samples is not None), "metrics": {k: data.get(k) for k in keys},
            "split": data.get("split"), "detector": data.get("detector")}


def _scored(st, rel: str, k: int) -> tuple[Any, np.ndarray, np.ndarray | None, float, Any]:
    """(sample, map at the eval size, ground truth at that size, score, scale) of row ``k``."""
    from defectforge.detect.base import load_detector
    from defectforge.detect.evaluate import ScoreTask

    f, data = _read(st, rel)
    samples = _samples(st, data)
    model_path = _local(st, data.get("model"))
    if samples is None or model_path is None:
        raise FieldError("path", "the model or the dataset named in the JSON is not inside the project: maps "
                                 "cannot be shown (scores can)")
    if not 0 <= k < len(samples):
        raise FieldError("k", f"row {k} is out of range")
    key = ("eval-map", str(f), f.stat().st_mtime, k)
    hit = st.previews.get(key)
    if hit is None:
        mkey = ("model", str(model_path), model_path.stat().st_mtime)
        det = st.engines.get(mkey)
        if det is None:
            det = load_detector(model_path, progress=False)
            st.engines.put(mkey, det)
        size = tuple(data.get("eval_size") or model_input_size(det))
        with st.lock:  # one prediction at a time: the model is shared
            scores, maps, masks, _ = ScoreTask(None, size, det, True)((0, [samples[k]]))
        if not maps:
            raise FieldError("path", f"{data.get('detector')} gives no anomaly maps")
        hit = (maps[0].astype(np.float32), masks[0], float(scores[0]))
        st.previews.put(key, hit)
    return samples[k], hit[0], hit[1], hit[2], _scale(st, rel, data, k, hit[0])


def _scale(st, rel: str, data: dict[str, Any], k: int, amap: np.ndarray):
    """The run's one colour scale: ``0 .. 2 x pixel threshold`` when that is positive, else
    fixed by the first row's map (the same for every image either way)."""
    from defectforge.report.panels import map_scale

    pthr = data.get("pixel_threshold")
    if pthr is not None and np.isfinite(pthr) and pthr > 0:
        return map_scale(float(pthr))
    first = amap if k == 0 else _scored(st, rel, 0)[1]
    return map_scale(None if pthr is None else float(pthr), [first])


def eval_map(st, rel: str, k: int) -> dict[str, Any]:
    _, amap, _, score, scale = _scored(st, rel, k)
    return {"h": int(amap.shape[0]), "w": int(amap.shape[1]), "map": b64(amap.astype(np.float32)),
            "score": score, "scale": scale.to_dict()}


def eval_image(st, rel: str, k: int, kind: str) -> Response:
    """``image`` | ``gt`` | ``heatmap`` | ``colorbar``, all at the evaluation size."""
    from defectforge.data.image_io import as_rgb8
    from defectforge.detect.evaluate import _resize
    from defectforge.report.panels import colorbar, colorize

    s, amap, gt, _, scale = _scored(st, rel, k)
    if kind == "image":
        return png_response(_resize(as_rgb8(s.rgb()), amap.shape[:2]))
    if kind == "gt":
        m = np.zeros(amap.shape[:2], bool) if gt is None else gt
        return png_response(np.repeat((m.astype(np.uint8) * 255)[..., None], 3, axis=2))
    if kind == "heatmap":
        return png_response(colorize(amap, scale))
    if kind == "colorbar":
        return png_response(colorbar(max(240, amap.shape[0]), scale))
    raise FieldError("kind", "kind must be image, gt, heatmap or colorbar")
