"""LoRA adapters for inference: load one or several into an inpainting pipeline and weight them.

An adapter is a diffusers LoRA file (``pytorch_lora_weights.safetensors`` as written by
``save_lora_weights``, by ``defectforge lora train`` or by the diffusers DreamBooth LoRA
scripts) or a folder holding one. LoRAs trained on the 4-channel SDXL base UNet load into
the 9-channel SDXL inpainting UNet too (same attention module names).

Adapters are loaded once per pipeline (named after the file) and switched on per call with
their weights, so several generators can share one loaded pipeline with different LoRAs.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from defectforge.errors import ConfigError, InputError

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


class LoraSpec(BaseModel):
    """One LoRA adapter: where it is and how strongly it acts (``weight`` scales its update)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a .safetensors LoRA file, or a folder holding pytorch_lora_weights.safetensors")
    weight: float = Field(1.0, ge=-4.0, le=4.0)
    name: str | None = Field(None, description="adapter name (default: from the file name)")


def resolve_lora_file(path: str | Path) -> Path:
    """The LoRA weight file for ``path`` (a file, or a folder with one ``.safetensors``/``.bin``)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(p, "LoRA adapter not found (give a .safetensors file or a folder with "
                            f"{LORA_WEIGHT_NAME})")
    if p.is_file():
        if p.suffix not in (".safetensors", ".bin"):
            raise InputError(p, "LoRA adapter must be a .safetensors (or .bin) file")
        return p
    direct = p / LORA_WEIGHT_NAME
    if direct.is_file():
        return direct
    cands = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise InputError(p, f"no LoRA weights in this folder (expected {LORA_WEIGHT_NAME})")
    raise InputError(p, f"several weight files ({', '.join(c.name for c in cands[:4])}); give the file itself")


def adapter_name(spec: LoraSpec) -> str:
    """A stable adapter name: the user's, or the file stem plus a short hash of its absolute path."""
    if spec.name:
        return spec.name
    f = resolve_lora_file(spec.path)
    stem = re.sub(r"[^A-Za-z0-9_]", "_", f.parent.name if f.name == LORA_WEIGHT_NAME else f.stem)[:40] or "lora"
    return f"{stem}_{hashlib.sha1(str(f.resolve()).encode()).hexdigest()[:8]}"


def loaded_adapters(pipe) -> set[str]:
    """Names of adapters already loaded into ``pipe`` (any component)."""
    try:
        lists = pipe.get_list_adapters()
    except (AttributeError, ValueError, ImportError):
        return set()
    return {name for names in lists.values() for name in names}


def apply_loras(pipe, specs: list[LoraSpec]) -> list[tuple[str, float]]:
    """Load (once) and activate exactly the adapters in ``specs`` with their weights; with no
    specs, LoRA is switched off. Returns ``[(adapter name, weight), ...]`` for the metadata."""
    have = loaded_adapters(pipe)
    if not specs:
        if have:
            pipe.disable_lora()
        return []
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError("LoRA adapters need peft: pip install 'defectforge[diffusion]'") from None
    names, weights = [], []
    for spec in specs:
        name = adapter_name(spec)
        if name in names:
            raise ConfigError(f"LoRA adapter {name!r} is listed twice")
        if name not in have:
            f = resolve_lora_file(spec.path)
            try:
                pipe.load_lora_weights(str(f.parent), weight_name=f.name, adapter_name=name, local_files_only=True)
            except (ValueError, KeyError, OSError, RuntimeError) as exc:
                raise InputError(f, f"could not load this LoRA into the pipeline ({exc.__class__.__name__}: "
                                    f"{str(exc)[:300]}); was it trained for this model family?") from None
        names.append(name)
        weights.append(float(spec.weight))
    pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=weights)
    return list(zip(names, weights))
