"""Prompt templates per defect type, with negative prompts.

Prompts describe the defect and the surface, not the object: the inpainting model sees the
surroundings, so "small dark corrosion pits on ground steel, macro photo" is enough. The
negative prompt always contains ExDD's "smooth, plain, black, dark, shadow" idea (avoid the
model painting nothing or a black hole) adapted per type.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from defectforge.prompts.taxonomy import lookup

#: ExDD/DIAG's negative prompt, used verbatim by the ``exdd`` preset.
EXDD_NEGATIVE = "smooth, plain, black, dark, shadow"
_BASE_NEGATIVE = ("smooth", "plain", "blurry", "cartoon", "illustration", "text", "watermark")

_TEMPLATES = (
    "{appearance} on {material}, industrial inspection photo, macro, sharp focus",
    "close-up of {material} with {appearance}, realistic surface defect",
    "{appearance}, {material} surface, high detail, natural lighting",
)


class PromptSet(BaseModel):
    """Prompts for one defect type (one is drawn per sample) and one negative prompt."""

    model_config = ConfigDict(extra="forbid")

    defect_type: str
    prompts: list[str] = Field(min_length=1, max_length=32)
    negative_prompt: str = ""
    source: Literal["template", "vlm", "user"] = "template"

    @field_validator("prompts")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        out = [" ".join(p.split()) for p in v if p and p.strip()]
        if not out:
            raise ValueError("no non-empty prompt")
        too_long = [p for p in out if len(p) > 400]
        if too_long:
            raise ValueError(f"prompt longer than 400 characters: {too_long[0][:60]}...")
        return out

    def pick(self, rng: np.random.Generator) -> str:
        """One prompt, drawn with ``rng``."""
        return self.prompts[int(rng.integers(len(self.prompts)))]


def template_prompts(defect_type: str, material: str | None = None, max_prompts: int = 12) -> PromptSet:
    """Prompts from the taxonomy's appearance words x materials x templates for ``defect_type``.

    Unknown types still work ("<type> defect on <material or 'the surface'>"), so a user's own
    label never breaks generation. ``material`` overrides the taxonomy's materials.
    """
    d = lookup(defect_type)
    if d is None:
        mats = (material or "the surface",)
        apps = (f"a {defect_type.replace('_', ' ')} defect",)
        neg = _BASE_NEGATIVE
    else:
        mats = (material,) if material else d.materials
        apps = d.appearance
        neg = _BASE_NEGATIVE + d.negative
    prompts: list[str] = []
    # interleave so the first few prompts already vary appearance and material
    for i in range(len(apps) * len(mats) * len(_TEMPLATES)):
        a = apps[i % len(apps)]
        m = mats[(i // len(apps)) % len(mats)]
        t = _TEMPLATES[(i // (len(apps) * len(mats))) % len(_TEMPLATES)]
        p = t.format(appearance=a, material=m)
        if p not in prompts:
            prompts.append(p)
        if len(prompts) >= max_prompts:
            break
    return PromptSet(defect_type=defect_type, prompts=prompts, negative_prompt=", ".join(dict.fromkeys(neg)),
                     source="template")
