"""COCO instance annotations (boxes, polygons, RLE).

Layout written and read::

    root/annotations/instances_<split>.json
    root/images/<split>/<file_name>

Reading also accepts a single COCO ``.json`` file (its split taken from the file name:
``train``/``val``/``test`` in it, else ``train``) and looks for ``file_name`` beside the
JSON, under ``image_root``, ``root/images/<split>/``, ``root/images/`` and ``root/<split>/``.

Categories become labels (lower-cased); an image without annotations is ``good``; the
sample label is its first annotation's category. Polygons, uncompressed RLE (list counts)
and compressed RLE (string counts) are rasterised and united into ``Sample.mask_array``;
every annotation's ``bbox`` ``[x, y, w, h]`` (pixel edges) becomes a :class:`Box`.
Polygon vertices use the pixel-centre convention of :mod:`defectforge.data.polygons`.

Writing (``mode="rle"``, the default, or ``"polygon"``) gives one annotation per connected component:
``bbox`` and ``area`` from the component's pixels, ``segmentation`` a polygon (holes
filled) or a compressed RLE (exact). Samples with boxes but no mask get box-only
annotations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from defectforge._atomic import atomic_write_json
from defectforge.data._files import export_image, header_size, image_suffix, read_json, staged_dir, unique_name
from defectforge.data.image_io import check_pixels
from defectforge.data.polygons import mask_to_polygons, polygons_to_mask
from defectforge.data.problems import ReadProblems, finite_number, point_problem, strict
from defectforge.data.rle import counts_from_indices, counts_to_string, decode_rle, encode_rle
from defectforge.data.sample import GOOD, Box, Dataset, Sample
from defectforge.errors import InputError

_SPLIT_RE = re.compile(r"(?<![a-z])(train|val|valid|validation|test)", re.IGNORECASE)


def _split_from_name(name: str) -> str:
    m = _SPLIT_RE.search(name.lower())
    if not m:
        return "train"
    s = m.group(1).lower()
    return "val" if s.startswith("val") else s


def load_coco_json(p: Path) -> dict[str, Any]:
    """Parse a COCO file; :class:`InputError` for bad JSON or missing ``images``."""
    data = read_json(p)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(p, "not a COCO file (expected an object with an 'images' list)")
    return data


def _looks_coco(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("images"), list) and (
        "annotations" in data or "categories" in data)


def is_coco_file(p: Path) -> bool:
    """Whether ``p`` parses as a COCO file (``False`` for a file that does not parse: callers that
    must not lose such a file use :func:`coco_files`, which reports it)."""
    try:
        data = read_json(p)
    except InputError:
        return False
    return _looks_coco(data)


def coco_files(root: Path) -> list[Path]:
    """COCO JSON files of a dataset folder: ``annotations/*.json``, else ``*.json``.

    A ``.json`` that does not parse (truncated, not UTF-8) where annotation files are expected
    (in ``annotations/``, or beside COCO files in the folder) raises :class:`InputError`
    naming it: leaving it out would silently drop a whole split."""
    root = Path(root)
    for d in (root / "annotations", root):
        if not d.is_dir():
            continue
        found, broken = [], []
        for p in sorted(d.glob("*.json")):
            if p.name.startswith(".") or not p.is_file():
                continue
            try:
                data = read_json(p)
            except InputError as exc:
                broken.append(exc)
                continue
            if _looks_coco(data):
                found.append(p)
        if broken and (found or d.name == "annotations"):
            raise broken[0]
        if found:
            return found
    return []


def _resolve_image(fn: str, json_path: Path, root: Path, split: str, image_root: Path | None) -> Path:
    fn = fn.replace("\\", "/")
    cands = []
    if image_root is not None:
        cands.append(image_root / fn)
    cands += [json_path.parent / fn, root / fn, root / "images" / split / fn, root / "images" / fn,
              root / split / fn, json_path.parent.parent / "images" / split / fn]
    for c in cands:
        if c.is_file():
            return c
    return cands[0]  # missing: reported by check / on access


def _ann_mask(seg: Any, hw: tuple[int, int], p: Path, aid: Any) -> np.ndarray | None:
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        return None
    try:
        if isinstance(seg, dict):
            if list(seg.get("size") or []) != [hw[0], hw[1]]:  # checked before decoding: no huge allocations
                raise ValueError(f"RLE size {seg.get('size')} (HxW) differs from the image {hw[0]}x{hw[1]}")
            m = decode_rle(seg)
            if m.shape != tuple(hw):
                raise ValueError(f"RLE size {m.shape[0]}x{m.shape[1]} (HxW) differs from the image {hw[0]}x{hw[1]}")
            return m
        if not isinstance(seg, list) or not all(isinstance(poly, list) and len(poly) % 2 == 0 for poly in seg):
            raise ValueError("polygons must be lists of x, y numbers")
        for poly in seg:
            why = point_problem([poly[k:k + 2] for k in range(0, len(poly), 2)], hw)
            if why:
                raise ValueError(why)
        polys = [np.asarray(poly, dtype=float).reshape(-1, 2) for poly in seg]
        return polygons_to_mask(polys, hw)
    except (ValueError, TypeError) as exc:
        raise InputError(p, f"annotation {aid}: bad segmentation ({exc})") from None


def _int_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _id_text(v: Any) -> str:
    return f"{v!r} is a string (COCO ids are integers)" if isinstance(v, str) else f"{v!r} is not an integer"


def _entries(items: Any, what: str, keys: tuple[str, ...], p: Path, problems: ReadProblems) -> list[dict[str, Any]]:
    """The entries of a COCO list (``images``, ``categories``) with integer, unique ids;
    entries without ``keys`` are malformed files (raised), bad ids are label problems."""
    out, seen = [], set()
    for e in items or []:
        if not isinstance(e, dict) or any(k not in e for k in keys):
            raise InputError(p, f"{what} entry without {'/'.join(keys)}: {str(e)[:80]}")
        if not _int_id(e["id"]):
            problems.add(p, f"{what} id {_id_text(e['id'])}")
        elif e["id"] in seen:
            problems.add(p, f"{what} id {e['id']} is used twice")
        else:
            seen.add(e["id"])
            out.append(e)
    return out


def _annotations(data: dict[str, Any], p: Path, image_ids: set[Any], cats: dict[Any, str],
                 problems: ReadProblems) -> dict[Any, list[dict[str, Any]]]:
    """Annotations per image id; orphan, duplicate, mistyped and unknown-category ones are problems."""
    by_image: dict[Any, list[dict[str, Any]]] = {}
    seen: set[Any] = set()
    for a in data.get("annotations") or []:
        if not isinstance(a, dict) or "image_id" not in a:
            raise InputError(p, f"annotation without image_id: {str(a)[:80]}")
        aid, iid = a.get("id"), a["image_id"]
        if aid is not None:
            if aid in seen:
                problems.add(p, f"annotation id {aid} is used twice")
                continue
            seen.add(aid)
        if not _int_id(iid):
            problems.add(p, f"annotation {aid}: image_id {_id_text(iid)}")
            continue
        if iid not in image_ids:
            problems.add(p, f"annotation {aid}: image_id {iid} matches no image")
            continue
        if cats and a.get("category_id") not in cats:
            problems.add(p, f"annotation {aid}: unknown category_id {a.get('category_id')!r} "
                            f"(categories are {sorted(cats)})")
            continue
        by_image.setdefault(iid, []).append(a)
    return by_image


def _bbox(a: dict[str, Any], hw: tuple[int, int], p: Path, problems: ReadProblems) -> tuple[float, ...] | None:
    """``(x, y, w, h)`` of an annotation's bbox, or None (reported) when it is unusable."""
    bb = a.get("bbox")
    aid = a.get("id")
    if not isinstance(bb, list) or len(bb) != 4:
        problems.add(p, f"annotation {aid}: bbox must be [x, y, w, h], got {str(bb)[:60]}")
        return None
    vals = [finite_number(v) for v in bb]
    text = json.dumps(bb)
    if any(v is None for v in vals):
        problems.add(p, f"annotation {aid}: bbox {text} is not finite numbers")
        return None
    x, y, bw, bh = vals  # type: ignore[misc]
    h, w = hw
    if bw <= 0 or bh <= 0:
        problems.add(p, f"annotation {aid}: bbox {text} has a negative or zero width/height")
        return None
    if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
        problems.add(p, f"annotation {aid}: bbox {text} lies outside the {w}x{h} image")
        return None
    return x, y, bw, bh


def read_coco_file(json_path: str | Path, image_root: str | Path | None = None, split: str | None = None,
                   root: Path | None = None, problems: ReadProblems | None = None) -> list[Sample]:
    """Samples of one COCO JSON file.

    Refused (or, when ``problems`` collects, listed and skipped): string, duplicate or
    orphan ids, unknown categories, boxes that are not finite, have no area or lie outside
    the image, and ``file_name`` s outside the dataset folder."""
    problems = strict(problems)
    p = Path(json_path)
    data = load_coco_json(p)
    root = root or (p.parent.parent if p.parent.name == "annotations" else p.parent)
    split = split or _split_from_name(p.stem)
    iroot = Path(image_root) if image_root is not None else None
    cats = {c["id"]: str(c["name"]).strip().lower()
            for c in _entries(data.get("categories"), "category", ("id", "name"), p, problems)}
    images = _entries(data["images"], "image", ("id", "file_name"), p, problems)
    by_image = _annotations(data, p, {im["id"] for im in images}, cats, problems)
    samples: list[Sample] = []
    for im in images:
        if not isinstance(im["file_name"], str) or not im["file_name"].strip():
            problems.add(p, f"image {im['id']}: file_name {im['file_name']!r} is not a file name (COCO file_names "
                            "are strings)")
            continue
        path = _resolve_image(im["file_name"], p, root, split, iroot)
        if problems.outside(path, (root, iroot), p, f"image {im['id']}: file_name {im['file_name']}"):
            continue
        anns = by_image.get(im["id"], [])
        meta: dict[str, Any] = {}
        if not anns:
            samples.append(Sample(label=GOOD, split=split, path=path, meta=meta))
            continue
        h, w = im.get("height"), im.get("width")
        if not (_int_id(h) and _int_id(w) and h > 0 and w > 0):
            h, w = header_size(path)
        check_pixels(p, w, h)  # masks are allocated at this size
        boxes: list[Box] = []
        mask = None
        kept = []
        for a in anns:
            label = cats.get(a.get("category_id"), str(a.get("category_id")))
            try:
                am = _ann_mask(a.get("segmentation"), (h, w), p, a.get("id"))
            except InputError as exc:
                problems.add(p, exc.problem)
                continue
            if a.get("bbox") is not None:
                xywh = _bbox(a, (h, w), p, problems)
                if xywh is None:
                    continue
                x, y, bw, bh = xywh
                boxes.append(Box(x, y, x + bw, y + bh, label))
            elif am is not None and am.any():
                ys, xs = np.nonzero(am)
                boxes.append(Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1), label))
            if am is not None:
                mask = am if mask is None else (mask | am)
            kept.append(a)
        if not kept:
            samples.append(Sample(label=GOOD, split=split, path=path, meta=meta))
            continue
        first = cats.get(kept[0].get("category_id"), str(kept[0].get("category_id")))
        samples.append(Sample(label=first, split=split, path=path, boxes=boxes, mask_array=mask, meta=meta,
                              label_path=p))
    return samples


def read_coco(path: str | Path, image_root: str | Path | None = None, problems: ReadProblems | None = None) -> Dataset:
    """Read a COCO dataset: a JSON file or a folder (``annotations/*.json``)."""
    problems = strict(problems)
    p = Path(path)
    if not p.exists():
        raise InputError(p, "file not found")
    if p.is_file():
        root = p.parent.parent if p.parent.name == "annotations" else p.parent
        return Dataset(read_coco_file(p, image_root, root=root, problems=problems), root=root, format="coco",
                       read_problems=problems.items)
    files = coco_files(p)
    if not files:
        raise InputError(p, "no COCO JSON here (looked for annotations/*.json and *.json with 'images')")
    samples: list[Sample] = []
    for f in files:
        samples += read_coco_file(f, image_root, root=p, problems=problems)
    return Dataset(samples, root=p, format="coco", read_problems=problems.items)


def _flat_poly(poly: np.ndarray) -> list[float]:
    if len(poly) < 3:
        poly = np.concatenate([poly] * 3)[:3]
    return [float(v) for v in poly.reshape(-1)]


def _component_crops(mask: np.ndarray):
    """``((x0, y0, w, h, area), crop)`` per 8-connected component, top-left first (the order of
    :func:`~defectforge.data.polygons.component_masks`); ``crop`` is the component's boolean
    mask inside its box, so per-component work scales with the component, not the image."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((np.asarray(mask) > 0).astype(np.uint8), connectivity=8)
    for i in sorted(range(1, n), key=lambda k: (stats[k][1], stats[k][0])):
        x0, y0, bw, bh, area = (int(v) for v in stats[i][:5])
        yield (x0, y0, bw, bh, area), labels[y0:y0 + bh, x0:x0 + bw] == i


def write_coco(dataset: Dataset, dst: str | Path, mode: str = "rle", overwrite: bool = False) -> Path:
    """Write ``dataset`` as COCO (``annotations/instances_<split>.json`` + ``images/<split>/``)."""
    if mode not in ("polygon", "rle"):
        raise ValueError(f"mode must be 'polygon' or 'rle', not {mode!r}")
    dst = Path(dst)
    types = list(dataset.defect_types)
    for s in dataset:
        for b in s.boxes or []:
            if b.label != GOOD and b.label not in types:
                types.append(b.label)
    cat_id = {t: i + 1 for i, t in enumerate(types)}
    categories = [{"id": i, "name": t, "supercategory": "defect"} for t, i in cat_id.items()]
    with staged_dir(dst, overwrite, (dataset.root,)) as tmp:
        per_split: dict[str, dict[str, Any]] = {}
        used: dict[str, set[str]] = {}
        ann_id = 1
        for s in dataset:
            doc = per_split.setdefault(s.split, {"images": [], "annotations": [], "categories": categories})
            name = unique_name(s.name, image_suffix(s), used.setdefault(s.split, set()))
            export_image(s, tmp / "images" / s.split / name)
            h, w = s.image_array.shape[:2] if s.image_array is not None else header_size(s.path)
            img_id = len(doc["images"]) + 1
            doc["images"].append({"id": img_id, "file_name": name, "width": int(w), "height": int(h)})
            if not s.is_defect:
                continue
            m = s.mask
            if m is not None and m.shape != (h, w):
                raise InputError(s.mask_path or s.path, f"mask is {m.shape[1]}x{m.shape[0]} (WxH) but the image is {w}x{h}")
            cid = cat_id[s.label]
            if m is not None:
                for (x0, y0, bw, bh, area), crop in _component_crops(m):
                    if mode == "rle":
                        cx, cy = np.nonzero(crop.T)  # column-major order, as COCO's RLE
                        idx = (cx.astype(np.int64) + x0) * h + (cy + y0)
                        seg: Any = {"size": [int(h), int(w)], "counts": counts_to_string(counts_from_indices(idx, h * w))}
                    else:
                        comp = np.zeros(m.shape, dtype=bool)
                        comp[y0:y0 + bh, x0:x0 + bw] = crop
                        seg = [_flat_poly(poly) for poly in mask_to_polygons(comp)]
                    doc["annotations"].append({"id": ann_id, "image_id": img_id, "category_id": cid,
                                               "bbox": [x0, y0, bw, bh], "area": area,
                                               "segmentation": seg, "iscrowd": 0})
                    ann_id += 1
            else:
                for b in s.boxes or []:
                    doc["annotations"].append({"id": ann_id, "image_id": img_id,
                                               "category_id": cat_id.get(b.label, cid),
                                               "bbox": [b.x0, b.y0, b.width, b.height], "area": b.area,
                                               "segmentation": [], "iscrowd": 0})
                    ann_id += 1
        for split, doc in per_split.items():
            atomic_write_json(tmp / "annotations" / f"instances_{split}.json", doc)
    return dst
