"""``defectforge detect ...``: fit, predict and evaluate PatchCore / ExDD.

- ``detect fit DATA --model exdd|patchcore --out MODEL``: normal images = ``train/good``;
  the train split's defect images (with masks) fill ExDD's defect bank, or serve PatchCore
  as validation positives for the threshold.
- ``detect predict MODEL IMAGES... --out DIR``: ``heatmaps/``, ``masks/``, ``scores.csv``.
- ``detect eval MODEL DATA --json metrics.json --report DIR``: metrics of the test split.

User errors print one line ``error: ...`` and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from defectforge._cliutil import console as _console
from defectforge._cliutil import user_errors as _user_errors

detect_app = typer.Typer(help="Anomaly detection with PatchCore and ExDD (dual memory bank).", no_args_is_help=True)


def _parse_size(text: str | None) -> int | tuple[int, int] | None:
    from defectforge.errors import ConfigError

    if text is None:
        return None
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            return (int(h), int(w))
        return int(text)
    except ValueError:
        raise ConfigError(f"--image-size must be N (shorter side) or HxW, got {text!r}") from None


@detect_app.command("fit")
def fit_cmd(
    data: Path = typer.Argument(..., help="Dataset (MVTec folder, manifest CSV, ...); its train split is used."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write."),
    model: str = typer.Option("exdd", "--model", "-m", help="A registered 2D detector: exdd, patchcore, ..."),
    backbone: str = typer.Option("efficientnet_lite0", "--backbone", help="efficientnet_lite0|efficientnet_lite2|wide_resnet50_2|any timm name."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local backbone checkpoint (needed except for the lite backbones)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Comma-separated layer names (default: the stride-8/16 stages)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="Shorter side N (keeps aspect) or HxW; default 256."),
    normal_ratio: Optional[float] = typer.Option(None, "--normal-ratio", help="Coreset ratio of the normal bank."),
    defect_ratio: Optional[float] = typer.Option(None, "--defect-ratio", help="Coreset ratio of the defect bank (ExDD)."),
    image_score: Optional[str] = typer.Option(None, "--image-score", help="weighted (paper) | max (of the map) | patch_max."),
    random_init: bool = typer.Option(False, "--random-init", help="Random backbone weights (tests only)."),
    seed: int = typer.Option(0, "--seed"),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="Force the dataset format."),
) -> None:
    """Fit a detector on the train split of DATA and save it."""
    with _user_errors():
        import warnings

        from defectforge.data.formats import load_dataset
        from defectforge.detect.base import DETECTORS, get_detector
        from defectforge.errors import InputError

        DETECTORS.get(model)  # an unknown name fails before the data are read
        ds = load_dataset(data, format=format)
        train = ds.filter(split="train")
        normal = list(train.filter(defect=False))
        defects = list(train.filter(defect=True))
        if not normal:
            raise InputError(data, "no good images in the train split")
        kw: dict = {"backbone": backbone, "random_init": random_init, "seed": seed}
        if weights is not None:
            kw["weights"] = str(weights.resolve())
        if layers:
            kw["layers"] = tuple(x.strip() for x in layers.split(",") if x.strip())
        for k, v in (("image_size", _parse_size(image_size)), ("normal_ratio", normal_ratio),
                     ("defect_ratio", defect_ratio), ("image_score", image_score)):
            if v is not None:
                kw[k] = v
        det = get_detector(model, progress=True, **kw)
        con = _console()
        con.print(f"fitting {model} on {len(normal)} good + {len(defects)} defect train images of {data}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            det.fit(normal, defects or None)
        for w in caught:
            con.print(f"[yellow]warning:[/] {w.message}")
        det.save(out)
        info = det.fit_info_
        con.print(f"saved {out}: input {info['input_size'][0]}x{info['input_size'][1]}, normal bank "
                  f"{info['bank_normal']} rows, defect bank {info['bank_defect']} rows, threshold {det.threshold_}")


def _collect_images(paths: List[Path]) -> list[Path]:
    from defectforge.data._files import list_images
    from defectforge.data.image_io import is_image_file
    from defectforge.errors import InputError

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise InputError(p, "folder holds no images")
            out.extend(found)
        elif p.is_file():
            if not is_image_file(p):
                raise InputError(p, "not an image file (by its suffix)")
            out.append(p)
        else:
            raise InputError(p, "file not found")
    return out


@detect_app.command("predict")
def predict_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model file from 'detect fit'."),
    images: List[Path] = typer.Argument(..., help="Image files or folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (heatmaps/, masks/, scores.csv)."),
) -> None:
    """Score images: heatmap overlays, predicted masks and a scores CSV."""
    with _user_errors():
        import csv
        import io

        from defectforge._atomic import atomic_write_text
        from defectforge.data._files import unique_name
        from defectforge.data.image_io import read_image, write_image, write_mask
        from defectforge.data.sample import Sample
        from defectforge.detect.base import load_detector
        from defectforge.report.visual import heatmap_overlay

        files = _collect_images(images)
        det = load_detector(model_path, progress=True)
        used: set[str] = set()
        thr = "" if det.threshold_ is None else f"{det.threshold_:.6g}"
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["file", "score", "anomalous", "threshold", "heatmap", "mask"])
        for s in range(0, len(files), 16):
            part = [Sample(path=f) for f in files[s:s + 16]]
            pred = det.predict(part)
            for smp, score, lab, amap, mask in zip(part, pred.pred_score, pred.pred_label, pred.anomaly_map,
                                                   pred.pred_mask):
                name = unique_name(smp.path.stem, ".png", used)
                used.add(name.lower())
                hm = f"heatmaps/{name}.png"
                mk = f"masks/{name}.png"
                write_image(out / hm, heatmap_overlay(read_image(smp.path), amap))
                write_mask(out / mk, mask)
                wr.writerow([str(smp.path), f"{float(score):.6g}", int(bool(lab)), thr, hm, mk])
        atomic_write_text(out / "scores.csv", buf.getvalue())
        _console().print(f"scored {len(files)} images -> {out}/scores.csv")


@detect_app.command("eval")
def eval_cmd(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Model file from 'detect fit'."),
    data: Path = typer.Argument(..., help="Dataset with a labelled test split."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Metrics JSON to write."),
    report: Optional[Path] = typer.Option(None, "--report", help="Folder for report.html."),
    split: str = typer.Option("test", "--split", help="Split to evaluate (never the one fitted on)."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="Force the dataset format."),
) -> None:
    """Evaluate a model on the test split: metrics JSON and an HTML report."""
    with _user_errors():
        from defectforge._atomic import atomic_write_json
        from defectforge.data.formats import load_dataset
        from defectforge.detect.base import load_detector
        from defectforge.detect.evaluate import add_eval_section, evaluate_detector, metrics_json
        from defectforge.report import Report

        det = load_detector(model_path, progress=True)
        ds = load_dataset(data, format=format)
        res = evaluate_detector(det, ds, split=split)
        out = metrics_json(res, {"model": str(model_path), "detector": det.name, "data": str(data), "split": split})
        if json_out is not None:
            atomic_write_json(json_out, out)
        if report is not None:
            rep = Report(f"defectforge detect eval: {det.name}", report, subtitle=f"{model_path} on {data} ({split})")
            add_eval_section(rep, det.name, res)
            rep.save()
        con = _console()
        con.print("  ".join(f"{k} {out[k]:.4f}" if isinstance(out[k], float) else f"{k} {out[k]}"
                            for k in ("image_auroc", "pixel_auroc", "aupro", "n_images")))


def register(app: typer.Typer) -> None:
    app.add_typer(detect_app, name="detect")
