"""Mask-guided inpainting with a loaded diffusers pipeline, with exact paste-back.

The model repaints a region around the mask at its processing resolution; the result is
resized back and written into a copy of the source **only where the mask is set**, so
every pixel outside the mask is exactly the input (the label stays honest, and the VAE
round trip cannot shift colours elsewhere).

Mask crop ("inpaint only masked", ExDD's ``padding_mask_crop=2``): the mask's bounding box
grown by ``padding_mask_crop`` px and widened to the processing aspect ratio is cut out,
inpainted at full processing resolution and pasted back. diffusers implements this for one
mask per call and only with PIL inputs and ``output_type="pil"``; :func:`inpaint_batch`
does the same crop itself per sample (``native_crop=False``, the default) so a batch can
hold different masks, or hands the crop to diffusers one sample at a time with PIL in/out
(``native_crop=True``, the verbatim ExDD path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import cv2
import numpy as np

from defectforge.errors import ConfigError, InputError

CropAspect = Literal["image", "target"]


@dataclass
class InpaintOutput:
    """One inpainted sample: ``image`` (source with the mask region replaced), ``raw`` (the model
    output over the processed box, before paste-back), ``box`` (y0, x0, y1, x1) of the processed
    region, ``leak`` (mean |raw - source| outside the mask inside the box: what paste-back removed)."""

    image: np.ndarray
    raw: np.ndarray
    box: tuple[int, int, int, int]
    leak: float
    meta: dict[str, Any] = field(default_factory=dict)


def crop_box(mask: np.ndarray, pad: int, aspect: float) -> tuple[int, int, int, int]:
    """Bounding box (y0, x0, y1, x1; end exclusive) of ``mask`` grown by ``pad`` px and widened
    to width/height ``aspect``, kept inside the image (shifted, then clipped if too big).
    Same idea as diffusers' ``get_crop_region``."""
    m = np.asarray(mask, dtype=bool)
    H, W = m.shape
    if not m.any():
        return 0, 0, H, W
    ys, xs = np.nonzero(m)
    y0, y1 = max(0, ys.min() - pad), min(H, ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(W, xs.max() + 1 + pad)
    h, w = y1 - y0, x1 - x0
    if w / h < aspect:  # too tall: widen
        new_w = min(W, int(round(h * aspect)))
        cx = (x0 + x1) / 2
        x0 = int(round(cx - new_w / 2))
        x0 = min(max(0, x0), W - new_w)
        x1 = x0 + new_w
    else:  # too wide: heighten
        new_h = min(H, int(round(w / aspect)))
        cy = (y0 + y1) / 2
        y0 = int(round(cy - new_h / 2))
        y0 = min(max(0, y0), H - new_h)
        y1 = y0 + new_h
    return int(y0), int(x0), int(y1), int(x1)


def processing_size(shape: tuple[int, int], resolution: int | None, multiple: int = 8) -> tuple[int, int]:
    """(height, width) the model runs at: ``resolution`` squared (ExDD: 1024, aspect ignored), or the
    source size rounded down to a multiple of ``multiple`` when ``resolution`` is None."""
    if resolution:
        r = max(multiple, int(resolution) // multiple * multiple)
        return r, r
    h, w = shape
    return max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple)


def _seeded_generators(seeds: Sequence[int]):
    import torch

    # CPU generators: the same seed gives the same noise on every device.
    return [torch.Generator("cpu").manual_seed(int(s) % (2**63)) for s in seeds]


def _resize(arr: np.ndarray, size_hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    h, w = size_hw
    if arr.shape[:2] == (h, w):
        return arr
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if h * w < arr.shape[0] * arr.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(arr, (w, h), interpolation=interp)


def _paste(source: np.ndarray, mask: np.ndarray, raw: np.ndarray,
           box: tuple[int, int, int, int]) -> tuple[np.ndarray, float]:
    """Source with ``raw`` written inside the mask only, and the mean |raw - source| outside it."""
    y0, x0, y1, x1 = box
    out = source.copy()
    region = out[y0:y1, x0:x1]
    m = mask[y0:y1, x0:x1]
    region[m] = raw[m]
    outside = ~m
    diff = np.abs(raw.astype(np.int16) - source[y0:y1, x0:x1].astype(np.int16))
    leak = float(diff[outside].mean()) if outside.any() else 0.0
    return out, leak


def _call_kwargs(pipe, steps: int, guidance_scale: float, strength: float, size_hw: tuple[int, int],
                 extra: dict[str, Any] | None) -> dict[str, Any]:
    from defectforge.synth2d.diffusion.loading import pipeline_kind

    h, w = size_hw
    kw: dict[str, Any] = dict(num_inference_steps=int(steps), guidance_scale=float(guidance_scale),
                              strength=float(strength), height=h, width=w)
    if pipeline_kind(pipe) == "sdxl":
        kw.update(original_size=(h, w), target_size=(h, w))
    kw.update(extra or {})
    return kw


def inpaint_batch(pipe, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], prompts: Sequence[str],
                  negative_prompts: Sequence[str | None], seeds: Sequence[int], *, num_inference_steps: int = 30,
                  guidance_scale: float = 7.5, strength: float = 0.99, padding_mask_crop: int | None = None,
                  resolution: int | None = 1024, crop_aspect: CropAspect = "image", native_crop: bool = False,
                  extra: dict[str, Any] | None = None) -> list[InpaintOutput]:
    """Inpaint each (image, mask) with its prompt and seed; one pipeline call per processing size.

    ``images`` are H x W x 3 uint8, ``masks`` bool H x W (True = repaint). Returns one
    :class:`InpaintOutput` per input, in order; pixels outside each mask equal the source exactly.
    ``extra`` holds further pipeline keywords (e.g. ``aesthetic_score``).
    """
    n = len(images)
    if not (len(masks) == len(prompts) == len(negative_prompts) == len(seeds) == n):
        raise ConfigError("inpaint_batch: images, masks, prompts, negative_prompts and seeds must have equal lengths")
    if num_inference_steps < 1 or not (0 < strength <= 1):
        raise ConfigError(f"need num_inference_steps >= 1 and 0 < strength <= 1 "
                          f"(got {num_inference_steps}, {strength})")
    if int(num_inference_steps * strength) < 1:
        raise ConfigError(f"num_inference_steps x strength = {num_inference_steps * strength:.2f} < 1: "
                          "no denoising step would run; raise steps or strength")
    srcs, ms = [], []
    for i, (img, m) in enumerate(zip(images, masks)):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(None, f"sample {i}: expected an H x W x 3 uint8 image, got {img.shape} {img.dtype}")
        m = np.asarray(m, dtype=bool)
        if m.shape != img.shape[:2]:
            raise InputError(None, f"sample {i}: mask {m.shape} does not match image {img.shape[:2]}")
        if not m.any():
            raise InputError(None, f"sample {i}: mask is empty, nothing to inpaint")
        srcs.append(img)
        ms.append(m)
    mult = int(getattr(pipe, "vae_scale_factor", 8))
    if native_crop:
        return [_inpaint_native(pipe, srcs[i], ms[i], prompts[i], negative_prompts[i], seeds[i], num_inference_steps,
                                guidance_scale, strength, padding_mask_crop, resolution, mult, extra) for i in range(n)]

    # prepare crops, then group by processing size so each group is one batched call
    jobs = []
    for i in range(n):
        H, W = ms[i].shape
        if padding_mask_crop is not None:
            size_hint = processing_size((H, W), resolution, mult)
            aspect = W / H if crop_aspect == "image" else size_hint[1] / size_hint[0]
            box = crop_box(ms[i], int(padding_mask_crop), aspect)
        else:
            box = (0, 0, H, W)
        y0, x0, y1, x1 = box
        size = processing_size((y1 - y0, x1 - x0) if resolution is None else (H, W), resolution, mult)
        jobs.append((i, box, size))
    results: list[InpaintOutput | None] = [None] * n
    groups: dict[tuple[int, int], list] = {}
    for job in jobs:
        groups.setdefault(job[2], []).append(job)
    from PIL import Image

    for size, group in groups.items():
        pil_imgs, pil_masks = [], []
        for i, (y0, x0, y1, x1), _ in group:
            pil_imgs.append(Image.fromarray(_resize(srcs[i][y0:y1, x0:x1], size)))
            mk = _resize(ms[i][y0:y1, x0:x1].astype(np.uint8) * 255, size, nearest=True)
            pil_masks.append(Image.fromarray(mk, mode="L"))
        idx = [g[0] for g in group]
        t0 = time.perf_counter()
        out = pipe(prompt=[prompts[i] for i in idx],
                   negative_prompt=[negative_prompts[i] or "" for i in idx],
                   image=pil_imgs, mask_image=pil_masks, generator=_seeded_generators([seeds[i] for i in idx]),
                   output_type="np", **_call_kwargs(pipe, num_inference_steps, guidance_scale, strength, size, extra))
        dt = (time.perf_counter() - t0) / len(group)
        for k, (i, box, _) in enumerate(group):
            y0, x0, y1, x1 = box
            gen = np.clip(np.rint(np.asarray(out.images[k]) * 255), 0, 255).astype(np.uint8)
            raw = _resize(gen, (y1 - y0, x1 - x0))
            pasted, leak = _paste(srcs[i], ms[i], raw, box)
            results[i] = InpaintOutput(pasted, raw, box, leak, {"processing_size": list(size), "seconds": round(dt, 3)})
    return results  # type: ignore[return-value]


def _inpaint_native(pipe, src, m, prompt, negative, seed, steps, guidance, strength, pad, resolution, mult, extra):
    """One sample through diffusers' own ``padding_mask_crop`` (needs PIL in and ``output_type='pil'``)."""
    from PIL import Image

    H, W = m.shape
    size = processing_size((H, W), resolution, mult)
    img = Image.fromarray(_resize(src, size))
    mk = Image.fromarray(_resize(m.astype(np.uint8) * 255, size, nearest=True), mode="L")
    kw = _call_kwargs(pipe, steps, guidance, strength, size, extra)
    if pad is not None:
        kw["padding_mask_crop"] = int(pad)
    t0 = time.perf_counter()
    out = pipe(prompt=prompt, negative_prompt=negative or "", image=img, mask_image=mk,
               generator=_seeded_generators([seed])[0], output_type="pil", **kw)
    dt = time.perf_counter() - t0
    gen = np.asarray(out.images[0].convert("RGB"), dtype=np.uint8)
    raw = _resize(gen, (H, W))
    pasted, leak = _paste(src, m, raw, (0, 0, H, W))
    return InpaintOutput(pasted, raw, (0, 0, H, W), leak, {"processing_size": list(size), "seconds": round(dt, 3),
                                                           "native_crop": True})
