"""labelme JSON annotations -> masks.

:func:`labelme_to_mask` rasterises every shape of one labelme file (polygons, and
rectangles, circles, lines, points and mask shapes when present) the way labelme itself
does (see :mod:`defectforge.data.polygons`): it reproduces BSData's ``masks/*.png``
from ``labelme/*.json`` pixel for pixel. The sample label is the first shape's label,
lower-cased (``Pitting`` -> ``pitting``).

:func:`read_labelme_folder` reads a folder of labelme files plus their images;
images without a JSON file are ``good``. :func:`write_labelme` writes polygons traced
from masks (one per connected component; holes are filled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from defectforge._atomic import atomic_write_json
from defectforge.data._files import (export_image, header_size, image_suffix, list_images, read_json, staged_dir,
                                     unique_name)
from defectforge.data.image_io import IMAGE_SUFFIXES
from defectforge.data.polygons import draw_shape, mask_to_polygons
from defectforge.data.problems import ReadProblems, point_problem, strict
from defectforge.data.sample import GOOD, Dataset, Sample
from defectforge.errors import InputError


def load_labelme(json_path: str | Path) -> dict[str, Any]:
    """Parse a labelme file; :class:`InputError` for bad JSON or a missing ``shapes`` list."""
    p = Path(json_path)
    data = read_json(p)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise InputError(p, "not a labelme file (expected an object with a 'shapes' list)")
    return data


def looks_labelme(data: Any) -> bool:
    """Whether parsed JSON is a labelme document: an object with ``shapes`` and ``imagePath``."""
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and "imagePath" in data


def is_labelme_file(path: Path) -> bool:
    """Cheap test: a JSON object with ``shapes`` and ``imagePath`` keys (``False`` when it does not parse)."""
    try:
        data = read_json(path)
    except InputError:
        return False
    return looks_labelme(data)


def _shape_hw(data: dict[str, Any], p: Path, shape: tuple[int, int] | None) -> tuple[int, int]:
    from defectforge.data.image_io import check_pixels

    if shape is not None:
        return int(shape[0]), int(shape[1])
    h, w = data.get("imageHeight"), data.get("imageWidth")
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        check_pixels(p, w, h)  # the mask is allocated at this size
        return h, w
    img = _find_image(p, data)
    if img is not None:
        return header_size(img)
    raise InputError(p, "image size unknown (no imageHeight/imageWidth and the image was not found); pass shape=")


def labelme_to_mask(json_path: str | Path, shape: tuple[int, int] | None = None,
                    labels: set[str] | None = None) -> np.ndarray:
    """Boolean ``H x W`` mask, the union of the file's shapes (optionally only ``labels``,
    compared lower-case). ``shape`` (H, W) defaults to ``imageHeight``/``imageWidth``."""
    p = Path(json_path)
    data = load_labelme(p)
    return _mask_from_data(data, p, _shape_hw(data, p, shape), labels)


def _mask_from_data(data: dict[str, Any], p: Path, hw: tuple[int, int], labels: set[str] | None = None,
                    problems: ReadProblems | None = None) -> np.ndarray:
    """Union of the shapes; a shape with NaN/inf/non-number or far-outside vertices is refused
    (or listed and skipped when ``problems`` collects)."""
    from PIL import ImageDraw

    problems = strict(problems)
    im = Image.new("L", (hw[1], hw[0]), 0)
    draw = ImageDraw.Draw(im)
    for i, sh in enumerate(data["shapes"]):
        if not isinstance(sh, dict):
            problems.add(p, f"shape {i}: not an object")
            continue
        why = point_problem(sh.get("points"), hw)
        if why:
            problems.add(p, f"shape {i}: {why}")
            continue
        try:
            if labels is not None and str(sh.get("label", "")).lower() not in labels:
                continue
            draw_shape(draw, sh.get("shape_type") or "polygon", sh["points"],
                       mask_b64=sh.get("mask"), canvas=im)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(p, f"shape {i}: cannot rasterise ({exc.__class__.__name__}: {exc})") from None
    return np.asarray(im, dtype=np.uint8) > 0


def labelme_label(data: dict[str, Any], default: str = "defect") -> str:
    """The first shape's label, lower-cased; ``good`` when there are no shapes."""
    for sh in data.get("shapes", []):
        lab = str(sh.get("label", "")).strip().lower()
        if lab:
            return lab
    return GOOD if not data.get("shapes") else default


def _find_image(json_path: Path, data: dict[str, Any], image_dir: Path | None = None) -> Path | None:
    ip = str(data.get("imagePath") or "").replace("\\", "/")
    name = Path(ip).name if ip else ""
    cands: list[Path] = []
    if image_dir is not None and name:
        cands.append(image_dir / name)
    if ip:
        cands.append(json_path.parent / ip)
    if name:
        cands += [json_path.parent / name, json_path.parent.parent / "images" / name]
    for suf in IMAGE_SUFFIXES:
        cands.append(json_path.with_suffix(suf))
        if image_dir is not None:
            cands.append(image_dir / (json_path.stem + suf))
    for c in cands:
        if c.is_file():
            return c
    return None


def _image_from_data(data: dict[str, Any], p: Path) -> np.ndarray | None:
    b64 = data.get("imageData")
    if not b64:
        return None
    import base64

    from defectforge.data.image_io import _pil_to_array, open_image

    try:
        raw = base64.b64decode(b64)
    except (ValueError, TypeError) as exc:
        raise InputError(p, f"imageData is not base64 ({exc.__class__.__name__})") from None
    return _pil_to_array(open_image(raw, p), p)


def _roots(p: Path, image_dir: Path | None, folder: Path | None = None) -> tuple[Path | None, ...]:
    """Where a labelme file's image may be: its folder (or the dataset folder), ``image_dir``,
    and the sibling ``images/`` folder (BSData's ``labelme/`` + ``images/`` layout)."""
    base = folder if folder is not None else p.parent
    return (base, image_dir, base.parent / "images")


def read_labelme(json_path: str | Path, image_dir: str | Path | None = None, split: str = "train",
                 problems: ReadProblems | None = None, folder: Path | None = None) -> Sample | None:
    """One labelme file as a :class:`Sample` with the rasterised mask in memory.

    An image outside the file's folder, ``image_dir`` and the sibling ``images/`` folder is
    refused (see :mod:`defectforge.data.problems`); with a collecting ``problems`` the file is
    listed and ``None`` returned."""
    problems = strict(problems)
    p = Path(json_path)
    data = load_labelme(p)
    idir = Path(image_dir) if image_dir is not None else None
    img = _find_image(p, data, idir)
    if img is not None and problems.outside(img, _roots(p, idir, folder), p, f"imagePath {data.get('imagePath')}"):
        return None
    arr = None
    if img is None:
        arr = _image_from_data(data, p)
        if arr is None:
            raise InputError(p, f"image {data.get('imagePath')!r} not found and no imageData embedded")
        hw = arr.shape[:2]
    else:
        hw = _shape_hw(data, p, None)
    mask = _mask_from_data(data, p, hw, problems=problems)
    label = labelme_label(data)
    return Sample(label=label, split=split, path=img, image_array=arr,
                  mask_array=mask if label != GOOD else None, label_path=p,
                  meta={} if img is not None else {"name": p.stem})


def read_labelme_folder(folder: str | Path, image_dir: str | Path | None = None, split: str = "train",
                        include_unlabelled: bool = True, problems: ReadProblems | None = None) -> Dataset:
    """Read every ``*.json`` labelme file of ``folder`` (masks rasterised in memory).

    Images are looked up beside the JSON (``imagePath``), in ``image_dir``, or in a sibling
    ``images/`` folder. With ``include_unlabelled``, images in the image folder(s) that have
    no labelme file are added as ``good``. Every sample gets ``split``.
    """
    problems = strict(problems)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder not found" if not folder.exists() else "not a folder")
    idir = Path(image_dir) if image_dir is not None else None
    jsons = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    if not jsons:
        raise InputError(folder, "no labelme *.json files in this folder")
    read = [read_labelme(j, idir, split, problems, folder) for j in jsons]
    samples = [s for s in read if s is not None]
    if include_unlabelled:
        seen = {s.path.resolve() for s in samples if s.path is not None}
        dirs = {s.path.parent for s in samples if s.path is not None}
        if idir is not None:
            dirs.add(idir)
        for d in sorted(dirs):
            for img in list_images(d):
                if img.resolve() not in seen:
                    seen.add(img.resolve())
                    samples.append(Sample(label=GOOD, split=split, path=img))
    return Dataset(samples, root=folder, format="labelme", read_problems=problems.items)


def write_labelme(dataset: Dataset, dst: str | Path, overwrite: bool = False) -> Path:
    """Write images and, for samples with a non-empty mask, a labelme JSON beside each
    (one polygon per connected component, ``imageData`` null). Splits are not kept."""
    dst = Path(dst)
    with staged_dir(dst, overwrite, (dataset.root,)) as tmp:
        used: set[str] = set()
        for s in dataset:
            name = unique_name(s.name, image_suffix(s), used)
            export_image(s, tmp / name)
            m = s.mask
            if m is None or not m.any():
                continue
            shapes = [{"label": s.label, "points": poly.tolist(), "group_id": None,
                       "shape_type": "polygon", "flags": {}} for poly in mask_to_polygons(m)]
            atomic_write_json(tmp / (Path(name).stem + ".json"), {
                "version": "5.0.0", "flags": {}, "shapes": shapes, "imagePath": name,
                "imageData": None, "imageHeight": int(m.shape[0]), "imageWidth": int(m.shape[1]),
            })
    return dst
