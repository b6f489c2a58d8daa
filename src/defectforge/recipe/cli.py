"""``defectforge recipe search DATA --detector exdd|fcos-lite0|fasterrcnn-lite0 --trials N --out DIR``.

Searches generator mixes, parameter ranges and counts (Optuna TPE, seeded, with pruning;
the study is ``DIR/study.db``, so rerunning the command resumes it, and a larger
``--trials`` extends it) scored on a validation split carved from TRAIN. Writes
``best_recipe.yaml`` (run it with ``defectforge synth --config``), ``report.html``,
``commands.sh`` and ``search.json``. The real-only baseline is always a candidate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from defectforge._cliutil import console as _console

recipe_app = typer.Typer(help="Recipes of synthetic defects: search the mix that helps a detector on validation.",
                         no_args_is_help=True)


def _floats(text: str, name: str) -> tuple[float, float]:
    from defectforge.errors import ConfigError

    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be LO,HI (two numbers), got {text!r}") from None
    return lo, hi


@recipe_app.command("search")
def search_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="Dataset (any format load_dataset reads); only its train split is read."),
    out: Path = typer.Option(..., "--out", "-o", help="Search folder (study.db, best_recipe.yaml, report.html); "
                                                      "rerun to resume."),
    detector: str = typer.Option("exdd", "--detector", help="exdd, or a box architecture (fcos-lite0, "
                                                                  "fasterrcnn-lite0, retinanet-lite0)."),
    trials: int = typer.Option(20, "--trials", help="Total trials in the study (a rerun runs the missing ones)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler, the splits, synthesis and the detector."),
    generators: str = typer.Option("fitted,transplant,pitting", "--generators", help="Candidate generators (comma-separated)."),
    ratio_range: str = typer.Option("0.25,4", "--ratio-range", help="Synthetic per real guide defect: LO,HI."),
    defect_type: Optional[str] = typer.Option(None, "--defect-type", help="Defect type to search for (needed when "
                                                                          "the train split has several)."),
    val_defects: float = typer.Option(0.5, "--val-defects", help="Share of real train defects kept for validation."),
    val_good: float = typer.Option(0.2, "--val-good", help="Share of good train images kept for validation."),
    val_split: str = typer.Option("auto", "--val-split", help="auto | group | image: hold out whole groups (the "
                                  "dataset's group column, e.g. one photographed spot) where the samples have them."),
    max_good: Optional[int] = typer.Option(None, "--max-good", help="Speed: use at most N good images to fit (stated)."),
    max_val_good: Optional[int] = typer.Option(None, "--max-val-good", help="Speed: at most N good validation images (stated)."),
    min_gain: float = typer.Option(0.01, "--min-gain", help="A recipe must beat the real-only baseline by this much."),
    folds: int = typer.Option(1, "--folds", help="Score each candidate on K guide/validation splits (mean; K x cost)."),
    image_size: str = typer.Option("256", "--image-size", help="Detector input size during the search: N, the "
                                                               "shorter side (HxW is not taken here)."),
    normal_ratio: float = typer.Option(0.01, "--normal-ratio", help="ExDD: coreset ratio of the normal bank."),
    epochs: int = typer.Option(8, "--epochs", help="Box detectors: epochs per trial."),
    batch_size: int = typer.Option(4, "--batch-size", help="Box detectors: batch size."),
    patience: int = typer.Option(3, "--patience", help="Box detectors: early-stopping patience (epochs)."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", min=1,
                                                  help="Box detectors: optimiser steps per epoch for every candidate "
                                                       "(default: the real-only baseline's one pass: equal steps)."),
    ema: Optional[float] = typer.Option(None, "--ema", help="Box detectors: validate, pick the best epoch with and "
                                                            "keep an exponential moving average of the weights "
                                                            "(decay, e.g. 0.999; default: off)."),
    realism: bool = typer.Option(True, "--realism/--no-realism", help="Measure the best recipe's C2ST AUC against "
                                                                  "the validation defects (report, search.json)."),
    max_c2st: Optional[float] = typer.Option(None, "--max-c2st", help="Realism limit: recipes whose C2ST AUC vs the "
                                                                      "validation defects exceeds it are pruned."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a search with other settings in --out."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] when a GPU is available (run time only: "
                                                       "a search resumes on another device)."),
) -> None:
    """Search the synthetic-defect recipe that helps DETECTOR most on validation data."""
    from defectforge._cliutil import parse_image_size
    from defectforge.recipe.search import SearchSettings, search_recipes

    image_size = parse_image_size(image_size, square_ok=False)
    st = SearchSettings(detector=detector, trials=trials, seed=seed,
                        generators=tuple(g.strip() for g in generators.split(",") if g.strip()),
                        ratio_range=_floats(ratio_range, "--ratio-range"), defect_type=defect_type,
                        val_defects=val_defects, val_good=val_good, val_split=val_split, max_good=max_good, max_val_good=max_val_good,
                        min_gain=min_gain, folds=folds, image_size=image_size, normal_ratio=normal_ratio, epochs=epochs,
                        batch_size=batch_size, patience=patience, steps_per_epoch=steps_per_epoch, device=device,
                        realism=realism, max_c2st=max_c2st, detector_params={} if ema is None else {"ema": ema})
    con = _console()
    summary = search_recipes(data, out, st, overwrite=overwrite, log=lambda m: con.print(m, highlight=False))
    if st.reductions():
        con.print(f"search-time reductions: {st.reductions()}", highlight=False)
    con.print(("[green]" if summary["recommend_synthetic"] else "[yellow]") + summary["verdict"] + "[/]")
    con.print(f"realism of the best recipe: {summary['realism_line']}", highlight=False)
    con.print(f"report: {out / 'report.html'}  commands: {out / 'commands.sh'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe")
