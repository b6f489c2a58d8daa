"""Reading and writing images and masks.

``read_image`` returns an ``H x W x C`` array (``C`` is 1 or 3, dtype uint8 or uint16):
8/16-bit, grey/RGB/RGBA (alpha dropped), palette PNGs and EXIF orientation are handled.
``read_mask`` returns a boolean ``H x W`` array: any non-zero value is defect, with a
warning when the file holds more than two distinct values (e.g. a JPEG mask).
Writers are atomic (see :mod:`defectforge._atomic`).

Every image any command reads is opened through :func:`open_image`, which checks the size the
header declares before decoding: more than :func:`max_pixels` pixels (default 64 megapixels,
``DEFECTFORGE_MAX_PIXELS`` to change it) or a PIL decompression bomb is an
:class:`~defectforge.errors.InputError` naming the file, not minutes of decoding, gigabytes
of memory or a traceback.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from defectforge._atomic import atomic_write_bytes
from defectforge.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class NonBinaryMaskWarning(UserWarning):
    """A mask file holds more than two distinct values; non-zero counts as defect."""


#: default for :func:`max_pixels` (8192 x 8192); ``DEFECTFORGE_MAX_PIXELS`` overrides it
DEFAULT_MAX_PIXELS = 8192 * 8192
MAX_PIXELS_ENV = "DEFECTFORGE_MAX_PIXELS"


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def max_pixels() -> int:
    """Largest image (width x height) any command decodes: ``$DEFECTFORGE_MAX_PIXELS`` or 64 Mpx."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise InputError(None, f"{MAX_PIXELS_ENV}={raw!r} is not a number of pixels") from None
    if value <= 0:
        raise InputError(None, f"{MAX_PIXELS_ENV}={raw!r} must be positive")
    return value


def check_pixels(path: str | Path, width: int, height: int) -> None:
    """Refuse an image whose declared size exceeds :func:`max_pixels`."""
    limit = max_pixels()
    if int(width) * int(height) > limit:
        raise InputError(path, f"image is {width}x{height} = {int(width) * int(height):,} pixels, over the limit of "
                               f"{limit:,} (a decompression bomb?); raise {MAX_PIXELS_ENV} if it is genuine")


def open_image(source: str | Path | bytes, path: str | Path | None = None, load: bool = True) -> Image.Image:
    """Open an image with PIL, checking the declared size before any pixel is decoded.

    ``source`` is a path or the file's bytes (``path`` then names it in errors). Unreadable
    files, decompression bombs and images over :func:`max_pixels` raise :class:`InputError`.
    With ``load=False`` only the header is read (the caller closes the image)."""
    where = Path(path) if path is not None else (None if isinstance(source, bytes) else Path(source))
    if not isinstance(source, bytes):
        p = Path(source)
        if not p.exists():
            raise InputError(p, "file not found")
        if not p.is_file():
            raise InputError(p, "not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(where, f"refused: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(where, f"unreadable or corrupt image ({exc.__class__.__name__}: {exc})") from None
    try:
        check_pixels(where, *im.size)
        if load:
            im.load()
    except InputError:
        im.close()
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        im.close()
        raise InputError(where, f"unreadable or corrupt image ({exc.__class__.__name__}: {exc})") from None
    return im


def _open_pil(path: Path) -> Image.Image:
    im = open_image(path)
    try:
        ImageOps.exif_transpose(im, in_place=True)  # no copy when there is nothing to turn
    except Exception:  # broken EXIF: keep the pixels as stored
        pass
    return im


def _pil_to_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
        mode = im.mode
    if mode in ("1", "L"):
        arr = np.asarray(im.convert("L"), dtype=np.uint8)[..., None]
    elif mode == "LA":
        arr = np.asarray(im, dtype=np.uint8)[..., :1]
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im)
        if arr.dtype != np.uint16:
            if arr.min() < 0 or arr.max() > 65535:
                raise InputError(path, f"unsupported pixel range {arr.min()}..{arr.max()} for mode {mode}")
            arr = arr.astype(np.uint16)
        arr = arr[..., None]
    elif mode == "F":
        raise InputError(path, "floating-point images are not supported (expected 8- or 16-bit)")
    elif mode == "RGB":
        arr = np.asarray(im, dtype=np.uint8)  # no converted copy
    elif mode in ("RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    else:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``H x W x C`` (C = 1 or 3), uint8 or uint16."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        # PIL reads 16-bit RGB TIFFs poorly; OpenCV keeps the bit depth.
        import cv2

        if not path.exists():
            raise InputError(path, "file not found")
        try:  # the size limit, from the header, before OpenCV decodes anything
            with Image.open(path) as head:
                check_pixels(path, *head.size)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            pass  # not readable by PIL: OpenCV (or the PIL fallback below) decides
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            return _pil_to_array(_open_pil(path), path)
        if arr.dtype not in (np.uint8, np.uint16):
            raise InputError(path, f"unsupported TIFF sample type {arr.dtype} (expected 8- or 16-bit)")
        if arr.ndim == 2:
            return np.ascontiguousarray(arr[..., None])
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        return np.ascontiguousarray(arr[..., ::-1]) if arr.shape[2] == 3 else arr[..., :1]
    return _pil_to_array(_open_pil(path), path)


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """Any image from :func:`read_image` (or H x W grey) as ``H x W x 3`` uint8."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 + 32767) // 65535
        img = img.astype(np.uint8)
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = np.clip(np.rint(img * (255.0 if img.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        else:
            img = np.clip(img, 0, 255).astype(np.uint8)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img)


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask as a boolean ``H x W`` array; ``shape`` (H, W) is checked when given."""
    path = Path(path)
    arr = read_image(path)
    if arr.shape[2] > 1:
        arr = arr.max(axis=2, keepdims=True)
    arr = arr[..., 0]
    if shape is not None and tuple(arr.shape) != tuple(shape[:2]):
        raise InputError(
            path, f"mask is {arr.shape[1]}x{arr.shape[0]} (WxH) but the image is {shape[1]}x{shape[0]}"
        )
    values = np.unique(arr)
    if values.size > 2:
        warnings.warn(
            f"{path}: mask is not binary ({values.size} distinct values); every non-zero pixel counts as defect",
            NonBinaryMaskWarning,
            stacklevel=2,
        )
    return arr > 0


def encode_image(image: np.ndarray, suffix: str = ".png", quality: int = 95, png_level: int = 6) -> bytes:
    """Encode an ``H x W [x C]`` uint8/uint16 array to bytes in the format named by ``suffix``
    (``quality``: JPEG; ``png_level``: zlib level of 8-bit PNGs, 1 = fastest, 9 = smallest)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    suffix = suffix.lower()
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        import cv2

        ext = ".tif" if suffix in (".tif", ".tiff") else ".png"
        bgr = arr[..., ::-1] if arr.ndim == 3 else arr
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
        if not ok:
            raise ValueError("could not encode 16-bit image")
        return buf.tobytes()
    if arr.dtype != np.uint8:
        raise ValueError(f"cannot encode image of dtype {arr.dtype}")
    im = Image.fromarray(arr)
    bio = io.BytesIO()
    if suffix in (".jpg", ".jpeg"):
        im.save(bio, format="JPEG", quality=quality, subsampling=0)
    elif suffix in (".tif", ".tiff"):
        im.save(bio, format="TIFF", compression="tiff_lzw")
    elif suffix == ".bmp":
        im.save(bio, format="BMP")
    else:
        im.save(bio, format="PNG", compress_level=png_level)
    return bio.getvalue()


def write_image(path: str | Path, image: np.ndarray, quality: int = 95, png_level: int = 6) -> Path:
    """Write an image atomically; format from the suffix (PNG, JPEG, TIFF, BMP)."""
    path = Path(path)
    return atomic_write_bytes(path, encode_image(image, path.suffix or ".png", quality=quality, png_level=png_level))


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Write a boolean mask atomically as a 0/255 8-bit PNG (or TIFF by suffix)."""
    m = (np.asarray(mask) > 0).astype(np.uint8) * 255
    return write_image(path, m)
