"""``defectforge experiment NAME --data ...``: run one of the papers' experiments."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from defectforge.engine.cli import address_option, engine_option


def experiment_cmd(
    name: str = typer.Argument(..., metavar="NAME", help="exdd-augmentation | synsur-regimes | filtering-ablation"),
    data: Path = typer.Option(..., "--data", help="Dataset with train and test splits (e.g. shared/datasets/bsdata)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (journal, results.csv/.md, report.html)."),
    seeds: List[int] = typer.Option([0, 1, 2], "--seed", help="Seeds (repeatable)."),
    exdd_image_size: str = typer.Option("256", help="ExDD input: N, the shorter side (HxW is not taken here)."),
    n_synth: Optional[List[int]] = typer.Option(None, help="ExDD: synthetic counts (default 0 50 100 150)."),
    arch: str = typer.Option("fasterrcnn-lite0", help="Supervised detector."),
    det_image_size: str = typer.Option("256", help="Box detector input: N, the shorter side (HxW is not taken here)."),
    epochs: int = typer.Option(12),
    batch_size: int = typer.Option(4),
    lr: float = typer.Option(0.01),
    patience: int = typer.Option(4),
    ratio: Optional[List[float]] = typer.Option(None, help="Synthetic:real defect ratios (default 0.5 1 2)."),
    few_real: Optional[List[int]] = typer.Option(None, help="Few-real regimes (default 10 25 63; 0 = none)."),
    few_real_synth: int = typer.Option(50),
    filter_n: int = typer.Option(50, help="Filtering ablation: synthetic set size."),
    filter_detector: Optional[List[str]] = typer.Option(None, help="Filtering ablation: exdd and/or supervised "
                                                        "(default both)."),
    generator: str = typer.Option("pitting", "--generator", "-g", help="synth2d generator for the synthetic sets."),
    generator_params: Optional[str] = typer.Option(None, "--generator-params",
                                                   help="The generator's parameters as a JSON object, e.g. "
                                                        "'{\"blend\": \"matched\"}'."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", min=1,
                                                  help="Box detectors: optimiser steps per epoch for every "
                                                       "condition (equal steps; default: one pass over the images)."),
    val_split: str = typer.Option("auto", "--val-split", help="auto | group | image: the validation part of TRAIN "
                                  "holds out whole groups (the dataset's group column) where the samples have them."),
    ema: Optional[float] = typer.Option(None, "--ema", help="Box detectors: validate and keep an exponential moving "
                                        "average of the weights with this decay (e.g. 0.999; default: off)."),
    max_test: Optional[int] = typer.Option(None, help="Deterministic TEST subsample for speed (default: all)."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this condition (repeatable), e.g. "
                                             "--only 'real only'."),
    overwrite: bool = typer.Option(False, help="Discard runs of other settings in --out."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Workers (default: 1 local; with --engine ray, the cluster's CPUs)."),
    engine: str = engine_option(),
    ray_address: Optional[str] = address_option(),
    device: str = typer.Option("cpu", "--device", help="Where ExDD and the box detectors run: auto, cpu, cuda[:N] "
                                                       "(not a setting of the run: it resumes on another device)."),
) -> None:
    """Run an experiment over seeds (resumable) and write results.csv/.md and report.html."""
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from defectforge._cliutil import parse_image_size
    from defectforge.experiments.runner import ExperimentSettings, run_experiment

    exdd_image_size = parse_image_size(exdd_image_size, "--exdd-image-size", square_ok=False)
    det_image_size = parse_image_size(det_image_size, "--det-image-size", square_ok=False)

    st = ExperimentSettings(seeds=tuple(seeds), exdd_image_size=exdd_image_size, arch=arch,
                            det_image_size=det_image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                            patience=patience, few_real_synth=few_real_synth, filter_n=filter_n,
                            generator=generator, max_test=max_test, steps_per_epoch=steps_per_epoch,
                            val_split=val_split, ema=ema)
    if generator_params:
        import json

        from defectforge.errors import ConfigError

        try:
            st.generator_params = json.loads(generator_params)
        except ValueError as exc:
            raise ConfigError(f"--generator-params is not valid JSON: {exc}") from None
    if n_synth:
        st.n_synth = tuple(n_synth)
    if ratio:
        st.ratios = tuple(ratio)
    if few_real:
        st.few_real = tuple(k for k in few_real if k > 0)
    if filter_detector:
        st.filter_detectors = tuple(filter_detector)
    if only:
        st.only = tuple(only)
    st.check()
    from defectforge.engine.cli import open_engine

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as prog, \
            open_engine(engine, ray_address, workers) as eng:
        task = prog.add_task(name, total=None)
        res = run_experiment(name, data, out, st, overwrite=overwrite, engine=eng, device=device,
                             progress=lambda c, k, n: prog.update(task, completed=k, total=n, description=c))
    con = Console(highlight=False)
    con.print(Markdown(res["markdown"]))
    con.print(f"results: {out / 'results.md'}, {out / 'results.csv'}, {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    """Add ``defectforge experiment``."""
    app.command("experiment")(experiment_cmd)
