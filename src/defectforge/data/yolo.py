"""YOLO detection / segmentation datasets.

Layout::

    root/data.yaml                 names: [pitting, ...]   (list or {id: name})
    root/images/<split>/*.jpg      (or root/<split>/images/)
    root/labels/<split>/*.txt      one object per line, coordinates normalised to [0, 1]:
                                   "cls cx cy w h"              (detection box)
                                   "cls x1 y1 x2 y2 x3 y3 ..."  (segmentation polygon)

An empty or missing label file is a ``good`` image. Reading rasterises polygons into
``Sample.mask_array`` (in memory) and sets ``Sample.boxes`` for every object; a
boxes-only file gives boxes and no mask. The sample label is the first object's class.
Polygon vertices use the pixel-centre convention of :mod:`defectforge.data.polygons`
(``x = x_norm * W``); boxes are pixel edges (``x0 = (cx - w/2) * W``). Coordinates within
the rounding error of 6-decimal normalised values of an integer are snapped to it, so
masks written by :func:`write_yolo` read back exactly.

Writing: ``mode="detect"`` writes one box per connected component of each mask (or the
sample's own boxes when it has no mask); ``mode="segment"`` writes one polygon per
component (holes filled). Good images get an empty ``.txt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from defectforge._atomic import atomic_write_text
from defectforge.data._files import (export_image, header_size, image_suffix, list_images, read_text, staged_dir,
                                     unique_name)
from defectforge.data.polygons import mask_to_polygons, polygon_bbox, polygons_to_mask
from defectforge.data.problems import ReadProblems, strict
from defectforge.data.sample import GOOD, Box, Dataset, Sample, boxes_from_mask
from defectforge.errors import InputError

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def find_yaml(root: Path) -> Path | None:
    for n in YAML_NAMES:
        if (root / n).is_file():
            return root / n
    return None


def _split_dirs(root: Path) -> list[tuple[str, Path]]:
    """``[(split, images folder)]`` for ``images/<split>`` or ``<split>/images`` layouts."""
    out = []
    if (root / "images").is_dir():
        for d in sorted((root / "images").iterdir()):
            if d.is_dir() and d.name.lower() in SPLIT_ALIASES:
                out.append((SPLIT_ALIASES[d.name.lower()], d))
    for name in sorted(SPLIT_ALIASES):
        d = root / name / "images"
        if d.is_dir():
            out.append((SPLIT_ALIASES[name], d))
    out.sort(key=lambda t: ("train", "val", "test").index(t[0]))
    return out


def looks_like_yolo(root: Path) -> bool:
    root = Path(root)
    return root.is_dir() and (find_yaml(root) is not None or
                              ((root / "labels").is_dir() and bool(_split_dirs(root))))


def _read_names(yml: Path | None) -> dict[int, str]:
    if yml is None:
        return {}
    try:
        data = yaml.safe_load(read_text(yml)) or {}
    except yaml.YAMLError as exc:
        raise InputError(yml, f"malformed YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(yml, "expected a mapping with 'names'")
    names = data.get("names")
    if names is None:
        return {}
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        try:
            return {int(k): str(v) for k, v in names.items()}
        except ValueError:
            raise InputError(yml, "'names' keys must be class ids") from None
    raise InputError(yml, "'names' must be a list or a mapping of id -> name")


def _labels_path(img: Path, images_dir: Path) -> Path:
    # images/<split>/a.jpg -> labels/<split>/a.txt ; <split>/images/a.jpg -> <split>/labels/a.txt
    if images_dir.parent.name == "images":
        return images_dir.parent.parent / "labels" / images_dir.name / (img.stem + ".txt")
    return images_dir.parent / "labels" / (img.stem + ".txt")


def _snap(v: np.ndarray, tol: float) -> np.ndarray:
    """Undo the rounding of normalised coordinates: values within ``tol`` of an integer
    pixel coordinate become that integer (PIL floors vertices, so 13.99999 would lose a
    pixel row)."""
    r = np.round(v)
    return np.where(np.abs(v - r) <= tol, r, v)


#: normalised coordinates may exceed [0, 1] by this much (rounding in other tools); clipped
COORD_TOL = 1e-3


def _line_values(parts: list[str], names: dict[int, str]) -> tuple[int, list[float]]:
    """Class id and coordinates of one label line; ValueError with the reason when invalid."""
    try:
        c = float(parts[0])
    except ValueError:
        raise ValueError(f"class {parts[0]!r} is not an integer") from None
    if not np.isfinite(c) or c != int(c):
        raise ValueError(f"class {parts[0]!r} is not an integer")
    cls = int(c)
    vals = []
    for tok in parts[1:]:
        try:
            v = float(tok)
        except ValueError:
            raise ValueError(f"expected numbers, got {' '.join(parts)!r}") from None
        if not np.isfinite(v):
            raise ValueError(f"value {tok} is not finite")
        if not -COORD_TOL <= v <= 1 + COORD_TOL:
            raise ValueError(f"value {tok} is outside [0, 1] (YOLO coordinates are normalised)")
        vals.append(min(max(v, 0.0), 1.0))
    if len(vals) == 4 and (vals[2] <= 0 or vals[3] <= 0):
        raise ValueError("box has zero width or height")
    if not (len(vals) == 4 or (len(vals) >= 6 and len(vals) % 2 == 0)):
        raise ValueError(f"expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...', got {len(vals)} coordinates")
    if cls < 0:
        raise ValueError(f"class {cls} is negative")
    if names and cls not in names:
        raise ValueError(f"class {cls} is not in data.yaml names ({min(names)}..{max(names)})")
    return cls, vals


def parse_label_file(txt: Path, hw: tuple[int, int], names: dict[int, str],
                     problems: ReadProblems | None = None) -> tuple[list[Box], list[tuple[str, np.ndarray]]]:
    """Boxes of every object and the polygons (label, pixel points) of segment lines.

    Lines with a non-integer, negative or unknown class, non-finite or out-of-range
    coordinates or an empty box are refused naming the file and line (or listed and
    skipped when ``problems`` collects)."""
    problems = strict(problems)
    h, w = hw
    tol = 0.5e-6 * max(h, w) * 1.01 + 1e-9  # 6-decimal normalised coordinates
    boxes: list[Box] = []
    polys: list[tuple[str, np.ndarray]] = []
    try:
        text = txt.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.add(txt, f"not a UTF-8 text file ({exc.reason})")
        return boxes, polys
    for ln, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls, vals = _line_values(parts, names)
        except ValueError as exc:
            problems.add(txt, f"line {ln}: {exc}")
            continue
        label = names.get(cls, str(cls)).lower() if names else str(cls)
        if len(vals) == 4:
            cx, cy, bw, bh = vals
            x0, y0, x1, y1 = _snap(np.array([(cx - bw / 2) * w, (cy - bh / 2) * h,
                                             (cx + bw / 2) * w, (cy + bh / 2) * h]), 2 * tol)
            boxes.append(Box(float(x0), float(y0), float(x1), float(y1), label))
        else:
            pts = _snap(np.asarray(vals, dtype=float).reshape(-1, 2) * [w, h], tol)
            polys.append((label, pts))
            x0, y0, x1, y1 = polygon_bbox(pts)
            boxes.append(Box(x0, y0, x1, y1, label))
    return boxes, polys


def read_yolo(root: str | Path, problems: ReadProblems | None = None) -> Dataset:
    """Read a YOLO dataset folder (detection or segmentation labels)."""
    problems = strict(problems)
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "folder not found" if not root.exists() else "not a folder")
    names = _read_names(find_yaml(root))
    splits = _split_dirs(root)
    if not splits:
        raise InputError(root, "no YOLO image folders (looked for images/<split>/ or <split>/images/)")
    samples: list[Sample] = []
    for split, idir in splits:
        for img in list_images(idir):
            txt = _labels_path(img, idir)
            if problems.outside(img, (root,), img, "image") or (
                    txt.is_file() and problems.outside(txt, (root,), txt, "label file")):
                continue
            if not txt.is_file() or not txt.read_bytes().strip():
                samples.append(Sample(label=GOOD, split=split, path=img))
                continue
            hw = header_size(img)
            boxes, polys = parse_label_file(txt, hw, names, problems)
            mask = polygons_to_mask([p for _, p in polys], hw) if polys else None
            label = boxes[0].label if boxes else GOOD
            samples.append(Sample(label=label, split=split, path=img, boxes=boxes,
                                  mask_array=mask))
    return Dataset(samples, root=root, format="yolo", read_problems=problems.items)


def _fmt(v: float) -> str:
    return f"{v:.6f}".rstrip("0").rstrip(".") if v != 0 else "0"


def _label_lines(s: Sample, hw: tuple[int, int], class_id: dict[str, int], mode: str) -> list[str]:
    h, w = hw
    m = s.mask
    lines: list[str] = []
    if m is not None and m.shape != (h, w):
        raise InputError(s.mask_path or s.path, f"mask is {m.shape[1]}x{m.shape[0]} (WxH) but the image is {w}x{h}")
    cid = class_id[s.label]
    if mode == "segment":
        if m is not None:
            for poly in mask_to_polygons(m):
                if len(poly) < 3:  # 1-2 pixel components: repeat points to make a valid polygon
                    poly = np.concatenate([poly] * 3)[:3]
                lines.append(f"{cid} " + " ".join(f"{_fmt(x / w)} {_fmt(y / h)}" for x, y in poly))
        else:
            for b in s.boxes or []:
                c = class_id.get(b.label, cid)
                corners = [(b.x0, b.y0), (b.x1 - 1, b.y0), (b.x1 - 1, b.y1 - 1), (b.x0, b.y1 - 1)]
                lines.append(f"{c} " + " ".join(f"{_fmt(x / w)} {_fmt(y / h)}" for x, y in corners))
        return lines
    boxes = boxes_from_mask(m, s.label) if m is not None else list(s.boxes or [])
    for b in boxes:
        c = class_id.get(b.label, cid)
        lines.append(f"{c} {_fmt((b.x0 + b.x1) / 2 / w)} {_fmt((b.y0 + b.y1) / 2 / h)} "
                     f"{_fmt(b.width / w)} {_fmt(b.height / h)}")
    return lines


def write_yolo(dataset: Dataset, dst: str | Path, mode: str = "detect", overwrite: bool = False) -> Path:
    """Write ``dataset`` as a YOLO folder (``images/``, ``labels/``, ``data.yaml``); returns ``dst``."""
    if mode not in ("detect", "segment"):
        raise ValueError(f"mode must be 'detect' or 'segment', not {mode!r}")
    dst = Path(dst)
    types = dataset.defect_types
    for s in dataset:
        for b in s.boxes or []:
            if b.label != GOOD and b.label not in types:
                types.append(b.label)
    class_id = {t: i for i, t in enumerate(types)}
    with staged_dir(dst, overwrite, (dataset.root,)) as tmp:
        used: dict[str, set[str]] = {}
        for s in dataset:
            name = unique_name(s.name, image_suffix(s), used.setdefault(s.split, set()))
            export_image(s, tmp / "images" / s.split / name)
            lines: list[str] = []
            if s.is_defect:
                hw = tuple(s.image_array.shape[:2]) if s.image_array is not None else header_size(s.path)
                lines = _label_lines(s, hw, class_id, mode)  # type: ignore[arg-type]
            atomic_write_text(tmp / "labels" / s.split / (Path(name).stem + ".txt"),
                              "".join(line + "\n" for line in lines))
        atomic_write_text(tmp / "data.yaml", data_yaml_text(dataset, types))
    return dst


def data_yaml_text(dataset: Dataset, names: list[str]) -> str:
    """The ``data.yaml`` of a YOLO export, as ultralytics reads it: ``train:`` and ``val:``
    (required) and ``test:`` when the dataset has that split, relative to the yaml's folder
    (no ``path:`` key, so the folder can be moved), then ``nc`` and ``names``.

    A dataset without a val split gets ``val:`` = the train images (stated in a comment):
    ultralytics' best-epoch choice is then uninformative, but it never looks at test data.
    """
    present = {s.split for s in dataset}
    head = ""
    if "train" in present:
        spec: dict[str, Any] = {"train": "images/train"}
    else:  # an evaluation-only export: the keys must exist, and must name existing folders
        first = next(sp for sp in ("val", "test") if sp in present)
        spec = {"train": f"images/{first}"}
        head += f"# no train split in the source: train: names the {first} images (for 'yolo val' only)\n"
    if "val" in present:
        spec["val"] = "images/val"
    else:
        spec["val"] = spec["train"]
        head += ("# no val split in the source: val: repeats train: (never the test images); carve a\n"
                 "# val split (e.g. in a manifest) for a meaningful best-epoch choice\n")
    if "test" in present:
        spec["test"] = "images/test"
    spec["nc"] = len(names)
    spec["names"] = list(names)
    return head + yaml.safe_dump(spec, sort_keys=False)
