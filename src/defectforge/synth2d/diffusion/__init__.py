"""Diffusion inpainting backend (optional extra ``[diffusion]``).

- :mod:`.loading`: local-only loading of SDXL/SD inpainting pipelines with clear errors;
- :mod:`.inpaint`: batched, seeded inpainting with mask crop and exact paste-back;
- :mod:`.generator`: the ``inpaint-diffusion`` generator (presets ``exdd``, ``synsur``);
- :mod:`.lora` / :mod:`.lora_train`: LoRA adapters for inference, and inpainting-LoRA training;
- :mod:`.tiny`: a tiny random pipeline built offline (tests, smoke runs, CPU timing).

Importing this package registers the generator but never imports diffusers/transformers/peft:
they are imported when a pipeline is loaded.
"""

from defectforge.synth2d.diffusion.generator import PRESETS, InpaintDiffusion, InpaintDiffusionConfig
from defectforge.synth2d.diffusion.lora import LoraSpec

__all__ = ["PRESETS", "InpaintDiffusion", "InpaintDiffusionConfig", "LoraSpec"]
