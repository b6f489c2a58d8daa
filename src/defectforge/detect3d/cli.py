"""``defectforge detect3d ...``: fit, predict and evaluate the 3D anomaly detectors.

- ``detect3d fit DATA --model fpfh|pointnet --out MODEL``: one detector per category of
  DATA, fitted on its good training clouds, all stored in one model file.
- ``detect3d predict MODEL CLOUDS... --out DIR``: per cloud ``<stem>.txt`` (``x y z
  score``) and ``<stem>.ply`` (``x y z score``), plus ``scores.csv``.
- ``detect3d eval MODEL DATA --json metrics.json --report DIR``: O/P-AUROC and O/P-AUPR
  per category and their mean on the test split; the report shows each test cloud
  coloured by score beside its ground truth.

User errors print one line ``error: ...`` and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from defectforge._cliutil import console as _console
from defectforge.engine.cli import address_option, engine_option

detect3d_app = typer.Typer(help="3D anomaly detection: FPFH memory bank and a point transformer.",
                           no_args_is_help=True)


def write_score_ply(path: Path, points, scores) -> Path:
    """Binary PLY with ``x y z score`` (float32), written atomically."""
    import numpy as np

    from defectforge._atomic import atomic_write_bytes

    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    rec = np.empty(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("score", "<f4")])
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rec["score"] = np.asarray(scores, dtype=np.float32)
    header = ("ply\nformat binary_little_endian 1.0\ncomment defectforge detect3d point scores\n"
              f"element vertex {len(pts)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property float score\nend_header\n").encode("ascii")
    return atomic_write_bytes(path, header + rec.tobytes())


@detect3d_app.command("fit")
def fit_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="3D dataset folder (Real3D-AD, Anomaly-ShapeNet, MulSen-AD layout or synth3d output)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write."),
    model: str = typer.Option("fpfh", "--model", "-m", help="A registered 3D detector: fpfh (training-free), pointnet (trained), ..."),
    classes: Optional[List[str]] = typer.Option(None, "--class", "-c", help="Only these categories (repeatable)."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="real3d|anomaly-shapenet|mulsen|synth3d."),
    scale: str = typer.Option("category", "--scale", help="category (shared scale, checks units) or cloud (each cloud to the unit ball)."),
    voxel: float = typer.Option(0.02, "--voxel", help="Voxel size in unit-ball space."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (pointnet)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] when a GPU is available (run time only)."),
) -> None:
    """Fit one detector per category on the good training clouds of DATA."""
    import time

    from defectforge.detect3d import DETECTORS3D, get_detector3d, save_models
    from defectforge.detect3d.data import load_dataset3d
    from defectforge.errors import InputError

    DETECTORS3D.get(model)  # an unknown name fails before the data are read
    ds = load_dataset3d(data, format)
    cats = classes or ds.categories
    kwargs = {"scale": scale, "voxel": voxel, "seed": seed, "progress": True, "device": device}
    if steps is not None:
        if model != "pointnet":
            raise InputError(None, "--steps only applies to --model pointnet")
        kwargs["steps"] = steps
    models = {}
    con = _console()
    for c in cats:
        train = ds.filter(category=c, split="train").samples
        if not train:
            raise InputError(data, f"category {c!r} has no training clouds")
        t0 = time.perf_counter()
        models[c] = get_detector3d(model, **kwargs).fit([s.load() for s in train])
        con.print(f"{c}: fitted {model} on {len(train)} clouds in {time.perf_counter() - t0:.1f} s")
    save_models(out, models)
    con.print(f"wrote {out}")


@detect3d_app.command("predict")
def predict_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model file from 'detect3d fit'."),
    clouds: List[Path] = typer.Argument(..., metavar="CLOUDS", help="Point-cloud files (PLY, PCD, TXT/XYZ, NPY, meshes)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    category: Optional[str] = typer.Option(None, "--class", "-c", help="Category detector to use (needed when the file holds several)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Workers (default: 1 local; with --engine ray, the cluster's CPUs)."),
    engine: str = engine_option(),
    ray_address: Optional[str] = address_option(),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] when a GPU is available (run time only)."),
) -> None:
    """Score CLOUDS: per-point scores as TXT and PLY, object scores in scores.csv.

    Each cloud is scored on its own (its score does not depend on the other clouds);
    with ``--engine ray`` the workers read the clouds and write the files."""
    from defectforge.detect3d import load_models3d
    from defectforge.detect3d.score_job import predict_clouds
    from defectforge.engine.cli import open_engine
    from defectforge.errors import InputError
    from defectforge.progress import rich_progress

    models = load_models3d(model_path, device=device)  # one progress bar over the job, not one per cloud
    if category is None:
        if len(models) != 1:
            raise InputError(model_path, f"holds detectors for {', '.join(models)}: choose one with --class")
        category = next(iter(models))
    elif category not in models:
        raise InputError(model_path, f"no detector for class {category!r} (has {', '.join(models)})")
    with rich_progress() as bar, open_engine(engine, ray_address, workers) as eng:
        predict_clouds(model_path, category, clouds, out, models=models, engine=eng, progress=bar,
                       runtime={"device": device})
    _console().print(f"scored {len(clouds)} clouds -> {out}")


@detect3d_app.command("eval")
def eval_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model file from 'detect3d fit'."),
    data: Path = typer.Argument(..., metavar="DATA", help="3D dataset folder; its test split is evaluated."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON here ('-': stdout)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write an HTML report into this folder."),
    format: Optional[str] = typer.Option(None, "--format", "-f"),
    max_renders: int = typer.Option(12, "--max-renders", help="Clouds rendered per category in the report."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Workers (default: 1 local; with --engine ray, the cluster's CPUs)."),
    engine: str = engine_option(),
    ray_address: Optional[str] = address_option(),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] when a GPU is available (run time only)."),
) -> None:
    """O-AUROC, P-AUROC, O-AUPR, P-AUPR per category and their mean."""
    import numpy as np
    from rich.table import Table

    from defectforge._jsonout import console_for, write_json_out
    from defectforge.detect3d import load_models3d
    from defectforge.detect3d.data import load_dataset3d
    from defectforge.detect3d.evaluate import add_eval3d_section, evaluate_detector3d, one_sided_categories
    from defectforge.detect3d.metrics import METRICS_3D, metrics_table

    from defectforge.progress import rich_progress

    models = load_models3d(model_path, device=device)  # one progress bar over the job, not one per cloud
    ds = load_dataset3d(data, format)
    from defectforge.engine.cli import open_engine

    with rich_progress() as bar, open_engine(engine, ray_address, workers) as eng:
        ev = evaluate_detector3d(models, ds, source=model_path, engine=eng, model_path=model_path, progress=bar,
                                 runtime={"device": device})
    one_sided = one_sided_categories(ev.categories, ev.labels)
    table = Table(title="detect3d evaluation")
    table.add_column("class")
    for m in METRICS_3D:
        table.add_column(m, justify="right")
    for r in metrics_table(ev.metrics):
        table.add_row(r["class"], *[f"{r[m]:.4f}" if np.isfinite(r[m]) else "n/a" for m in METRICS_3D])
    console_for(json_out).print(table)
    for c, kind in one_sided.items():
        console_for(json_out).print(
            f"note: {c}: every test cloud is {kind}, so O-AUROC and O-AUPR are undefined (n/a, left out of the "
            "mean): they need both good and defective test clouds"
            + ("; P-AUROC/P-AUPR also need defective points" if kind == "good" else ""))
    if json_out is not None:  # undefined metrics as null (JSON has no NaN)
        write_json_out(json_out, _nan_to_none(ev.metrics))
    if report is not None:
        from defectforge.report import Report

        rep = Report("3D anomaly detection", report)
        add_eval3d_section(rep, ev, max_renders)
        rep.save()
        console_for(json_out).print(f"report: {report / 'report.html'}")


def _nan_to_none(obj):
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def register(app: typer.Typer) -> None:
    """Add the ``detect3d`` sub-app to the main CLI."""
    app.add_typer(detect3d_app, name="detect3d")
