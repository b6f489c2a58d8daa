"""``defectforge synth``: make labelled synthetic defects from a dataset.

Two ways to call it::

    defectforge synth --config synth.yaml --out DIR
    defectforge synth DATA --generator pitting --n 100 --seed 0 --out DIR [--to mvtec,yolo,coco]

Rerunning the same command resumes an interrupted run; a different config in an
existing DIR is refused unless ``--overwrite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from defectforge.engine.cli import address_option, engine_option


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("synth-generators")(synth_generators)


def synth(
    data: Optional[Path] = typer.Argument(None, metavar="DATA", help="Dataset (any format load_dataset reads); not needed with --config."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (resumed when it holds the same run); "
                                                                  "default: 'out' of the config."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML recipe (see defectforge.synth2d.config); "
                                                                 "--to and --out on the command line win."),
    generator: list[str] = typer.Option(["pitting"], "--generator", "-g",
                                        help="Generator name, optionally NAME:WEIGHT; repeat to mix."),
    n: int = typer.Option(100, "--n", help="Number of samples."),
    seed: int = typer.Option(0, "--seed"),
    split: str = typer.Option("train", "--split", help="Split whose good images and real defects are used."),
    roi: str = typer.Option("auto", "--roi", help="auto | border | none | path to a mask PNG."),
    fmt: str = typer.Option("", "--to", help="Comma-separated exports to write: mvtec,yolo,coco."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Workers (default: 2 local processes; with --engine ray, the cluster's CPUs)."),
    engine: str = engine_option(),
    ray_address: Optional[str] = address_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different run in --out."),
    no_real: bool = typer.Option(False, "--no-real", help="Do not use the dataset's real defects."),
    hosts: str = typer.Option("all", "--hosts", help="all | similar: put defects only on the quarter of the good "
                                                     "images that look most like the real defect images."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the effective recipe as YAML (for --config) and exit."),
    device: Optional[str] = typer.Option(None, "--device", help="Where model-based generators run (inpaint-diffusion): "
                                         "auto, cpu, cuda[:N]; sets their 'device' parameter. Weight-free generators "
                                         "have no model and ignore it."),
) -> None:
    """Generate labelled synthetic defects (images, masks, manifest, card, exports, report)."""
    from rich.console import Console

    from defectforge.errors import ConfigError
    from defectforge.synth2d.config import load_config, parse_config
    from defectforge.synth2d.pipeline import synthesize

    console = Console(stderr=True)
    if config is not None:
        cfg = load_config(config)
        if fmt:
            cfg = cfg.model_copy(update={"formats": [f.strip() for f in fmt.split(",") if f.strip()]})
    else:
        if data is None:
            raise ConfigError("give a dataset (DATA) or --config FILE")
        gens = []
        for g in generator:
            name, _, w = g.partition(":")
            try:
                weight = float(w) if w else 1.0
            except ValueError:
                raise ConfigError(f"--generator {g!r}: weight must be a number (NAME:WEIGHT)") from None
            gens.append({"name": name, "weight": weight})
        cfg = parse_config({"source": {"path": str(data), "split": split, "roi": roi, "real_defects": not no_real,
                                       "hosts": hosts},
                            "generators": gens, "n": n, "seed": seed,
                            "formats": [f.strip() for f in fmt.split(",") if f.strip()]})
    if device is not None:
        cfg = with_device(cfg, device)
    if print_config:
        import sys

        import yaml

        doc = cfg.model_dump(mode="json")
        doc["source"]["path"] = str(Path(doc["source"]["path"]).absolute())
        doc["out"] = str(out.absolute()) if out is not None else doc.get("out")
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
        return
    from defectforge.engine.cli import open_engine
    from defectforge.progress import rich_progress

    with rich_progress() as bar, open_engine(engine, ray_address, workers or (2 if engine == "local" else None)) as eng:
        run = synthesize(cfg, out, overwrite=overwrite, progress=bar, engine=eng)
    console.print(f"[green]done[/]: {len(run.samples)} samples in {out} ({run.written} new, {run.resumed} resumed, "
                  f"{run.failed} failed, {run.n_rejected} rejected attempts {run.rejected or ''}) "
                  f"in {run.elapsed_s:.1f} s")
    if run.exports:
        console.print("exports: " + ", ".join(f"{k}={v}" for k, v in run.exports.items()))


def with_device(cfg, device: str):
    """``cfg`` with ``params.device = device`` on every generator whose config has a
    ``device`` field (the model-based ones); the device is checked first (one-line error)."""
    from defectforge._device import resolve_device
    from defectforge.synth2d.base import generator_class

    resolve_device(device)
    gens = [g.model_copy(update={"params": {**g.params, "device": device}})
            if "device" in generator_class(g.name).Config.model_fields else g for g in cfg.generators]
    return cfg.model_copy(update={"generators": gens})


def synth_generators() -> None:
    """List the registered 2D generators and their parameters."""
    from rich.console import Console

    from defectforge.synth2d.base import generator_class, list_generators

    c = Console()
    for name in list_generators():
        cls = generator_class(name)
        fields = ", ".join(f"{k}={v.get_default(call_default_factory=True)!r}" for k, v in cls.Config.model_fields.items()
                           if not v.is_required())
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        c.print(f"[bold]{name}[/]: {doc}\n    {fields}", highlight=False)
