"""Manifest CSV datasets: one row per image, ``file,split,label,mask,...``.

The format of ``shared/datasets/bsdata/split.csv``: ``file`` and ``mask`` are paths
relative to the CSV's folder (``mask`` empty for images without a mask), ``split`` is
``train``/``val``/``test``, ``label`` is ``good`` or a defect type. Any further columns
(``width,height,group`` in BSData) go to :attr:`Sample.meta` as strings and are written
back unchanged. Rows are kept in file order. An optional ``boxes`` column (JSON
``[[x0,y0,x1,y1,label],...]``) keeps the boxes of detection-only samples (no mask).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from defectforge._atomic import atomic_write_text
from defectforge.data._files import export_image, export_mask, image_suffix, staged_dir, unique_name
from defectforge.data.problems import ReadProblems, strict
from defectforge.data.sample import GOOD, Box, Dataset, Sample
from defectforge.errors import InputError

REQUIRED = ("file", "split", "label")
STANDARD = ("file", "split", "label", "mask")
MANIFEST_NAMES = ("split.csv", "manifest.csv")


def find_manifest(path: str | Path) -> Path | None:
    """The manifest CSV for ``path``: the file itself, or ``split.csv``/``manifest.csv`` in it."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return p
    if p.is_dir():
        for name in MANIFEST_NAMES:
            if (p / name).is_file():
                return p / name
    return None


def read_manifest(csv_path: str | Path, problems: ReadProblems | None = None) -> Dataset:
    """Read a manifest CSV (or a folder holding ``split.csv``) into a :class:`Dataset`.

    Raises :class:`InputError` naming the file and line for missing columns, empty
    ``file``/``split``/``label`` cells or rows with the wrong number of cells, and for
    ``file``/``mask`` paths outside the CSV's folder (see :mod:`defectforge.data.problems`).
    """
    problems = strict(problems)
    p = Path(csv_path)
    found = find_manifest(p)
    if found is None:
        if not p.exists():
            raise InputError(p, "file not found")
        raise InputError(p, "no manifest CSV here (looked for a .csv file, or split.csv / manifest.csv in the folder)")
    p = found
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(p, f"not a UTF-8 text file ({exc.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(p, "empty file (expected a header line with file,split,label[,mask,...])") from None
    except csv.Error as exc:
        raise InputError(p, f"line 1: malformed CSV ({exc})") from None
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(p, f"line 1: missing required column(s) {', '.join(missing)} "
                            f"(header is {','.join(header)!r}; expected file,split,label[,mask,...])")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise InputError(p, f"line 1: duplicate column(s) {', '.join(dup)}")
    idx = {h: i for i, h in enumerate(header)}
    extra = [h for h in header if h not in STANDARD]
    root = p.parent
    samples: list[Sample] = []
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise InputError(p, f"line {line}: {len(row)} cells but the header has {len(header)}")
            cells = [c.strip() for c in row]
            for col in REQUIRED:
                if not cells[idx[col]]:
                    raise InputError(p, f"line {line}: empty '{col}'")
            label = cells[idx["label"]]
            mask_rel = cells[idx["mask"]] if "mask" in idx else ""
            nul = next((c for c, v in (("file", cells[idx["file"]]), ("mask", mask_rel)) if "\0" in v), None)
            if nul is not None:  # no file system takes such a name (and pathlib raises on it)
                problems.add(p, f"line {line}: the {nul} path contains a NUL byte")
                continue
            if problems.outside(root / cells[idx["file"]], (root,), p, f"line {line}: file {cells[idx['file']]}"):
                continue
            if mask_rel and problems.outside(root / mask_rel, (root,), p, f"line {line}: mask {mask_rel}"):
                continue
            meta: dict[str, Any] = {h: cells[idx[h]] for h in extra if h != "boxes"}
            boxes = _parse_boxes(p, line, cells[idx["boxes"]], label) if "boxes" in idx else None
            samples.append(Sample(
                label=label,
                split=cells[idx["split"]],
                path=root / cells[idx["file"]],
                mask_path=(root / mask_rel) if mask_rel else None,
                meta=meta,
                boxes=boxes,
            ))
    except csv.Error as exc:
        raise InputError(p, f"line {reader.line_num}: malformed CSV ({exc})") from None
    return Dataset(samples, root=root, format="manifest", read_problems=problems.items)


def _parse_boxes(p: Path, line: int, cell: str, label: str) -> list[Box] | None:
    """The optional ``boxes`` column: JSON ``[[x0, y0, x1, y1, label?], ...]``; empty = none.
    Boxes must be finite with ``x1 > x0`` and ``y1 > y0``."""
    if not cell:
        return None
    try:
        raw = json.loads(cell)
        out = []
        for b in raw:
            lab = str(b[4]) if len(b) > 4 else label
            x0, y0, x1, y1 = (float(v) for v in b[:4])
            if not all(map(math.isfinite, (x0, y0, x1, y1))):
                raise ValueError(f"box {list(b)} is not finite")
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"box {list(b)} has no area (needs x1 > x0 and y1 > y0)")
            out.append(Box(x0, y0, x1, y1, lab))
        return out
    except (ValueError, TypeError, IndexError) as exc:
        raise InputError(p, f"line {line}: malformed 'boxes' cell (expected JSON [[x0,y0,x1,y1,label],...]): {exc}") from None


def _boxes_cell(s: Sample) -> str:
    if s.boxes is None:
        return ""
    return json.dumps([[b.x0, b.y0, b.x1, b.y1, b.label] for b in s.boxes], separators=(",", ":"))


def _rel(path: Path, base: Path) -> str:
    try:
        rel = os.path.relpath(Path(path).resolve(), base.resolve())
    except ValueError:  # different drive
        return Path(path).resolve().as_posix()
    return Path(rel).as_posix()


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def manifest_text(dataset: Dataset, base: Path) -> str:
    """The CSV text for ``dataset`` with paths relative to ``base``."""
    extra: list[str] = []
    if any(s.boxes is not None and s.mask_path is None and s.mask_array is None for s in dataset):
        extra.append("boxes")  # detection-only samples: keep their boxes
    for s in dataset:
        for k, v in s.meta.items():
            if k not in STANDARD and k != "boxes" and k not in extra and _scalar(v):
                extra.append(k)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(STANDARD) + extra)
    for s in dataset:
        if s.path is None:
            raise InputError(None, f"sample {s.name!r} has no file; use export_manifest to write its pixels")
        if s.mask_path is None and s.mask_array is not None:
            raise InputError(s.path, "mask exists only in memory; use export_manifest to write it")
        mask = _rel(s.mask_path, base) if s.mask_path is not None else ""
        row = [_rel(s.path, base), s.split, s.label, mask]
        row += [_boxes_cell(s) if k == "boxes" else "" if s.meta.get(k) is None else str(s.meta.get(k)) if _scalar(s.meta.get(k)) else "" for k in extra]
        w.writerow(row)
    return buf.getvalue()


def write_manifest(dataset: Dataset, csv_path: str | Path, relative_to: str | Path | None = None) -> Path:
    """Write a manifest CSV (atomically) listing the samples' existing files.

    Paths are written relative to ``relative_to`` (default: the CSV's folder), which is
    what :func:`read_manifest` expects when they are equal. Samples whose pixels live
    only in memory cannot be listed: use :func:`export_manifest`.
    """
    csv_path = Path(csv_path)
    base = Path(relative_to) if relative_to is not None else csv_path.parent
    return atomic_write_text(csv_path, manifest_text(dataset, base))


def export_manifest(dataset: Dataset, dst: str | Path, overwrite: bool = False,
                    source: Path | None = None) -> Path:
    """Copy a dataset into ``dst`` as ``images/``, ``masks/`` and ``split.csv``; returns ``dst``.

    Image files are copied byte for byte; masks are written as 0/255 PNGs.
    """
    dst = Path(dst)
    with staged_dir(dst, overwrite, (source or dataset.root,)) as tmp:
        used: set[str] = set()
        out: list[Sample] = []
        for s in dataset:
            name = unique_name(s.name, image_suffix(s), used)
            img_dst = tmp / "images" / name
            export_image(s, img_dst)
            m = s.mask
            mask_dst = None
            if m is not None:
                mask_dst = tmp / "masks" / (Path(name).stem + ".png")
                export_mask(m, mask_dst)
            out.append(Sample(label=s.label, split=s.split, path=dst / "images" / name,
                              mask_path=(dst / "masks" / mask_dst.name) if mask_dst else None,
                              meta=dict(s.meta), boxes=None if m is not None else s.boxes))
        atomic_write_text(tmp / "split.csv", manifest_text(Dataset(out), dst))
    return dst


__all__ = ["read_manifest", "write_manifest", "export_manifest", "find_manifest", "GOOD"]
