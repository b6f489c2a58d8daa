"""Dataset checks: counts, image sizes, mask statistics and problems.

:func:`check_dataset` reads each image's **header only** (PIL, lazily: size and EXIF
orientation) and hashes its bytes; it fully decodes masks only. Problems found:

- ``unreadable``: an image or mask that is missing or cannot be opened;
- ``size mismatch``: a mask whose size differs from its image's;
- ``empty mask``: a defect image whose mask has no defect pixel;
- ``missing mask``: a defect image with neither a mask nor boxes;
- ``mask on good image`` (warning): a non-empty mask given for a ``good`` image;
- ``non-binary mask`` (warning): a mask file with more than two values;
- ``duplicate``: an image file with the same bytes as an earlier one;
- ``listed twice``: the same image file listed more than once;
- ``unknown split`` (warning): a split other than train/val/test (``Test``, ``valid``);
- ``bad label`` / ``outside root``: what the reader skipped (broken COCO ids, boxes and
  categories, YOLO lines, labelme vertices; files outside the dataset folder), see
  :mod:`defectforge.data.problems`.

Each problem is ``{"file": ..., "problem": ..., "kind": ..., "severity": "error"|"warning"}``.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from defectforge.data.image_io import NonBinaryMaskWarning, open_image, read_mask
from defectforge.data.problems import ReadProblems
from defectforge.data.sample import Dataset, Sample
from defectforge.errors import InputError


KNOWN_SPLITS = ("train", "val", "test")


@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``ok`` is true when ``problems`` is empty."""

    format: str
    root: str | None
    counts: dict[str, int]
    image_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> number of images
    mask_stats: dict[str, dict[str, float]] = field(default_factory=dict)  # type -> n/min/median/max area fraction
    problems: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _header(data: bytes, path: Path) -> tuple[int, int]:
    """``(height, width)`` as displayed, from the image header in ``data``."""
    with open_image(data, path, load=False) as im:
        w, h = im.size
        try:
            orient = im.getexif().get(0x0112, 1)
        except Exception:
            orient = 1
    return (w, h) if orient in (5, 6, 7, 8) else (h, w)


def _full_decode(data: bytes, path: Path) -> None:
    open_image(data, path).close()


def check_dataset(data: str | Path | Dataset, format: str | None = None, decode: bool = False,
                  progress: Callable[[str, int, int | None], None] | None = None,
                  allow_outside_root: bool = False) -> CheckReport:
    """Check a dataset (a path of any supported format, or a :class:`Dataset`).

    ``decode=True`` also fully decodes every image (finds truncated files; slower).
    ``progress("check", done, total)`` is called after each sample. A path is read with a collecting
    :class:`~defectforge.data.problems.ReadProblems`, so broken labels and files outside the
    dataset folder are listed (kinds ``bad label`` / ``outside root``) rather than raised.
    """
    if isinstance(data, Dataset):
        ds = data
    else:
        from defectforge.data.formats import load_dataset

        ds = load_dataset(data, format, problems=ReadProblems(collect=True, allow_outside_root=allow_outside_root))
    problems: list[dict[str, str]] = list(ds.read_problems)

    def problem(file: Any, kind: str, text: str, severity: str = "error") -> None:
        problems.append({"file": str(file), "problem": text, "kind": kind, "severity": severity})

    sizes: dict[str, int] = {}
    fractions: dict[str, list[float]] = {}
    seen_paths: dict[Path, Sample] = {}
    seen_hash: dict[str, Path] = {}
    total = len(ds)
    for i, s in enumerate(ds):
        hw = _check_image(s, problem, seen_paths, seen_hash, decode)
        if hw is not None:
            key = f"{hw[1]}x{hw[0]}"
            sizes[key] = sizes.get(key, 0) + 1
        _check_mask(s, hw, problem, fractions)
        if progress is not None:
            progress("check", i + 1, total)
    for split in sorted({s.split for s in ds} - set(KNOWN_SPLITS)):
        n = sum(s.split == split for s in ds)
        problem(ds.root or split, "unknown split",
                f"{n} image(s) have split {split!r}, not one of {', '.join(KNOWN_SPLITS)}; commands that take a split "
                "(test by default) leave them out", "warning")
    stats = {t: {"n": len(v), "min": float(np.min(v)), "median": float(np.median(v)), "max": float(np.max(v))}
             for t, v in sorted(fractions.items())}
    return CheckReport(format=ds.format, root=None if ds.root is None else str(ds.root), counts=ds.counts(),
                       image_sizes=dict(sorted(sizes.items(), key=lambda kv: -kv[1])), mask_stats=stats,
                       problems=problems)


def _check_image(s: Sample, problem: Callable[..., None], seen_paths: dict[Path, Sample],
                 seen_hash: dict[str, Path], decode: bool) -> tuple[int, int] | None:
    if s.image_array is not None:
        return tuple(s.image_array.shape[:2])  # type: ignore[return-value]
    if s.path is None:
        problem(s.name, "unreadable", "sample has neither a file nor an image array")
        return None
    key = s.path.resolve()
    if key in seen_paths:
        first = seen_paths[key]
        problem(s.path, "listed twice", f"listed twice (also as {first.split}/{first.label})")
        return None
    seen_paths[key] = s
    if not s.path.is_file():
        problem(s.path, "unreadable", "image file not found")
        return None
    data = s.path.read_bytes()
    digest = hashlib.sha1(data).hexdigest()
    if digest in seen_hash:
        problem(s.path, "duplicate", f"same bytes as {seen_hash[digest]}")
    else:
        seen_hash[digest] = s.path
    try:
        hw = _header(data, s.path)
        if decode:
            _full_decode(data, s.path)
    except InputError as exc:
        problem(s.path, "unreadable", exc.problem)
        return None
    except Exception as exc:  # any decoder failure means the file is unusable
        problem(s.path, "unreadable", f"unreadable or corrupt image ({exc.__class__.__name__}: {exc})")
        return None
    return hw


def _check_mask(s: Sample, hw: tuple[int, int] | None, problem: Callable[..., None],
                fractions: dict[str, list[float]]) -> None:
    m = None
    if s.mask_array is not None:
        m = s.mask_array
    elif s.mask_path is not None:
        if not s.mask_path.is_file():
            problem(s.mask_path, "unreadable", "mask file not found")
            return
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NonBinaryMaskWarning)
                m = read_mask(s.mask_path)
            if any(issubclass(w.category, NonBinaryMaskWarning) for w in caught):
                problem(s.mask_path, "non-binary mask",
                        "mask is not binary (more than two values; non-zero counts as defect)", "warning")
        except InputError as exc:
            problem(s.mask_path, "unreadable", exc.problem)
            return
    if m is None:
        if s.is_defect and not s.boxes:
            problem(s.path or s.name, "missing mask", f"defect image ({s.label}) has no mask")
        return
    where = s.mask_path or s.path or s.name
    if hw is not None and tuple(m.shape[:2]) != tuple(hw):
        problem(where, "size mismatch",
                f"mask is {m.shape[1]}x{m.shape[0]} (WxH) but the image is {hw[1]}x{hw[0]}")
        return
    n = int(np.count_nonzero(m))
    if s.is_defect:
        if n == 0:
            problem(where, "empty mask", f"defect image ({s.label}) has an empty mask")
        else:
            fractions.setdefault(s.label, []).append(n / m.size)
    elif n > 0:
        problem(where, "mask on good image", f"good image has a non-empty mask ({n} defect pixels)", "warning")
