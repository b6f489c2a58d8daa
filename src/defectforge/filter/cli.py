"""``defectforge filter ...``: score and select synthetic samples; set-level quality."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from defectforge.engine.cli import address_option, engine_option, open_engine
from defectforge.errors import ConfigError

filter_app = typer.Typer(help="Filter synthetic defects (realism, fidelity, diversity) and measure set quality.",
                         no_args_is_help=True)


def _quotas(items: list[str] | None) -> dict[str, int] | None:
    if not items:
        return None
    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"quota {it!r}: write TYPE=N, e.g. pitting=50")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = int(v)
        except ValueError:
            raise ConfigError(f"quota {it!r}: {v!r} is not an integer") from None
    return out


@filter_app.command("select")
def select_cmd(
    synthetic: Path = typer.Argument(..., metavar="SYNTHETIC", help="Synthetic set (manifest/MVTec/YOLO/COCO/labelme)."),
    real: Path = typer.Option(..., "--real", help="Real set; its train-split defects are the reference."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (scores.csv, kept/, report.html)."),
    rule: Optional[List[str]] = typer.Option(None, "--keep", help="Rule COLUMN OP VALUE, VALUE a number or pNN "
                                             "(percentile within the batch), e.g. 'realism_distance<=p80'."),
    rank_by: str = typer.Option("realism_distance", help="Column to rank by (best first)."),
    top_k: Optional[int] = typer.Option(None, help="Keep at most this many."),
    quota: Optional[List[str]] = typer.Option(None, help="Per-type quota TYPE=N (repeatable)."),
    min_diversity: Optional[float] = typer.Option(None, help="Skip samples closer than this to a kept one."),
    clip_dir: Optional[Path] = typer.Option(None, help="Local transformers CLIP dir -> clipscore column (w=2.5)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Prompt for CLIPScore."),
    dreamsim_dir: Optional[Path] = typer.Option(None, help="Local DreamSim cache dir -> dreamsim_distance column."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Scoring workers (default: 1 local; with --engine ray, the "
                                               "cluster's CPUs)."),
    engine: str = engine_option(),
    ray_address: Optional[str] = address_option(),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] when a GPU is available: where the "
                               "embedding models run."),
) -> None:
    """Score synthetic samples against real defects and keep the ones the policy selects."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from defectforge.filter.embed import default_embedder
    from defectforge.filter.run import filter_dataset
    from defectforge.filter.select import SelectionPolicy

    policy = SelectionPolicy(rules=list(rule or []), rank_by=rank_by, top_k=top_k, quotas=_quotas(quota),
                             min_diversity=min_diversity)
    clip = dreamsim = None
    if clip_dir is not None:
        from defectforge.filter.embed import load_clip

        clip = load_clip(clip_dir, device=device)
    if dreamsim_dir is not None:
        from defectforge.filter.embed import load_dreamsim

        dreamsim = load_dreamsim(dreamsim_dir, device=device)
    with Progress(TextColumn("scoring"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), transient=True) as prog:
        task = prog.add_task("score", total=None)
        with open_engine(engine, ray_address, workers) as eng:
            res = filter_dataset(synthetic, real, out, policy, embedder=default_embedder(device=device), clip=clip,
                                 prompt=prompt, dreamsim=dreamsim, overwrite=overwrite, engine=eng,
                                 progress=lambda stage, done, total: prog.update(task, completed=done, total=total))
    Console(highlight=False).print(f"kept {res['n_kept']} / {res['n_scored']} -> {out}/kept "
                                   f"(scores.csv, report.html)")


@filter_app.command("quality")
def quality_cmd(
    real: Path = typer.Argument(..., metavar="REAL", help="Real set (its train-split defects are used)."),
    synthetic: Path = typer.Argument(..., metavar="SYNTHETIC", help="Synthetic set."),
    k: int = typer.Option(5, help="k for precision/recall/density/coverage."),
    subsets: int = typer.Option(100, help="KID subsets."),
    seed: int = typer.Option(0),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers here ('-': stdout)."),
    inception_weights: Optional[Path] = typer.Option(
        None, "--inception-weights", help="Local torchvision Inception-v3 state dict (.pth): adds fid and "
        "kid_inception on its 2048-d pool features. Never downloaded; torchvision's weights are not the "
        "TF-FID ones, so values compare across our runs, not with published FID."),
    c2st: bool = typer.Option(True, "--c2st/--no-c2st", help="Also run the classifier two-sample test (real vs "
                              "synthetic crops; AUC 0.5 = indistinguishable), per generator and with the "
                              "real-vs-real floor."),
    folds: int = typer.Option(5, "--folds", help="C2ST cross-validation folds (grouped by scene: the "
                              "dataset's group column, else by image)."),
    c2st_crop: str = typer.Option("defect", "--c2st-crop", help="C2ST crops: 'defect' (2 x each defect's box, "
                                  "centred on it) or 'window' (one fixed window from the real boxes; mostly "
                                  "host surface around small defects)."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] when a GPU is available: where the "
                               "embedding models run."),
) -> None:
    """KID and precision/recall/density/coverage between real and synthetic defect crops
    (bundled EfficientNet-Lite0 features; not comparable to Inception-based values); with
    --inception-weights also FID and KID on Inception features; the C2ST realism AUC with a
    95 % bootstrap interval (over images), its real-vs-real floor and the host-only test beside
    it (docs/filtering.md)."""
    from defectforge.data import load_dataset
    from defectforge.filter.quality import set_quality
    from defectforge.filter.run import check_sets

    from defectforge.filter.c2st import CROPS

    if c2st and c2st_crop not in CROPS:
        raise ConfigError(f"--c2st-crop must be one of {', '.join(CROPS)}, got {c2st_crop!r}")
    real_ds = load_dataset(real)
    syn, reals = check_sets(load_dataset(synthetic), real_ds)
    inception = None
    if inception_weights is not None:
        from defectforge.filter.inception import inception_embedder

        inception = inception_embedder(inception_weights, device=device)
    from defectforge.filter.embed import default_embedder

    q = set_quality(reals, syn, default_embedder(device=device), k=k, kid_subsets=subsets, seed=seed,
                    inception=inception)
    if c2st:
        from defectforge.filter.c2st import realism_c2st, source_groups, summary_lines

        # a synthetic crop takes the scene (group) of its host when the host is one of REAL's images
        q.update(summary_lines(realism_c2st(reals, syn, folds=folds, seed=seed, device=device, crop=c2st_crop,
                                            host_groups=source_groups(list(real_ds)))))
    from defectforge._jsonout import console_for, write_json_out

    con = console_for(json_out)
    for key, v in q.items():
        con.print(f"{key:>14}: {v:.5g}" if isinstance(v, float) else f"{key:>14}: {v}")
    if json_out is not None:
        write_json_out(json_out, q)


def register(app: typer.Typer) -> None:
    """Add ``defectforge filter select|quality``."""
    app.add_typer(filter_app, name="filter")
