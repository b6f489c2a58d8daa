"""``defectforge detect ...``: fit, predict and evaluate PatchCore / ExDD.

- ``detect fit DATA --model exdd|patchcore --out MODEL [--synthetic DIR ...] [--no-real-defects]``:
  normal images = ``train/good``; the train split's defect images (with masks) and those of
  each ``--synthetic`` set fill ExDD's defect bank, or serve PatchCore as validation
  positives for the threshold.
- ``detect predict MODEL IMAGES... --out DIR``: ``heatmaps/``, ``masks/``, ``scores.csv``,
  written chunk by chunk and resumed when rerun.
- ``--device cuda`` runs the backbone and the nearest-neighbour search on a GPU.
- ``detect eval MODEL DATA --json metrics.json --report DIR``: metrics of the test split.

User errors print one line ``error: ...`` and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from defectforge._cliutil import IMAGE_SIZE_HELP, parse_image_size
from defectforge._cliutil import console as _console
from defectforge.engine.cli import address_option, engine_option

detect_app = typer.Typer(help="Anomaly detection with PatchCore and ExDD (dual memory bank).", no_args_is_help=True)


def _run_nn_backend_option():
    """``--nn-backend`` of predict / eval (one declaration for both)."""
    return typer.Option(None, "--nn-backend", help="Nearest-neighbour search for this run instead of the model's "
                                                   "(auto | faiss | pruned | screened | ivf[:N], approximate: "
                                                   "docs/detectors.md).")


@detect_app.command("fit")
def fit_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="Dataset (MVTec folder, manifest CSV, ...); its train split is used."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write."),
    model: str = typer.Option("exdd", "--model", "-m", help="A registered 2D detector: exdd, patchcore, ..."),
    backbone: str = typer.Option("efficientnet_lite0", "--backbone", help="efficientnet_lite0|efficientnet_lite2|wide_resnet50_2|any timm name."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local backbone checkpoint (needed except for the lite backbones)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Comma-separated layer names (default: the stride-8/16 stages)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help=IMAGE_SIZE_HELP + "; default 256."),
    normal_ratio: Optional[float] = typer.Option(None, "--normal-ratio", help="Coreset ratio of the normal bank."),
    defect_ratio: Optional[float] = typer.Option(None, "--defect-ratio", help="Coreset ratio of the defect bank (ExDD)."),
    image_score: Optional[str] = typer.Option(None, "--image-score", help="auto (default for exdd: the best on a validation split carved from train) | weighted (paper) | max (of the map) | patch_max | topk (top-1 % mean of the ratio map) | fusion (nearest-normal score + ratio map, calibrated on validation)."),
    defect_val: Optional[str] = typer.Option(
        None, "--defect-val", help="How real defect images validate the image score (exdd): crossfit (default: "
                                   "5 folds, each scored by a defect bank built without it; all stay in the bank) | "
                                   "holdout (20 % kept out of the bank)."),
    defect_val_split: Optional[str] = typer.Option(
        None, "--defect-val-split", help="How those real defect images are cut (exdd): auto (default: whole groups, "
                                         "the manifest's group column, where every one has a group) | group | image."),
    coreset_max: Optional[int] = typer.Option(
        None, "--coreset-max", min=0, help="Most rows a bank keeps (default: exdd 16384, patchcore 163840, both "
                                           "reached at ~650 images of the default size; past it fit time grows "
                                           "linearly and predict time per image stays flat); 0: no cap."),
    coreset_chunk: Optional[int] = typer.Option(
        None, "--coreset-chunk", min=0, help="Opt-in, approximate: choose the normal bank's coreset per chunk of N "
                                             "images (linear time and memory for large sets; default 0: one exact "
                                             "choice over all images). Effect on the metrics: "
                                             "docs/bench/scale_chunked.md."),
    random_init: bool = typer.Option(False, "--random-init", help="Random backbone weights (tests only)."),
    seed: int = typer.Option(0, "--seed"),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="Force the dataset format."),
    synthetic: Optional[List[Path]] = typer.Option(
        None, "--synthetic", help="Synthetic set (any readable dataset, e.g. a 'synth' output) whose defects go into "
                                  "ExDD's defect bank (PatchCore: its validation positives); repeatable."),
    synthetic_filter: Optional[str] = typer.Option(
        None, "--synthetic-filter", help="exdd: keep a synthetic defect-bank row only when it is farther from the "
                                         "normal bank than this quantile of the validation good patches (default "
                                         "0.99: normal-looking rows are dropped); 'none' keeps every row."),
    real_defects: bool = typer.Option(True, "--real-defects/--no-real-defects",
                                      help="Also use the train split's real defect images."),
    nn_backend: Optional[str] = typer.Option(
        None, "--nn-backend", help="Nearest-neighbour search, stored in the model: auto (default, exact) | faiss | "
                                   "pruned | screened | ivf[:N] (approximate, faster: each patch searches only the "
                                   "N (8) nearest bank clusters; its metric cost is in docs/detectors.md)."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] when a GPU is available."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Feature-extraction workers (default: 1 local; with --engine ray, "
                                               "the cluster's CPUs)."),
    engine: str = engine_option(),
    ray_address: Optional[str] = address_option(),
) -> None:
    """Fit a detector on the train split of DATA and save it.

    With ``--engine ray`` (or ``--workers``) the backbone features are computed by the
    workers (the images read there by path); the coreset is chosen here, on the rows in
    input order, so the model is the same on every engine.

    The model file records which defect sets went in (``fit_info_["defect_sets"]``)."""
    import warnings

    from defectforge.data.formats import load_dataset
    from defectforge.detect.base import DETECTORS, get_detector
    from defectforge.errors import InputError

    DETECTORS.get(model)  # an unknown name fails before the data are read
    if nn_backend is not None:
        from defectforge.bank.knn import check_backend

        check_backend(nn_backend)
    ds = load_dataset(data, format=format)
    train = ds.filter(split="train")
    normal = list(train.filter(defect=False))
    defects = list(train.filter(defect=True))
    if not normal:
        raise InputError(data, "no good images in the train split")
    from defectforge.filter.run import check_synthetic

    def_sets: dict = {}
    if real_defects and defects:
        def_sets[f"real:{data}"] = defects
    for sp in synthetic or []:
        sds = load_dataset(sp)
        syn = check_synthetic(list(sds), sorted({s.label for s in sds if s.is_defect}), sp)
        def_sets[f"synthetic:{sp}"] = syn
    kw: dict = {"backbone": backbone, "random_init": random_init, "seed": seed, "device": device}
    if weights is not None:
        kw["weights"] = str(weights.resolve())
    if layers:
        kw["layers"] = tuple(x.strip() for x in layers.split(",") if x.strip())
    for k, v in (("image_size", parse_image_size(image_size)), ("normal_ratio", normal_ratio),
                 ("defect_ratio", defect_ratio), ("image_score", image_score), ("defect_val", defect_val),
                 ("defect_val_split", defect_val_split), ("nn_backend", nn_backend),
                 ("coreset_max", coreset_max), ("coreset_chunk", coreset_chunk)):
        if v is not None:
            kw[k] = v
    if synthetic_filter is not None:
        kw["synthetic_filter"] = _quantile_or_none(synthetic_filter, "--synthetic-filter")
    det = get_detector(model, progress=True, **kw)
    con = _console()
    n_def = sum(len(v) for v in def_sets.values())
    con.print(f"fitting {model} on {len(normal)} good train images of {data} + {n_def} defect images "
              f"from {len(def_sets)} set(s)")
    from defectforge.detect.fit_job import fit_on
    from defectforge.engine.cli import open_engine

    with warnings.catch_warnings(record=True) as caught, open_engine(engine, ray_address, workers) as eng:
        warnings.simplefilter("always")
        fit_on(det, eng, normal, def_sets or None)
    for w in caught:
        con.print(f"[yellow]warning:[/] {w.message}")
    det.save(out)
    info = det.fit_info_
    for st in info.get("defect_sets", []):
        val = f", {st['validation']} validating" if st.get("validation") else ""
        dropped = (f"; {st['rows_dropped']} normal-looking rows dropped (--synthetic-filter)"
                   if st.get("rows_dropped") else "")
        con.print(f"  defect set {st['name']}: {st['images']} images, {st['in_bank']} in the bank "
                  f"({st['use']}{val}{dropped})")
    if (info.get("coreset") or {}).get("capped"):
        from defectforge.bank.coreset import coreset_size

        con.print(f"  normal coreset: capped at {info['coreset']['max']} rows (--coreset-max; ratio alone: "
                  f"{coreset_size(info['n_rows_normal'], det.normal_ratio, det.coreset_min)})")
    if (info.get("coreset") or {}).get("mode") == "chunked":
        con.print(f"  normal coreset: approximate, chosen in {info['coreset']['chunks']} chunks of about "
                  f"{info['coreset']['chunk_images']} images")
    con.print(f"saved {out}: input {info['input_size'][0]}x{info['input_size'][1]}, normal bank "
              f"{info['bank_normal']} rows, defect bank {info['bank_defect']} rows, threshold {det.threshold_}")
    sc = info.get("image_score")
    if sc:
        aucs = ", ".join(f"{k} {v:.3f}" for k, v in sc["val_auroc"].items() if v is not None)
        con.print(f"  image score: {sc['chosen']}" + (f" (validation AUROC: {aucs})" if aucs else "")
                  + (f"; {sc['reason']}" if sc.get("reason") else ""))


def _quantile_or_none(text: str, option: str) -> float | None:
    """``none`` / ``off`` -> None, else a quantile in [0, 1) (a one-line error otherwise)."""
    from defectforge.errors import ConfigError

    if text.strip().lower() in ("none", "off"):
        return None
    try:
        q = float(text)
    except ValueError:
        q = -1.0
    if not 0.0 <= q < 1.0:
        raise ConfigError(f"{option} must be a quantile in [0, 1) or 'none', got {text!r}")
    return q


def _collect_images(paths: List[Path]) -> list[Path]:
    """Image files of the given files, folders and glob patterns (the same rules as the API)."""
    from defectforge.data.inputs import as_items

    return [s.path for s in as_items(list(paths))]


@detect_app.command("predict")
def predict_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model file from 'detect fit'."),
    images: List[Path] = typer.Argument(..., metavar="IMAGES", help="Image files, folders or quoted glob patterns ('parts/*.jpg')."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (heatmaps/, masks/, scores.csv)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Image score threshold for 'anomalous' (default: the model's, chosen on validation)."),
    pixel_threshold: Optional[float] = typer.Option(None, "--pixel-threshold", help="Map threshold for masks/ (default: the model's)."),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] when a GPU is available."),
    chunk: int = typer.Option(16, "--chunk", help="Images scored (and written) per step.", min=1),
    heatmaps: str = typer.Option("png", "--heatmaps", help="Heatmap panels: png (lossless), jpg (faster, smaller) or none (masks and scores only)."),
    nn_backend: Optional[str] = _run_nn_backend_option(),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Workers (default: 1 local; with --engine ray, the cluster's CPUs)."),
    engine: str = engine_option(),
    ray_address: Optional[str] = address_option(),
) -> None:
    """Score images: heatmap panels (image | map | predicted mask | colour bar, one colour
    scale for the whole run with the pixel threshold at its middle), predicted masks and
    a scores CSV.

    Results are written as they come (``scores.csv`` grows chunk by chunk, flushed to disk);
    rerun the same command after an interruption and the images already scored are skipped."""
    from defectforge.detect.base import load_detector
    from defectforge.detect.predict_job import check_heatmaps, predict_files
    from defectforge.engine.cli import open_engine
    from defectforge.progress import rich_progress

    check_heatmaps(heatmaps)
    files = _collect_images(images)
    det = load_detector(model_path, progress=False, device=device)  # checks the model file before any output
    _set_nn_backend(det, nn_backend)
    with rich_progress() as bar, open_engine(engine, ray_address, workers) as eng:
        predict_files(model_path, files, out, engine=eng, model=det, threshold=threshold,
                      pixel_threshold=pixel_threshold, chunk=chunk, device=device, heatmaps=heatmaps,
                      progress=bar,
                      on_resume=lambda d, t: _console().print(f"resuming: {d} of {t} images already scored in {out}"))
    _console().print(f"scored {len(files)} images -> {out}/scores.csv")


@detect_app.command("eval")
def eval_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model file from 'detect fit'."),
    data: Path = typer.Argument(..., metavar="DATA", help="Dataset with a labelled test split."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Metrics JSON to write ('-': stdout)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Folder for report.html."),
    split: str = typer.Option("test", "--split", help="Split to evaluate (never the one fitted on: images the model "
                              "was fitted on are refused, see --allow-train-split)."),
    allow_train_split: bool = typer.Option(False, "--allow-train-split",
                                           help="Evaluate even images the model was fitted on (a sanity check of "
                                                "the fit; such metrics are optimistic, near 1.0, not a measure of "
                                                "new parts). Warned about and recorded in the JSON."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="Force the dataset format."),
    image_only: bool = typer.Option(False, "--image-only", help="Image metrics only (for data without masks)."),
    pixel_path: str = typer.Option("auto", "--pixel-path", help="Pixel metrics: exact (all maps in memory), binned (bounded memory, stated max error) or auto (exact up to 100 M pixels)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Image score threshold for the confusion counts (default: the model's, chosen on validation)."),
    pixel_threshold: Optional[float] = typer.Option(None, "--pixel-threshold", help="Map threshold for the pixel counts and masks (default: the model's)."),
    nn_backend: Optional[str] = _run_nn_backend_option(),
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] when a GPU is available."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1,
                                          help="Workers (default: 1 local; with --engine ray, the cluster's CPUs)."),
    engine: str = engine_option(),
    ray_address: Optional[str] = address_option(),
    compare: Optional[List[Path]] = typer.Option(None, "--compare", help="Other model file(s) to evaluate on the same images: overlaid curves and bootstrap intervals in the report and JSON."),
) -> None:
    """Evaluate a model on the test split: metrics JSON and an HTML report.

    A split holding images the model was fitted on (its model file records them) is refused:
    a memory bank scores its own images as normal, so AUROC would be near 1.0 and mean
    nothing. ``--allow-train-split`` evaluates them anyway, with a warning."""
    from defectforge._jsonout import console_for, write_json_out
    from defectforge.data.formats import load_dataset
    from defectforge.detect.base import load_detector
    from defectforge.detect.evaluate import add_eval_section, evaluate_detector, metrics_json
    from defectforge.report import Report

    from defectforge.engine.cli import open_engine
    from defectforge.progress import rich_progress

    det = load_detector(model_path, device=device)
    _set_nn_backend(det, nn_backend)
    given = _override_thresholds(det, threshold, pixel_threshold)
    if nn_backend is not None:
        given["nn_backend"] = nn_backend
    ds = load_dataset(data, format=format)
    compared = [(other, load_detector(other, device=device)) for other in compare or []]  # loaded once
    fitted = {}
    for path, d in [(model_path, det), *compared]:  # before any scoring: refused or warned about
        n = _check_fitted_on(path, d, ds, data, split, allow_train_split, console_for(json_out))
        if n:
            fitted[str(path)] = n
    if fitted:
        given["fitted_images_evaluated"] = fitted
    with rich_progress() as bar, open_engine(engine, ray_address, workers) as eng:
        res = evaluate_detector(det, ds, split=split, pixel_metrics=not image_only, engine=eng,
                                model_path=str(model_path), progress=bar, pixel_path=pixel_path)
    out = metrics_json(res, {"model": str(model_path), "detector": det.name, "data": str(data), "split": split,
                             **given})
    others = {}
    for other, o in compared:  # the same data, split and evaluation for every compared model
        others[other.name] = evaluate_detector(o, ds, split=split, pixel_metrics=not image_only, pixel_path=pixel_path)
    if others:
        from defectforge.report.compare import add_comparison_section, comparison_rows

        results = {model_path.name: res, **others}
        out["comparison"] = comparison_rows(results)
    if json_out is not None:
        write_json_out(json_out, out)
    if report is not None:
        rep = Report(f"defectforge detect eval: {det.name}", report, subtitle=f"{model_path} on {data} ({split})")
        if others:
            add_comparison_section(rep, results)
        add_eval_section(rep, det.name, res)
        rep.save()
    con = console_for(json_out)
    con.print("  ".join(f"{k} {out[k]:.4f}" if isinstance(out[k], float) else f"{k} {out[k]}"
                        for k in ("image_auroc", "pixel_auroc", "aupro", "n_images")))


def _check_fitted_on(model_path: Path, det, ds, data: Path, split: str, allow: bool, con) -> int:
    """How many images of ``split`` the model was fitted on; refused (one-line error) unless
    ``allow``, then warned about. A model file that does not record it (older files) gets a
    warning when the split is ``train``."""
    from defectforge.detect.fitted import fitted_overlap
    from defectforge.errors import InputError

    samples = [s for s in ds if s.split == split]
    found = fitted_overlap(getattr(det, "fit_info_", None) or {}, samples, data, split)
    if found is None:
        if split == "train":
            con.print(f"[yellow]warning:[/] {model_path} does not record which images it was fitted on; 'detect fit' "
                      f"fits on the train split, and metrics of images it was fitted on are meaningless (near 1.0)")
        return 0
    n, first = found
    if not n:
        return 0
    what = (f"{n} of the {len(samples)} images of split {split!r} (e.g. {getattr(first, 'path', None) or first.name}) "
            f"are images {model_path} was fitted on")
    if not allow:
        raise InputError(data, f"{what}: a memory bank scores its own images as normal, so the metrics would mean "
                               "nothing; evaluate a held-out split (--split test), or pass --allow-train-split")
    con.print(f"[yellow]warning:[/] {what}; their metrics are optimistic (--allow-train-split)")
    return n


def _set_nn_backend(det, nn_backend: str | None) -> None:
    """``--nn-backend`` of predict / eval: this run's search instead of the model file's."""
    if nn_backend is None:
        return
    from defectforge.bank.knn import check_backend
    from defectforge.errors import ConfigError

    check_backend(nn_backend)
    if "nn_backend" not in det.get_params():
        raise ConfigError(f"--nn-backend: a {det.name} model has no nearest-neighbour search")
    det.set_params(nn_backend=nn_backend)


def _override_thresholds(det, threshold: float | None, pixel_threshold: float | None) -> dict:
    """Set user-given thresholds on a loaded model; the JSON keys that say so."""
    out = {}
    if threshold is not None:
        det.threshold_ = float(threshold)
        out["threshold_source"] = "--threshold"
    if pixel_threshold is not None:
        det.pixel_threshold_ = float(pixel_threshold)
        out["pixel_threshold_source"] = "--pixel-threshold"
    return out


def register(app: typer.Typer) -> None:
    app.add_typer(detect_app, name="detect")
