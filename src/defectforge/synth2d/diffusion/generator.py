"""The ``inpaint-diffusion`` generator: text-conditioned mask-guided inpainting (ExDD/DIAG, SynSur).

Per sample: a mask from the engine's mask makers (real masks by default: a real defect's
shape on a defect-free image, as in ExDD), a prompt (given, VLM-built or from templates),
a seed drawn from the sample's ``numpy.random.Generator`` (-> ``torch.Generator``), then
:func:`~defectforge.synth2d.diffusion.inpaint.inpaint_batch` with exact paste-back. The
returned mask is the region the model was allowed to repaint; the synthesis pipeline then
derives the visible label from the change (:func:`defectforge.synth2d.labels.derive_label`).

Presets (``preset=``), every value overridable:

* ``exdd``: DIAG/ExDD settings: 30 steps, guidance 20, strength 0.99, ``padding_mask_crop`` 2,
  1024 px processing, negative prompt "smooth, plain, black, dark, shadow", real masks.
* ``synsur``: SynSur-style: LoRA adapter(s) adapted to the user's defects, prompts from a VLM
  (``vlm=``) or templates, real masks jittered; filtering happens downstream. The exact SynSur
  settings are not public: steps 30, guidance 7.5, strength 0.99, crop padding 16 are ours.
* ``none``: diffusers defaults-like values (steps 30, guidance 7.5, strength 0.99, no crop).

Importing this module registers the generator without importing diffusers; the pipeline is
loaded on the first ``generate`` and shared between generators with the same model settings.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import cv2
import numpy as np
from pydantic import Field, model_validator

from defectforge.errors import ConfigError, InputError
from defectforge.synth2d import masks as mk
from defectforge.synth2d.base import Generator, GeneratorConfig, SynthResult, register_generator
from defectforge.synth2d.diffusion.lora import LoraSpec

MaskKind = Literal["real", "mask_dir", "pits", "perlin", "stroke", "crack", "ellipse"]

PRESETS: dict[str, dict[str, Any]] = {
    "exdd": dict(num_inference_steps=30, guidance_scale=20.0, strength=0.99, padding_mask_crop=2, resolution=1024,
                 negative_prompt="smooth, plain, black, dark, shadow", mask="real", jitter_real=False,
                 crop_aspect="image"),
    "synsur": dict(num_inference_steps=30, guidance_scale=7.5, strength=0.99, padding_mask_crop=16, resolution=1024,
                   negative_prompt=None, mask="real", jitter_real=True, crop_aspect="target"),
    "none": dict(num_inference_steps=30, guidance_scale=7.5, strength=0.99, padding_mask_crop=None, resolution=1024,
                 negative_prompt=None, mask="real", jitter_real=False, crop_aspect="image"),
}


class InpaintDiffusionConfig(GeneratorConfig):
    """Settings of the ``inpaint-diffusion`` generator. Fields left unset take the preset's value."""

    path_fields = ("model", "single_file_config", "mask_dir")

    preset: Literal["exdd", "synsur", "none"] = "exdd"
    # model
    model: str = Field(description="local diffusers folder or single .safetensors/.ckpt file (no hub ids)")
    kind: Literal["auto", "sdxl", "sd"] = "auto"
    single_file_config: str | None = None
    variant: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    lora: list[LoraSpec] = Field(default_factory=list)
    # prompts
    prompt: str | list[str] | None = Field(None, description="fixed prompt(s); None = VLM (if vlm set) or templates")
    negative_prompt: str | None = None
    material: str | None = Field(None, description="surface material used by the templates, e.g. 'ground steel'")
    vlm: dict[str, Any] | None = Field(None, description="VLM prompt builder settings (see prompts.VLMConfig)")
    # diffusion
    num_inference_steps: int = Field(30, ge=1, le=1000)
    guidance_scale: float = Field(7.5, ge=0)
    strength: float = Field(0.99, gt=0, le=1)
    padding_mask_crop: int | None = Field(None, ge=0)
    resolution: int | None = Field(1024, ge=8, description="square processing size (None = source size)")
    crop_aspect: Literal["image", "target"] = "image"
    native_crop: bool = Field(False, description="use diffusers' own padding_mask_crop (PIL, one sample per call)")
    scheduler: str | None = Field(None, description="diffusers scheduler class to sample with, e.g. "
                                  "'DPMSolverMultistepScheduler' (None = the model's own)")
    batch_size: int = Field(4, ge=1)
    pipeline_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keywords for the pipeline call")
    # masks
    mask: MaskKind = "real"
    mask_dir: str | None = Field(None, description="folder of full-size real masks (mask='mask_dir', ExDD verbatim)")
    mask_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the mask maker "
                                        "(for mask='real' with jitter_real: of masks.jitter_mask)")
    jitter_real: bool = False
    mask_dilate: int = Field(0, ge=0, description="px the mask is grown before inpainting")
    count: tuple[int, int] = Field((1, 1), description="defects per image (min, max)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("preset", "exdd")
        if name not in PRESETS:
            return data  # the Literal check reports it
        return {**PRESETS[name], **data}

    @model_validator(mode="after")
    def _check(self) -> "InpaintDiffusionConfig":
        if self.mask == "mask_dir" and not self.mask_dir:
            raise ValueError("mask='mask_dir' needs mask_dir=<folder of real masks>")
        if self.count[0] < 1 or self.count[1] < self.count[0]:
            raise ValueError(f"count must be (min, max) with 1 <= min <= max, got {self.count}")
        if int(self.num_inference_steps * self.strength) < 1:
            raise ValueError("num_inference_steps x strength < 1: no denoising step would run")
        return self


# -- shared pipelines ----------------------------------------------------------------------------
_PIPES: dict[tuple, Any] = {}
_PIPES_LOCK = threading.Lock()


def _pipe_key(c: InpaintDiffusionConfig) -> tuple:
    return (str(Path(c.model).expanduser().resolve()) if Path(c.model).expanduser().exists() else c.model,
            c.kind, c.single_file_config, c.variant, c.device, c.dtype)


def shared_pipeline(c: InpaintDiffusionConfig):
    """The loaded pipeline for ``c``'s model settings (loaded once per process)."""
    from defectforge.synth2d.diffusion.loading import load_inpaint_pipeline

    key = _pipe_key(c)
    with _PIPES_LOCK:
        if key not in _PIPES:
            _PIPES[key] = load_inpaint_pipeline(c.model, kind=c.kind, device=c.device,
                                                dtype=None if c.dtype == "auto" else c.dtype, variant=c.variant,
                                                single_file_config=c.single_file_config)
        return _PIPES[key]


_ORIGINAL_SCHEDULERS: dict[int, Any] = {}


def set_scheduler(pipe, name: str | None) -> None:
    """Sample with diffusers scheduler class ``name`` (built from the model's scheduler config), or
    with the model's own scheduler when ``name`` is None. Several generators can share ``pipe``."""
    original = _ORIGINAL_SCHEDULERS.setdefault(id(pipe), pipe.scheduler)
    if name is None:
        pipe.scheduler = original
        return
    if type(pipe.scheduler).__name__ == name:
        return
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not name.endswith("Scheduler"):
        raise ConfigError(f"unknown diffusers scheduler {name!r} (e.g. DPMSolverMultistepScheduler, "
                          "EulerAncestralDiscreteScheduler, DDIMScheduler, UniPCMultistepScheduler)")
    pipe.scheduler = cls.from_config(original.config)


def clear_pipelines() -> None:
    """Drop every cached pipeline (frees GPU memory once no generator holds one)."""
    with _PIPES_LOCK:
        _PIPES.clear()
        _ORIGINAL_SCHEDULERS.clear()


@register_generator("inpaint-diffusion")
class InpaintDiffusion(Generator):
    """Mask-guided diffusion inpainting (SDXL/SD inpainting checkpoints, optional LoRA)."""

    Config = InpaintDiffusionConfig
    #: The pipeline must stay in one process (GPU memory); run the synthesis with workers=1.
    max_workers: ClassVar[int] = 1
    #: ``generate_batch`` makes several samples in one pipeline call.
    batchable: ClassVar[bool] = True

    def __init__(self, config: InpaintDiffusionConfig | None = None, **params: Any):
        super().__init__(config, **params)
        self._prompts = None
        self._mask_files: list[Path] | None = None
        c: InpaintDiffusionConfig = self.config  # type: ignore[assignment]
        if c.preset == "synsur" and not c.lora:
            warnings.warn("preset 'synsur' without a LoRA adapter: the model is not adapted to your defects "
                          "(train one with `defectforge lora train`)", stacklevel=2)

    @property
    def needs_real(self) -> bool:  # type: ignore[override]
        return self.config.mask == "real"  # type: ignore[attr-defined]

    # -- pieces ------------------------------------------------------------------------------------
    def pipeline(self):
        """The loaded pipeline with this generator's LoRA adapters and scheduler active."""
        from defectforge.synth2d.diffusion.lora import apply_loras

        c: InpaintDiffusionConfig = self.config  # type: ignore[assignment]
        pipe = shared_pipeline(c)
        self._lora_meta = apply_loras(pipe, list(c.lora))
        set_scheduler(pipe, c.scheduler)
        return pipe

    def prompt_set(self):
        """Prompts for this generator (built once: given, VLM or templates)."""
        if self._prompts is None:
            from defectforge.prompts.templates import PromptSet, template_prompts
            from defectforge.prompts.vlm import build_prompts, load_vlm_config

            c: InpaintDiffusionConfig = self.config  # type: ignore[assignment]
            if c.prompt:
                ps = [c.prompt] if isinstance(c.prompt, str) else list(c.prompt)
                neg = c.negative_prompt
                if neg is None:
                    neg = template_prompts(c.defect_type).negative_prompt
                self._prompts = PromptSet(defect_type=c.defect_type, prompts=ps, negative_prompt=neg, source="user")
            else:
                vcfg = load_vlm_config(c.vlm)
                imgs = None
                if vcfg is not None and not vcfg.images and self.real:
                    imgs = [r.image for r in self.real[:4]]
                p = build_prompts(c.defect_type, vcfg, images=imgs, material=c.material)
                if c.negative_prompt is not None:
                    p = p.model_copy(update={"negative_prompt": c.negative_prompt})
                self._prompts = p
        return self._prompts

    def make_mask(self, image: np.ndarray, rng: np.random.Generator, roi: np.ndarray | None) -> tuple[np.ndarray, dict]:
        """The region to repaint (bool H x W) and how it was made."""
        c: InpaintDiffusionConfig = self.config  # type: ignore[assignment]
        H, W = image.shape[:2]
        area = roi if roi is not None else mk.border_roi((H, W), 4)
        if not area.any():
            area = np.ones((H, W), bool)
        if c.mask == "mask_dir":
            m, info = self._mask_from_dir(rng, (H, W))
        else:
            m = np.zeros((H, W), bool)
            parts = []
            n = int(rng.integers(c.count[0], c.count[1] + 1))
            for _ in range(n):
                patch, prefer, info = self._patch(rng, (H, W))
                y0, x0 = mk.place(patch, area & ~m, rng, prefer=prefer, min_inside=0.9)
                ph, pw = patch.shape
                m[y0:y0 + ph, x0:x0 + pw] |= patch
                parts.append({**info, "yx": [int(y0), int(x0)]})
            info = {"mask": c.mask, "parts": parts}
        if c.mask_dilate:
            k = 2 * c.mask_dilate + 1
            m = cv2.dilate(m.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        if roi is not None:
            m &= roi
        if not m.any():
            raise InputError(None, "the defect mask is empty inside the region of interest")
        return m, info

    def _patch(self, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, Any, dict]:
        c: InpaintDiffusionConfig = self.config  # type: ignore[assignment]
        if c.mask == "real":
            if not self.real:
                raise ConfigError("inpaint-diffusion with mask='real' needs real defects with masks "
                                  "(attach them with fit(), or choose mask='pits'/'perlin'/... or 'mask_dir')")
            r = self.real[int(rng.integers(len(self.real)))]
            m = r.mask
            if r.image_shape[0] and tuple(r.image_shape) != tuple(shape):
                s = shape[0] / r.image_shape[0], shape[1] / r.image_shape[1]
                m = cv2.resize(m.astype(np.uint8), (max(1, round(m.shape[1] * s[1])), max(1, round(m.shape[0] * s[0]))),
                               interpolation=cv2.INTER_NEAREST) > 0
            info: dict[str, Any] = {"shape": "real", "source": r.source}
            if c.jitter_real:
                m, _, jp = mk.jitter_mask(m, rng, **c.mask_params)
                info.update(jp)
            ys, xs = np.nonzero(m)
            m = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            prefer = r.center_yx if r.image_shape[0] else None
            return m, prefer, info
        makers = {"pits": mk.pit_cluster, "perlin": mk.perlin_blob, "stroke": mk.stroke, "crack": mk.crack,
                  "ellipse": mk.ellipse}
        try:
            p = makers[c.mask](rng, **c.mask_params)
        except TypeError as exc:
            raise ConfigError(f"mask_params for mask={c.mask!r}: {exc}") from None
        m = p.mask
        if m.shape[0] > shape[0] or m.shape[1] > shape[1]:
            s = min(shape[0] / m.shape[0], shape[1] / m.shape[1]) * 0.9
            m = cv2.resize(m.astype(np.uint8), (max(1, int(m.shape[1] * s)), max(1, int(m.shape[0] * s))),
                           interpolation=cv2.INTER_NEAREST) > 0
        prefer = self.stats.sample_position(rng) if self.stats is not None else None
        return m, prefer, {k: v for k, v in p.params.items() if isinstance(v, (int, float, str))}

    def _mask_from_dir(self, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
        from defectforge.data.image_io import is_image_file, read_mask

        c: InpaintDiffusionConfig = self.config  # type: ignore[assignment]
        if self._mask_files is None:
            d = Path(c.mask_dir or "").expanduser()
            if not d.is_dir():
                raise InputError(d, "mask_dir not found")
            self._mask_files = sorted(f for f in d.iterdir() if f.is_file() and is_image_file(f))
            if not self._mask_files:
                raise InputError(d, "mask_dir holds no mask images")
        f = self._mask_files[int(rng.integers(len(self._mask_files)))]
        m = read_mask(f)
        if not m.any():
            raise InputError(f, "mask is empty (no defect pixels)")
        if m.shape != shape:  # ExDD: the real mask is resized to the image, aspect ignored
            m = cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        return m, {"mask": "mask_dir", "file": f.name}

    # -- generation --------------------------------------------------------------------------------
    def _render(self, image, rng, roi):
        out = self._render_batch([image], [rng], [roi])[0]
        return out

    def _render_batch(self, images: Sequence[np.ndarray], rngs: Sequence[np.random.Generator],
                      rois: Sequence[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray, dict]]:
        from defectforge.synth2d.diffusion.inpaint import inpaint_batch

        c: InpaintDiffusionConfig = self.config  # type: ignore[assignment]
        ps = self.prompt_set()
        masks, infos, prompts, seeds = [], [], [], []
        for img, rng, roi in zip(images, rngs, rois):
            m, info = self.make_mask(img, rng, roi)
            masks.append(m)
            infos.append(info)
            prompts.append(ps.pick(rng))
            seeds.append(int(rng.integers(0, 2**63 - 1)))
        neg = ps.negative_prompt
        pipe = self.pipeline()
        results = []
        for s in range(0, len(images), c.batch_size):
            sl = slice(s, s + c.batch_size)
            outs = inpaint_batch(pipe, list(images[sl]), masks[sl], prompts[sl], [neg] * len(masks[sl]), seeds[sl],
                                 num_inference_steps=c.num_inference_steps, guidance_scale=c.guidance_scale,
                                 strength=c.strength, padding_mask_crop=c.padding_mask_crop,
                                 resolution=c.resolution, crop_aspect=c.crop_aspect, native_crop=c.native_crop,
                                 extra=c.pipeline_kwargs)
            for k, o in enumerate(outs):
                i = s + k
                meta = {"preset": c.preset, "model": Path(c.model).name, "prompt": prompts[i],
                        "negative_prompt": neg, "prompt_source": ps.source, "seed": seeds[i],
                        "steps": c.num_inference_steps, "guidance_scale": c.guidance_scale, "strength": c.strength,
                        "padding_mask_crop": c.padding_mask_crop, "resolution": c.resolution,
                        "scheduler": type(pipe.scheduler).__name__,
                        "box": list(o.box), "leak_before_paste": o.leak,
                        "lora": [[n, w] for n, w in getattr(self, "_lora_meta", [])], **infos[i], **o.meta}
                results.append((o.image, masks[i], meta))
        return results

    def generate_batch(self, images: Sequence[np.ndarray], rngs: Sequence[np.random.Generator],
                       rois: Sequence[np.ndarray | None] | None = None) -> list[SynthResult]:
        """Like :meth:`generate` for several images at once (one pipeline call per ``batch_size``).
        Sample ``i`` uses only ``rngs[i]``, so results equal those of one-by-one generation."""
        from defectforge.synth2d.base import _check_image, _jsonable

        if len(rngs) != len(images):
            raise ConfigError("generate_batch needs one rng per image")
        rois = list(rois) if rois is not None else [None] * len(images)
        imgs = [_check_image(im) for im in images]
        rendered = self._render_batch(imgs, rngs, rois)
        res = []
        for img, (out, mask, meta) in zip(imgs, rendered):
            out = np.where(mask[..., None], out, img)
            res.append(SynthResult(np.ascontiguousarray(out), mask, {"generator": self.name, **_jsonable(meta)}))
        return res
