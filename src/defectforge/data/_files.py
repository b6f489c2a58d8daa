"""File helpers shared by the dataset writers and readers.

- :func:`staged_dir`: writers build a whole dataset in a temporary folder beside the
  destination and rename it into place at the end, so an interrupted export never leaves
  a half-written dataset, and a non-empty destination is only replaced on request.
- :func:`unique_name`: file names that stay unique inside one output folder.
- :func:`export_image` / :func:`export_mask`: copy image bytes when the sample has a
  file (JPEGs stay byte-for-byte), else encode the in-memory array.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from defectforge._atomic import atomic_write_bytes
from defectforge.data.image_io import IMAGE_SUFFIXES, write_image, write_mask
from defectforge.data.sample import Sample
from defectforge.errors import InputError


def is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_destination(dst: str | Path, overwrite: bool = False, sources: tuple[Path | None, ...] = ()) -> Path:
    """Refuse a destination that is a file, is non-empty (unless ``overwrite``) or overlaps a source."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise InputError(dst, "destination exists and is not a folder")
    for src in sources:
        if src is not None and _overlaps(Path(src), dst):
            raise InputError(dst, f"destination overlaps the source {src}; choose a separate folder")
    if is_nonempty_dir(dst) and not overwrite:
        raise InputError(dst, "destination folder is not empty (pass overwrite=True / --overwrite to replace it)")
    return dst


@contextlib.contextmanager
def staged_dir(dst: str | Path, overwrite: bool = False, sources: tuple[Path | None, ...] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``dst``; on success it replaces ``dst``.

    On any error the temporary folder is removed and ``dst`` is left as it was.
    """
    dst = check_destination(dst, overwrite, sources)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        yield tmp
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, old / "x")
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def unique_name(stem: str, suffix: str, used: set[str]) -> str:
    """``stem + suffix``, or ``stem_1 + suffix`` ... so that the stem is not in ``used``
    (compared case-insensitively, so exports also work on case-insensitive file systems)."""
    stem = stem or "image"
    cand, k = stem, 1
    while cand.lower() in used:
        cand = f"{stem}_{k}"
        k += 1
    used.add(cand.lower())
    return cand + suffix


def image_suffix(sample: Sample) -> str:
    """The suffix to export the sample's image with: its file's, or ``.png`` for arrays."""
    if sample.image_array is None and sample.path is not None and sample.path.suffix.lower() in IMAGE_SUFFIXES:
        return sample.path.suffix.lower()
    return ".png"


def export_image(sample: Sample, dst: Path) -> Path:
    """Write the sample's image to ``dst``: the file's bytes when it has one, else encoded."""
    if sample.image_array is None and sample.path is not None:
        from defectforge.data.image_io import open_image

        data = sample.path.read_bytes() if sample.path.is_file() else None
        if data is None:
            raise InputError(sample.path, "file not found")
        open_image(data, sample.path).close()  # a corrupt file or a bomb is refused, not copied
        return atomic_write_bytes(dst, data)
    return write_image(dst, sample.image)


def export_mask(mask: np.ndarray, dst: Path) -> Path:
    """Write a boolean mask as a 0/255 PNG."""
    return write_mask(dst, mask)


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """A text file's contents; :class:`InputError` naming the file when it is missing or not
    UTF-8 (every reader of user text files goes through here)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


def read_json(path: Path) -> Any:
    """Parse a JSON file; :class:`InputError` naming the file (and line) when it cannot."""
    import json

    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(path, "JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def image_size(sample: Sample) -> tuple[int, int]:
    """``(height, width)`` of the sample's image, from the file header when possible."""
    if sample.image_array is not None:
        return tuple(sample.image_array.shape[:2])  # type: ignore[return-value]
    if sample.path is None:
        raise ValueError("sample has neither an image array nor a path")
    return header_size(sample.path)


def header_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` as displayed (EXIF orientation applied) from the header only."""
    from defectforge.data.image_io import open_image

    path = Path(path)
    with open_image(path, load=False) as im:
        w, h = im.size
        orient = _orientation(im)
    if orient in (5, 6, 7, 8):
        w, h = h, w
    return h, w


def _orientation(im) -> int:
    """EXIF orientation from the header. For PNG only an ``eXIf`` chunk before the image data
    is seen (where the PNG spec puts it): ``getexif()`` would decode the whole image to look
    further, which made header reads as slow as full decodes."""
    try:
        if im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            from PIL import Image

            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1))
        return int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
