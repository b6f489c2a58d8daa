"""Prompts written by a vision-language model from the user's real defect images.

Given a few real defect images and a short product description, an OpenAI-compatible chat
endpoint (any server speaking ``POST /chat/completions``: a hosted API, vLLM, llama.cpp,
Ollama) is asked for inpainting prompts as **strict JSON**; the reply is validated with
pydantic. Any failure (no server, timeout, HTTP error, refusal, malformed or invalid JSON)
falls back to :func:`~defectforge.prompts.templates.template_prompts` with a
:class:`PromptFallbackWarning`, so generation never stops because a VLM is unavailable.

Transport: :class:`defectforge.llm.ChatClient` (standard library only); the user message
carries the images as ``image_url`` parts with base64 PNG ``data:`` URLs (OpenAI vision
format), which the client passes through unchanged.
"""

from __future__ import annotations

import base64
import warnings
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from defectforge.errors import ConfigError, DefectforgeError
from defectforge.prompts.taxonomy import lookup
from defectforge.prompts.templates import PromptSet, template_prompts


class PromptFallbackWarning(UserWarning):
    """The VLM prompt builder failed; template prompts are used instead."""


class VLMConfig(BaseModel):
    """Where the chat endpoint is and what to tell it. The API key is read from the environment
    variable named by ``api_key_env`` (never stored in configs)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1 (the part before /chat/completions)")
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = Field(60.0, gt=0)
    description: str = Field("", description="short product/surface description, e.g. 'ground steel ball screw'")
    images: list[str] = Field(default_factory=list, description="paths of real defect images (crops are best)")
    n_prompts: int = Field(6, ge=1, le=32)
    max_image_side: int = Field(512, ge=64)


class VLMPromptReply(BaseModel):
    """The JSON object the model must return."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(min_length=1, max_length=32)
    negative_prompt: str = ""


class ChatJSONClient(Protocol):
    def complete_json(self, messages: list[dict[str, Any]], schema_model: type[BaseModel]) -> BaseModel: ...


def make_client(cfg: VLMConfig) -> ChatJSONClient:
    """The project's OpenAI-compatible chat client (:class:`defectforge.llm.ChatClient`)."""
    from defectforge.llm import ChatClient

    return ChatClient(cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, timeout=cfg.timeout, temperature=0.2)


# -- prompt building --------------------------------------------------------------------------------
def image_data_url(image: np.ndarray | str | Path, max_side: int = 512) -> str:
    """A PNG ``data:`` URL of an image (array or path), downscaled so its longer side is <= ``max_side``."""
    import cv2

    from defectforge.data.image_io import as_rgb8, encode_image, read_image

    arr = as_rgb8(read_image(image)) if isinstance(image, (str, Path)) else as_rgb8(np.asarray(image))
    h, w = arr.shape[:2]
    s = max_side / max(h, w)
    if s < 1:
        arr = cv2.resize(arr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return "data:image/png;base64," + base64.b64encode(encode_image(arr, ".png")).decode("ascii")


def build_messages(defect_type: str, description: str, images: Sequence[np.ndarray | str | Path],
                   n_prompts: int = 6, max_side: int = 512) -> list[dict[str, Any]]:
    """Chat messages asking for ``n_prompts`` inpainting prompts as one JSON object."""
    d = lookup(defect_type)
    hint = f" Typical look: {', '.join(d.appearance)}." if d else ""
    system = (
        "You write prompts for a text-conditioned diffusion inpainting model that paints one industrial "
        "surface defect into a masked region of a defect-free image. Describe only the defect and the "
        "surface: appearance, colour, size, texture, lighting. No object names, no camera brands, no text. "
        'Answer with exactly one JSON object and nothing else: {"prompts": [string, ...], '
        '"negative_prompt": string}. Each prompt is at most 60 words.'
    )
    text = (f"Defect type: {defect_type}.{hint} Product/surface: {description or 'not given'}. "
            f"The {len(images)} attached image(s) show real examples of this defect. "
            f"Write {n_prompts} varied prompts and one negative prompt listing what the model must avoid.")
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for im in images:
        content.append({"type": "image_url", "image_url": {"url": image_data_url(im, max_side)}})
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


def build_prompts(defect_type: str, cfg: VLMConfig | None = None,
                  images: Sequence[np.ndarray | str | Path] | None = None, client: ChatJSONClient | None = None,
                  material: str | None = None) -> PromptSet:
    """Prompts for ``defect_type``: from the VLM when ``cfg`` is given and it answers properly,
    otherwise from the templates (with a :class:`PromptFallbackWarning` if the VLM failed).
    An image that cannot be read raises :class:`~defectforge.errors.InputError` naming it.

    ``images`` overrides ``cfg.images``; ``client`` overrides the transport (tests, custom auth).
    """
    fallback = template_prompts(defect_type, material=material)
    if cfg is None:
        return fallback
    imgs = list(images) if images is not None else list(cfg.images)
    # the user's images are read first, outside the fallback: a missing or corrupt image is an
    # InputError naming it (before any VLM call), not a VLM failure hidden behind template prompts
    msgs = build_messages(defect_type, cfg.description, imgs, cfg.n_prompts, cfg.max_image_side)
    try:
        cl = client if client is not None else make_client(cfg)
        reply = cl.complete_json(msgs, VLMPromptReply)
        if not isinstance(reply, VLMPromptReply):
            reply = VLMPromptReply.model_validate(reply.model_dump() if isinstance(reply, BaseModel) else reply)
        neg = reply.negative_prompt.strip() or fallback.negative_prompt
        return PromptSet(defect_type=defect_type, prompts=reply.prompts[: cfg.n_prompts], negative_prompt=neg,
                         source="vlm")
    except (DefectforgeError, ValidationError, ValueError, OSError, TimeoutError) as exc:
        warnings.warn(f"VLM prompt builder failed ({exc}); using template prompts for {defect_type!r}",
                      PromptFallbackWarning, stacklevel=2)
        return fallback


def load_vlm_config(data: dict[str, Any] | None) -> VLMConfig | None:
    """A :class:`VLMConfig` from a plain dict (``None`` stays ``None``); bad fields -> ConfigError."""
    if data is None:
        return None
    try:
        return VLMConfig.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ConfigError(f"vlm prompt builder config: {e.get('loc')}: {e.get('msg')}") from None
