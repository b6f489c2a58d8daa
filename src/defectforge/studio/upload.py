"""Uploads: an image, a mask or a cloud/mesh file from the browser into the project folder.

``PUT /api/upload?path=datasets/mine/good/x.png&kind=image`` with the file as the request
body. The body limit is :data:`UPLOAD_MAX` (checked by the app's body-limit middleware by the
declared length and by counting what arrives). The destination is a client path resolved
inside the project (never into the sample or a mount, no ``..``, no absolute path, no symlink
escape); its suffix must be one the readers know. The bytes go to a hidden temporary file
beside the destination and are decoded there by the CLI's own readers
(:func:`defectforge.data.image_io.read_image` / ``read_mask`` with the pixel limit and PIL's
decompression-bomb check, :func:`defectforge.synth3d.cloud_io.read_cloud`); only a file that
decodes is renamed into place (atomic), otherwise it is deleted and the answer is HTTP 400 with
one line ``<name>: <problem>``. An existing file is replaced only with ``overwrite=1``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from defectforge.errors import DefectforgeError
from defectforge.studio.data_api import studio
from defectforge.studio.forms import FieldError

router = APIRouter(prefix="/api")
UPLOAD_MAX = 64 * 1024 * 1024
KINDS = ("image", "mask", "cloud")


def _suffixes(kind: str) -> tuple[str, ...]:
    from defectforge.data.image_io import IMAGE_SUFFIXES
    from defectforge.synth3d.cloud_io import CLOUD_SUFFIXES, MESH_SUFFIXES

    return CLOUD_SUFFIXES + MESH_SUFFIXES if kind == "cloud" else IMAGE_SUFFIXES


def _decode(kind: str, tmp: Path, image: Path | None) -> dict[str, Any]:
    """Decode the uploaded file with the CLI's readers; what the page shows about it."""
    import warnings

    if kind == "cloud":
        from defectforge.synth3d.cloud_io import read_cloud

        pc = read_cloud(tmp)
        return {"n_points": int(len(pc.points))}
    if kind == "mask":
        from defectforge.data.image_io import read_image, read_mask

        shape = None if image is None else read_image(image).shape[:2]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = read_mask(tmp, shape)
        return {"shape": list(m.shape), "defect_pixels": int(m.sum()),
                "warnings": [str(w.message).split(": ", 1)[-1] for w in caught]}
    from defectforge.data.image_io import read_image

    arr = read_image(tmp)
    return {"shape": list(arr.shape), "dtype": str(arr.dtype)}


@router.put("/upload")
async def upload(request: Request, path: str, kind: str = "image", overwrite: int = 0, image: str = "") -> dict[str, Any]:
    """Store the request body at ``path`` (see the module docstring); ``image``: for a mask,
    the image it belongs to (its size is checked)."""
    import anyio

    body = await request.body()  # at most UPLOAD_MAX bytes: the middleware refused anything larger
    return await anyio.to_thread.run_sync(_store, studio(request), path, kind, bool(overwrite), image, body)


def _store(st, path: str, kind: str, overwrite: bool, image: str, body: bytes) -> dict[str, Any]:
    if kind not in KINDS:
        raise FieldError("kind", f"upload kind must be one of {', '.join(KINDS)}")
    dst = st.paths.resolve(path, write=True)
    if dst.suffix.lower() not in _suffixes(kind):
        raise FieldError("path", f"{dst.name}: a {kind} needs one of the suffixes {', '.join(_suffixes(kind))}")
    if dst.is_dir() or (dst.exists() and not overwrite):
        raise FieldError("path", f"{path} already exists (upload with overwrite to replace it)")
    if not body:
        raise FieldError("file", f"{dst.name}: empty upload")
    img = st.paths.resolve(image, must_exist=True) if image else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".upload-{uuid.uuid4().hex[:8]}{dst.suffix.lower()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            info = _decode(kind, tmp, img)
        except DefectforgeError as exc:
            problem = str(exc).replace(str(tmp), dst.name).splitlines()[0]
            if not problem.startswith(dst.name):
                problem = f"{dst.name}: {problem}"
            raise FieldError("file", problem) from None
        except Exception as exc:  # a reader that failed in an unexpected way: still one line, still refused
            raise FieldError("file", f"{dst.name}: cannot be decoded ({exc.__class__.__name__})") from None
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": st.paths.relative(dst), "kind": kind, "bytes": len(body), **info}
