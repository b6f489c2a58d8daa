"""Loading diffusers inpainting pipelines from local files only.

Two layouts are accepted, and nothing is ever fetched from a model hub:

* a **diffusers folder** (``model_index.json`` plus one subfolder per component, as written
  by ``save_pretrained`` or found in a downloaded hub snapshot), loaded with
  ``from_pretrained(folder, local_files_only=True)``;
* a **single checkpoint file** (``.safetensors``/``.ckpt``) **together with a local
  diffusers-format config folder** (``single_file_config``). diffusers' ``from_single_file``
  otherwise guesses a hub repository for the configs and downloads it even with
  ``local_files_only=True``, so a file without a config folder is refused.

Before diffusers sees the folder, :func:`check_model_folder` lists what is missing
(subfolders, configs, weights, tokenizer files) so the user gets one message that says what
to put where, instead of a stack trace from deep inside transformers.

diffusers/transformers are imported inside the functions: the core package works without the
``[diffusion]`` extra.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from defectforge._device import resolve_device  # noqa: F401  (re-exported: the one device reading)
from defectforge.errors import ConfigError, InputError

Kind = Literal["auto", "sdxl", "sd"]

#: Pipeline classes per kind (diffusers names).
PIPELINE_CLASSES = {"sdxl": "StableDiffusionXLInpaintPipeline", "sd": "StableDiffusionInpaintPipeline"}

#: Components that the inpainting pipelines need, per kind.
REQUIRED_COMPONENTS = {
    "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
    "sd": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
}

#: Components we never load (the SD safety checker blacks out random industrial images).
SKIPPED_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")

_WEIGHT_RE = re.compile(
    r"^(?:diffusion_pytorch_model|model|pytorch_model)(?:\.(?P<variant>[A-Za-z0-9_]+))?"
    r"(?:-\d{5}-of-\d{5})?\.(?:safetensors|bin)$"
)
_INDEX_RE = re.compile(
    r"^(?:diffusion_pytorch_model|model|pytorch_model)\.(?:safetensors|bin)\.index"
    r"(?:\.(?P<variant>[A-Za-z0-9_]+))?\.json$"
)
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

_LAYOUT_HELP = (
    "expected a diffusers folder: model_index.json, unet/ (config.json + diffusion_pytorch_model[.fp16].safetensors), "
    "vae/ (same), text_encoder/ and text_encoder_2/ (config.json + model[.fp16].safetensors), tokenizer/ and "
    "tokenizer_2/ (vocab.json + merges.txt), scheduler/scheduler_config.json; e.g. a local copy of "
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1 (see docs/diffusion.md)"
)


@dataclass
class FolderReport:
    """What :func:`check_model_folder` found: the pipeline kind, the weight variant to use and what is missing."""

    path: Path
    kind: str | None = None
    class_name: str | None = None
    variant: str | None = None
    missing: list[str] = field(default_factory=list)
    unet_in_channels: int | None = None

    @property
    def ok(self) -> bool:
        return not self.missing and self.kind is not None


def looks_like_hub_id(text: str) -> bool:
    """True for strings shaped like ``org/name`` (a model-hub repository id)."""
    return bool(_HUB_ID_RE.match(str(text)))


def _weight_variants(folder: Path) -> set[str | None]:
    """Variants of the weight files present in a component folder (None = full-precision default)."""
    found: set[str | None] = set()
    for f in folder.iterdir():
        m = _WEIGHT_RE.match(f.name) or _INDEX_RE.match(f.name)
        if m and f.is_file():
            found.add(m.group("variant"))
    return found


def check_kind(kind: str, allowed: tuple[str, ...] = ("auto", "sdxl", "sd")) -> str:
    """``kind`` when it is one of ``allowed``, else a one-line :class:`ConfigError` naming ``--kind``."""
    if kind not in allowed:
        from defectforge.errors import ConfigError

        raise ConfigError(f"--kind must be one of {', '.join(allowed)}, got {kind!r}")
    return kind


def _kind_from_index(index: dict) -> str | None:
    cls = str(index.get("_class_name", ""))
    if "XL" in cls or "text_encoder_2" in index:
        return "sdxl"
    if cls.startswith("StableDiffusion") or "text_encoder" in index:
        return "sd"
    return None


def check_model_folder(path: str | Path, kind: Kind = "auto", variant: str | None = None,
                       need_weights: bool = True) -> FolderReport:
    """Inspect a diffusers-layout folder without importing diffusers.

    Determines the kind (``sdxl``/``sd``) from ``model_index.json``, picks the weight variant
    (``variant=None`` chooses full precision when every model has it, else a variant such as
    ``fp16`` that every model has) and lists every missing piece as ``"<subfolder>/<file>"``.
    ``need_weights=False`` checks only configs and tokenizers (for a single-file config folder).
    """
    check_kind(kind)
    root = Path(path)
    rep = FolderReport(path=root)
    index_path = root / "model_index.json"
    if not index_path.is_file():
        rep.missing.append("model_index.json")
        return rep
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(index_path, f"unreadable model_index.json ({exc})") from None
    rep.class_name = str(index.get("_class_name", ""))
    rep.kind = _kind_from_index(index) if kind == "auto" else kind
    if rep.kind is None:
        raise InputError(index_path, f"pipeline class {rep.class_name!r} is not a Stable Diffusion (XL) pipeline; "
                                     "pass kind='sdxl' or kind='sd' if it is one")
    model_dirs: list[Path] = []
    for comp in REQUIRED_COMPONENTS[rep.kind]:
        sub = root / comp
        if not sub.is_dir():
            rep.missing.append(f"{comp}/")
            continue
        if comp.startswith("tokenizer"):
            has_bpe = (sub / "vocab.json").is_file() and (sub / "merges.txt").is_file()
            if not (has_bpe or (sub / "tokenizer.json").is_file()):
                rep.missing.append(f"{comp}/vocab.json + {comp}/merges.txt")
        elif comp == "scheduler":
            if not (sub / "scheduler_config.json").is_file():
                rep.missing.append(f"{comp}/scheduler_config.json")
        else:
            if not (sub / "config.json").is_file():
                rep.missing.append(f"{comp}/config.json")
            model_dirs.append(sub)
    unet_cfg = root / "unet" / "config.json"
    if unet_cfg.is_file():
        try:
            rep.unet_in_channels = int(json.loads(unet_cfg.read_text(encoding="utf-8")).get("in_channels", 0)) or None
        except (OSError, ValueError):
            rep.missing.append("unet/config.json (unreadable)")
    if not need_weights:
        return rep
    variants = {d.name: _weight_variants(d) for d in model_dirs}
    if variant is None:
        if all(None in v for v in variants.values()):
            rep.variant = None
        else:
            common = set.intersection(*[{x for x in v if x} for v in variants.values()]) if variants else set()
            rep.variant = "fp16" if "fp16" in common else (sorted(common)[0] if common else None)
    else:
        rep.variant = variant
    stem = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model"}
    for name, found in variants.items():
        if rep.variant in found:
            continue
        base = stem.get(name, "model")
        suffix = f".{rep.variant}" if rep.variant else ""
        have = ", ".join(sorted("default" if v is None else v for v in found)) or "none"
        rep.missing.append(f"{name}/{base}{suffix}.safetensors (weights; variants present: {have})")
    return rep


def resolve_dtype(dtype: Any, device: str):
    """``None``/``auto`` -> float16 on GPU, float32 on CPU. float16 on CPU is refused (unsupported ops)."""
    import torch

    names = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}
    if dtype in (None, "auto"):
        return torch.float16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        if dtype not in names:
            raise ConfigError(f"unknown dtype {dtype!r}; use auto, float16, bfloat16 or float32")
        dtype = names[dtype]
    if dtype == torch.float16 and device == "cpu":
        raise ConfigError("dtype float16 is not supported on CPU; use float32 (or bfloat16)")
    return dtype


def _import_diffusers():
    """Import diffusers with the hub switched to offline mode (a guard: we never download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import diffusers
    except ImportError as exc:
        raise ConfigError("the diffusion backend needs the optional extra: pip install 'defectforge[diffusion]' "
                          f"({exc})") from None
    return diffusers


def _dtype_kwargs(diffusers_mod, dtype) -> dict:
    """diffusers >= 0.40 renamed ``torch_dtype`` to ``dtype``."""
    try:
        major, minor = (int(x) for x in diffusers_mod.__version__.split(".")[:2])
    except ValueError:
        major, minor = 0, 0
    return {"dtype": dtype} if (major, minor) >= (0, 40) else {"torch_dtype": dtype}


def _missing_message(rep: FolderReport) -> str:
    return f"incomplete model folder, missing: {'; '.join(rep.missing)}. {_LAYOUT_HELP}"


def load_inpaint_pipeline(path: str | Path, kind: Kind = "auto", device: str = "auto", dtype: Any = None,
                          variant: str | None = None, single_file_config: str | Path | None = None):
    """Load an SDXL or SD inpainting pipeline from local files, ready on ``device``.

    ``path`` is a diffusers folder or a ``.safetensors``/``.ckpt`` file (then
    ``single_file_config`` must be a local diffusers-format folder holding the configs and
    tokenizers). ``kind`` ``auto`` reads the pipeline class from ``model_index.json``.
    ``variant`` ``None`` picks the weight files present (``fp16`` if only those exist).
    ``dtype`` ``None`` means float16 on GPU, float32 on CPU.

    Raises :class:`InputError` naming the path and what is missing, for hub ids (downloads are
    not possible), missing files, and incomplete folders.
    """
    p = Path(path).expanduser()
    if not p.exists():
        if looks_like_hub_id(str(path)) and not str(path).startswith((".", "/")):
            raise InputError(path, "looks like a model-hub id, but defectforge never downloads weights; download the "
                                   "repository on a machine with internet (e.g. `huggingface-cli download "
                                   f"{path} --local-dir <dir>`) and pass the local folder")
        raise InputError(p, f"model path not found; {_LAYOUT_HELP}")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if p.is_file():
        return _load_single_file(p, kind, dev, torch_dtype, single_file_config)
    rep = check_model_folder(p, kind=kind, variant=variant)
    if not rep.ok:
        raise InputError(p, _missing_message(rep))
    if rep.unet_in_channels not in (None, 9):
        warnings.warn(f"{p}: the UNet has {rep.unet_in_channels} input channels, not 9: this is a text-to-image "
                      "model used for inpainting by latent blending, which gives weaker results than an "
                      "inpainting checkpoint", stacklevel=2)
    diffusers = _import_diffusers()
    cls = getattr(diffusers, PIPELINE_CLASSES[rep.kind])
    kwargs: dict[str, Any] = dict(local_files_only=True, variant=rep.variant, **_dtype_kwargs(diffusers, torch_dtype))
    if rep.kind == "sd":
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        pipe = cls.from_pretrained(str(p), **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise InputError(p, f"could not load the pipeline ({exc.__class__.__name__}: {exc}). {_LAYOUT_HELP}") from None
    return _finish(pipe, dev)


def _load_single_file(p: Path, kind: Kind, device: str, torch_dtype, config: str | Path | None):
    if p.suffix.lower() not in (".safetensors", ".ckpt"):
        raise InputError(p, "single-file checkpoints must be .safetensors or .ckpt")
    if config is None:
        raise InputError(p, "a single checkpoint file needs single_file_config=<local diffusers folder with "
                            "model_index.json, component configs and tokenizers>; without it diffusers would "
                            "try to download the configs from the hub, which defectforge never does")
    cdir = Path(config).expanduser()
    if not cdir.is_dir():
        raise InputError(cdir, "single_file_config folder not found")
    rep = check_model_folder(cdir, kind=kind, need_weights=False)
    if not rep.ok:
        raise InputError(cdir, f"incomplete config folder, missing: {'; '.join(rep.missing)}")
    diffusers = _import_diffusers()
    cls = getattr(diffusers, PIPELINE_CLASSES[rep.kind])
    kwargs: dict[str, Any] = dict(config=str(cdir), local_files_only=True, **_dtype_kwargs(diffusers, torch_dtype))
    if rep.kind == "sd":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        pipe = cls.from_single_file(str(p), **kwargs)
    except (OSError, ValueError, KeyError, EnvironmentError) as exc:
        raise InputError(p, f"could not load the checkpoint with config {cdir} "
                            f"({exc.__class__.__name__}: {exc})") from None
    return _finish(pipe, device)


def _finish(pipe, device: str):
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_kind(pipe) -> str:
    """``sdxl`` or ``sd`` for a loaded pipeline."""
    return "sdxl" if hasattr(pipe, "text_encoder_2") else "sd"
