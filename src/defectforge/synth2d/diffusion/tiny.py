"""A tiny random SDXL (or SD) inpainting pipeline, built fully offline.

Why: tests, smoke runs and CPU timing need a real diffusers pipeline without downloading
gigabytes of weights. The components have the same structure as the real models (a
9-channel inpainting UNet with SDXL micro-conditioning, a VAE, one or two CLIP text
encoders) but are a few hundred kilobytes and random. The tokenizer is a byte-level BPE
vocabulary built here (two specials, the 256 byte stand-ins, and each with ``</w>``:
514 tokens, no merges), so every string tokenises without any download.

The output is a diffusers-layout folder (``model_index.json``, ``unet/``, ...) written with
``save_pretrained``; load it back with :func:`~defectforge.synth2d.diffusion.loading.load_inpaint_pipeline`
like any real model folder. Images it produces are noise: use it for behaviour, never quality.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from defectforge.errors import ConfigError


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins for bytes used by GPT-2/CLIP byte-level BPE, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, int] = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = 256 + extra
            extra += 1
    return [chr(table[b]) for b in range(256)]


def write_byte_level_tokenizer(out_dir: str | Path, model_max_length: int = 77) -> Path:
    """Write ``vocab.json``/``merges.txt``/``tokenizer_config.json`` of a 514-token CLIP BPE vocabulary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = _bytes_to_unicode()
    for ch in chars:
        vocab[ch] = len(vocab)
    for ch in chars:
        vocab[ch + "</w>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return out


def build_tiny_inpaint_pipeline(out_dir: str | Path, kind: str = "sdxl", seed: int = 0,
                                sample_size: int = 32) -> Path:
    """Build a random tiny inpainting pipeline of ``kind`` ("sdxl" or "sd") and save it to ``out_dir``.

    ``sample_size`` is the VAE/UNet sample size in pixels/latents; the default processing
    resolution of the saved pipeline is ``2 * sample_size`` pixels (two VAE blocks). Returns
    ``out_dir``. Deterministic for a given ``seed`` (weights drawn from a local
    ``torch.Generator`` via a forked RNG scope, so the global RNG is left untouched).
    """
    if kind not in ("sdxl", "sd"):
        raise ConfigError(f"tiny pipeline kind must be 'sdxl' or 'sd', got {kind!r}")
    import torch
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionInpaintPipeline,
                           StableDiffusionXLInpaintPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sdxl = kind == "sdxl"
        unet_kw = dict(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=sample_size,
            in_channels=9, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        )
        if sdxl:
            unet_kw.update(attention_head_dim=(2, 4), use_linear_projection=True,
                           addition_embed_type="text_time", addition_time_embed_dim=8,
                           transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
                           cross_attention_dim=64)
        else:
            unet_kw.update(attention_head_dim=(2, 4), cross_attention_dim=32)
        unet = UNet2DConditionModel(**unet_kw)
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           timestep_spacing="leading", steps_offset=1)
        vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
                            latent_channels=4, sample_size=2 * sample_size, force_upcast=False)
        text_cfg = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32,
                                  intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
                                  num_hidden_layers=5, vocab_size=1000, max_position_embeddings=77,
                                  hidden_act="gelu", projection_dim=32)
        with tempfile.TemporaryDirectory() as tok_tmp:
            write_byte_level_tokenizer(tok_tmp)
            tokenizer = CLIPTokenizer(str(Path(tok_tmp) / "vocab.json"), str(Path(tok_tmp) / "merges.txt"),
                                      model_max_length=77)
            if sdxl:
                pipe = StableDiffusionXLInpaintPipeline(
                    vae=vae, text_encoder=CLIPTextModel(text_cfg), tokenizer=tokenizer,
                    text_encoder_2=CLIPTextModelWithProjection(text_cfg), tokenizer_2=tokenizer,
                    unet=unet, scheduler=scheduler, requires_aesthetics_score=False,
                    force_zeros_for_empty_prompt=True, add_watermarker=False)
            else:
                pipe = StableDiffusionInpaintPipeline(
                    vae=vae, text_encoder=CLIPTextModel(text_cfg), tokenizer=tokenizer, unet=unet,
                    scheduler=scheduler, safety_checker=None, feature_extractor=None,
                    requires_safety_checker=False)
            _save_replacing(pipe, out)
    return out


def _save_replacing(pipe, out: Path) -> None:
    """Save into a temporary sibling folder, then swap it in; an existing ``out`` is replaced only
    when it is itself a pipeline folder (holds ``model_index.json``) or empty."""
    if out.exists() and not (out / "model_index.json").is_file() and any(out.iterdir()):
        from defectforge.errors import InputError

        raise InputError(out, "exists and is not a pipeline folder; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pipe.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
