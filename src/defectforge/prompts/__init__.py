"""Prompts for text-conditioned defect generation: a defect taxonomy, templates with negative
prompts, and an optional VLM prompt builder (OpenAI-compatible chat endpoint, strict JSON,
template fallback)."""

from defectforge.prompts.taxonomy import DefectType, defect_types, lookup, register_defect
from defectforge.prompts.templates import EXDD_NEGATIVE, PromptSet, template_prompts
from defectforge.prompts.vlm import (PromptFallbackWarning, VLMConfig, build_messages, build_prompts,
                                     image_data_url)

__all__ = [
    "DefectType", "EXDD_NEGATIVE", "PromptFallbackWarning", "PromptSet", "VLMConfig",
    "build_messages", "build_prompts", "defect_types", "image_data_url", "lookup", "register_defect",
    "template_prompts",
]
