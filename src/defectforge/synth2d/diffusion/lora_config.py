"""Settings of a LoRA inpainting training run (:mod:`~defectforge.synth2d.diffusion.lora_train`).

:class:`LoraTrainConfig` holds every setting (saved as ``train_config.json`` next to the
outputs); :func:`load_config` validates a dict into one, a bad field raising one
:class:`~defectforge.errors.ConfigError` line.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from defectforge.errors import ConfigError

TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


class LoraTrainConfig(BaseModel):
    """Everything that defines a LoRA training run (saved next to the outputs)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="local diffusers inpainting folder (or single file + single_file_config)")
    out: str = Field(description="output folder (checkpoints, final weights, samples)")
    instance_prompt: str = Field(description="prompt used for every item, e.g. 'dkf pitting on ground steel'")
    kind: str = "auto"
    single_file_config: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    rank: int = Field(4, ge=1, le=256)
    alpha: float | None = Field(None, gt=0, description="LoRA alpha (default = rank)")
    target_modules: list[str] = Field(default_factory=lambda: list(TARGET_MODULES))
    lr: float = Field(1e-4, gt=0)
    steps: int = Field(500, ge=1)
    batch_size: int = Field(1, ge=1)
    resolution: int = Field(1024, ge=8)
    context: float = Field(2.0, ge=1.0, description="crop side = context x the mask bbox's longer side")
    min_crop: int = Field(64, ge=8, description="smallest crop side in source pixels")
    mask_dilate: int = Field(2, ge=0, description="px the mask is grown before blanking/weighting")
    mask_weight: float = Field(2.0, ge=0, description="loss weight inside the mask (1 outside)")
    flip: bool = True
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0
    samples: int = Field(4, ge=0, description="items shown in samples.png after training (0 = none)")
    sample_steps: int = Field(30, ge=1)
    sample_guidance: float = 7.5


def load_config(data: dict[str, Any]) -> LoraTrainConfig:
    try:
        return LoraTrainConfig.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ConfigError(f"lora train config: {'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}") from None
