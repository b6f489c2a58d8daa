"""Command line of the diffusion backend.

::

    defectforge lora train DATA --base-model WEIGHTS --prompt "dkf pitting on ground steel" --out DIR [--resume]
    defectforge diffusion check WEIGHTS          # is the model folder complete? what is missing?
    defectforge diffusion prompts pitting [--vlm-url URL --vlm-model NAME --image crop.png ...]
    defectforge diffusion tiny DIR               # write a tiny random pipeline (smoke tests, no download)

Generation itself runs through ``defectforge synth`` with the ``inpaint-diffusion`` generator
(see docs/diffusion.md). Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

import defectforge.synth2d.diffusion  # noqa: F401  registers the inpaint-diffusion generator (no diffusers import)

lora_app = typer.Typer(help="LoRA adapters for the diffusion backend.", no_args_is_help=True)
diffusion_app = typer.Typer(help="Diffusion inpainting backend: model checks, prompts, tiny test model.",
                            no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(lora_app, name="lora")
    app.add_typer(diffusion_app, name="diffusion")


@lora_app.command("train")
def lora_train(
    data: Path = typer.Argument(..., metavar="DATA", help="Dataset with real defect masks (any format load_dataset reads)."),
    model: Path = typer.Option(..., "--base-model", help="Local inpainting model folder (diffusers layout) to train on."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Instance prompt, e.g. 'dkf pitting on ground steel'."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (checkpoints, weights, samples.png)."),
    split: str = typer.Option("train", "--split", help="Split whose defects are used (never 'test' by default)."),
    defect: Optional[str] = typer.Option(None, "--defect", help="Only this defect type."),
    limit: int = typer.Option(0, "--limit", min=0, help="Use at most this many defect images (0 = all)."),
    steps: int = typer.Option(500, "--steps", min=1),
    rank: int = typer.Option(4, "--rank", min=1),
    lr: float = typer.Option(1e-4, "--lr"),
    batch_size: int = typer.Option(1, "--batch-size", min=1),
    resolution: int = typer.Option(1024, "--resolution", min=8),
    context: float = typer.Option(2.0, "--context", help="Crop side as a multiple of the defect's size."),
    min_crop: int = typer.Option(64, "--min-crop", min=8, help="Smallest crop side in source pixels."),
    mask_weight: float = typer.Option(2.0, "--mask-weight", help="Loss weight inside the mask (1 outside)."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", min=1),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    seed: int = typer.Option(0, "--seed"),
    samples: int = typer.Option(4, "--samples", min=0, help="Rows in samples.png (0 = skip)."),
    sample_steps: int = typer.Option(30, "--sample-steps", min=1),
) -> None:
    """Fine-tune a LoRA on real defect crops with the inpainting objective."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from defectforge.data.formats import load_dataset
    from defectforge.errors import InputError
    from defectforge.synth2d.diffusion.lora_train import LoraTrainer, load_config, make_items

    console = Console(stderr=True)
    if split == "test":
        console.print("[yellow]warning:[/] training on the test split leaks test data into the adapter")
    ds = load_dataset(data)
    picked = [s for s in ds.filter(split=split) if s.is_defect and (defect is None or s.label == defect)]
    picked = [s for s in picked if s.mask_path is not None or s.mask_array is not None]
    if limit:
        picked = picked[:limit]
    if not picked:
        raise InputError(data, f"no defect images with masks in split {split!r}"
                               + (f" for defect {defect!r}" if defect else ""))
    cfg = load_config(dict(model=str(model), out=str(out), instance_prompt=prompt, steps=steps, rank=rank, lr=lr,
                           batch_size=batch_size, resolution=resolution, context=context, min_crop=min_crop,
                           mask_weight=mask_weight,
                           checkpoint_every=checkpoint_every, device=device, dtype=dtype, seed=seed,
                           gradient_checkpointing=gradient_checkpointing, samples=samples, sample_steps=sample_steps))
    items = make_items([s.rgb() for s in picked], [s.mask for s in picked], cfg, [s.name for s in picked])
    console.print(f"{len(picked)} defect images -> {len(items)} training crops at {resolution} px")
    trainer = LoraTrainer(cfg)
    with Progress(TextColumn("[bold]lora train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console) as prog:
        task = prog.add_task("train", total=steps, loss="-")

        def _cb(stage: str, done: int, total: int | None) -> None:
            prog.update(task, completed=done, loss=f"{trainer.last_loss:.4f}")

        res = trainer.fit(items, resume=resume, progress=_cb, inputs=[data])
    console.print(f"weights: {res.weights}")
    if res.resumed_from:
        console.print(f"resumed from step {res.resumed_from}")
    if res.samples:
        console.print(f"samples: {res.samples}")


@diffusion_app.command("check")
def diffusion_check(
    base_model: Path = typer.Argument(..., metavar="BASE_MODEL", help="Model folder (diffusers layout) to inspect."),
    kind: str = typer.Option("auto", "--kind", help="auto | sdxl | sd"),
    load: bool = typer.Option(False, "--load", help="Also load it (slow for real models)."),
    device: str = typer.Option("auto", "--device", help="With --load: where to load it (auto, cpu, cuda[:N])."),
) -> None:
    """Check that a local model folder is complete; say exactly what is missing."""
    from rich.console import Console

    from defectforge.errors import InputError
    from defectforge.synth2d.diffusion.loading import check_model_folder, load_inpaint_pipeline

    if not Path(base_model).is_dir():
        raise InputError(base_model, "not a folder (single-file checkpoints are checked by loading them)")
    rep = check_model_folder(base_model, kind=kind)  # type: ignore[arg-type]
    if not rep.ok:
        raise InputError(base_model, "incomplete model folder, missing: " + "; ".join(rep.missing))
    Console().print(f"ok: {rep.class_name} ({rep.kind}), weights variant {rep.variant or 'default'}, "
                    f"UNet input channels {rep.unet_in_channels}")
    if load:
        pipe = load_inpaint_pipeline(base_model, kind=kind, device=device)  # type: ignore[arg-type]
        Console().print(f"loaded {type(pipe).__name__} on {pipe.device}")


@diffusion_app.command("prompts")
def diffusion_prompts(
    defect_type: str = typer.Argument(..., metavar="DEFECT_TYPE", help="Defect type, e.g. pitting."),
    material: Optional[str] = typer.Option(None, "--material"),
    vlm_url: Optional[str] = typer.Option(None, "--vlm-url", help="OpenAI-compatible base URL (…/v1)."),
    vlm_model: Optional[str] = typer.Option(None, "--vlm-model"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env"),
    description: str = typer.Option("", "--description", help="Short product/surface description."),
    image: list[Path] = typer.Option([], "--image", help="Real defect image (repeat)."),
    n: int = typer.Option(6, "--n", min=1, max=32),
    timeout: float = typer.Option(60.0, "--timeout"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the prompt set as JSON here."),
) -> None:
    """Show (or save) the prompts the generator would use: templates, or a VLM's with --vlm-url."""
    from defectforge._atomic import atomic_write_json
    from defectforge.errors import ConfigError
    from defectforge.prompts.vlm import build_prompts, load_vlm_config

    vcfg = None
    if vlm_url or vlm_model:
        if not (vlm_url and vlm_model):
            raise ConfigError("--vlm-url and --vlm-model go together")
        vcfg = load_vlm_config(dict(base_url=vlm_url, model=vlm_model, api_key_env=api_key_env, timeout=timeout,
                                    description=description, images=[str(p) for p in image], n_prompts=n))
    ps = build_prompts(defect_type, vcfg, material=material)
    text = json.dumps(ps.model_dump(), indent=2)
    if out is not None:
        atomic_write_json(out, ps.model_dump())
    typer.echo(text)


@diffusion_app.command("tiny")
def diffusion_tiny(
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write the tiny random pipeline to (replaced)."),
    kind: str = typer.Option("sdxl", "--kind", help="sdxl | sd"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a tiny random inpainting pipeline (for smoke tests and CPU timing; outputs are noise)."""
    from defectforge.synth2d.diffusion.tiny import build_tiny_inpaint_pipeline

    typer.echo(str(build_tiny_inpaint_pipeline(out, kind=kind, seed=seed)))
